//! When a touch is due: offsets (`48h`) or day-and-time specs (`1 business day before at
//! 10:00`) computed in the patient's local time, then moved out of quiet hours. Daylight-saving
//! gaps move forward to the first valid instant; ambiguous times take the earlier one.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

use crate::config::Touch;

/// Longest lead time of a touch (`before`, or calendar days of `at`).
pub const MAX_BEFORE_DAYS: u32 = 365;
/// Most business days of an `at` spec.
pub const MAX_BUSINESS_DAYS: u32 = 60;

/// Why a touch's time cannot be used. Carries no input text: the field pointer says where.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("give `before` (\"48h\") or `at` (\"1 business day before at 10:00\")")]
    Missing,
    #[error("give `before` or `at`, not both")]
    Both,
    #[error("cannot read it; expected {expected}")]
    Unreadable {
        field: &'static str,
        expected: &'static str,
    },
    #[error("out of range: {limit}")]
    OutOfRange {
        field: &'static str,
        limit: &'static str,
    },
}

impl ScheduleError {
    /// The touch field the error is about (`before` or `at`), if one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            Self::Both => Some("at"),
            Self::Unreadable { field, .. } | Self::OutOfRange { field, .. } => Some(field),
        }
    }
}

/// A parsed touch time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before(Duration),
    DaysBefore {
        days: u32,
        business: bool,
        at: NaiveTime,
    },
}

const BEFORE_FORMAT: &str = "a number and a unit: `7d`, `48h`, `90m`";
const AT_FORMAT: &str = "`<n> [business] day(s) before at HH:MM`";

/// Reads a touch's time. Every accepted value is bounded: `before` from 1 minute to
/// [`MAX_BEFORE_DAYS`] days; `at` up to [`MAX_BEFORE_DAYS`] calendar days or
/// [`MAX_BUSINESS_DAYS`] business days before, at a time of day from 00:00 to 23:59.
pub fn parse(touch: &Touch) -> Result<When, ScheduleError> {
    match (&touch.before, &touch.at) {
        (Some(_), Some(_)) => Err(ScheduleError::Both),
        (Some(spec), None) => parse_before(spec),
        (None, Some(spec)) => parse_at(spec),
        (None, None) => Err(ScheduleError::Missing),
    }
}

fn parse_before(spec: &str) -> Result<When, ScheduleError> {
    let bad = ScheduleError::Unreadable {
        field: "before",
        expected: BEFORE_FORMAT,
    };
    let range = ScheduleError::OutOfRange {
        field: "before",
        limit: "from 1 minute to 365 days",
    };
    let spec = spec.trim();
    let split = spec
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(bad.clone())?;
    let (number, unit) = spec.split_at(split);
    if number.is_empty() {
        return Err(bad);
    }
    let minutes_per_unit: u64 = match unit.trim() {
        "d" | "day" | "days" => 24 * 60,
        "h" | "hour" | "hours" => 60,
        "m" | "min" | "minutes" => 1,
        _ => return Err(bad),
    };
    // All digits: a number too long for u64 is out of range, not unreadable.
    let n: u64 = number.parse().map_err(|_| range.clone())?;
    let minutes = n
        .checked_mul(minutes_per_unit)
        .filter(|m| (1..=u64::from(MAX_BEFORE_DAYS) * 24 * 60).contains(m))
        .ok_or(range.clone())?;
    let minutes = i64::try_from(minutes).map_err(|_| range.clone())?;
    Ok(When::Before(Duration::try_minutes(minutes).ok_or(range)?))
}

fn parse_at(spec: &str) -> Result<When, ScheduleError> {
    let bad = ScheduleError::Unreadable {
        field: "at",
        expected: AT_FORMAT,
    };
    // "<n> [business] day(s) before at HH:MM"
    let words: Vec<&str> = spec.split_whitespace().collect();
    let (number, rest) = words.split_first().ok_or(bad.clone())?;
    let (business, rest) = match rest.split_first() {
        Some((w, rest)) if w.eq_ignore_ascii_case("business") => (true, rest),
        _ => (false, rest),
    };
    let [day, before, at, time] = rest else {
        return Err(bad);
    };
    let day = day.to_ascii_lowercase();
    if !(day == "day" || day == "days")
        || !before.eq_ignore_ascii_case("before")
        || !at.eq_ignore_ascii_case("at")
        || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad);
    }
    let time = parse_clock(time).ok_or(ScheduleError::OutOfRange {
        field: "at",
        limit: "a time of day from 00:00 to 23:59",
    })?;
    let (limit, most) = if business {
        ("at most 60 business days", MAX_BUSINESS_DAYS)
    } else {
        ("at most 365 days", MAX_BEFORE_DAYS)
    };
    let range = ScheduleError::OutOfRange { field: "at", limit };
    let days: u32 = number.parse().map_err(|_| range.clone())?;
    if days > most {
        return Err(range);
    }
    Ok(When::DaysBefore {
        days,
        business,
        at: time,
    })
}

/// How far before the start a touch can be due, before quiet hours move it later: at least
/// and at most (`lo <= start - due <= hi` for every start, zone and date). The planner reads
/// and records a touch only while its appointment's start is in a range these give.
/// `holidays` is how many closed dates the organization lists (each can push a business-day
/// touch one day earlier).
pub fn lead(when: When, holidays: usize) -> (Duration, Duration) {
    match when {
        When::Before(d) => (d, d),
        When::DaysBefore { days, business, .. } => {
            let days = i64::from(days);
            // `at` any time of the day before the start's local date, and a daylight-saving
            // hour: one day and an hour either way. Business days: the weekends in between
            // (two days per five, and one more weekend where the count starts) and every
            // holiday.
            let calendar = if business {
                days + 2 * (days / 5 + 1) + i64::try_from(holidays).unwrap_or(i64::MAX / 4)
            } else {
                days
            };
            let hour = Duration::hours(1);
            let lo = (Duration::try_days(days - 1).unwrap_or(Duration::zero()) - hour)
                .max(Duration::zero());
            let hi = Duration::try_days(calendar.saturating_add(1))
                .and_then(|d| d.checked_add(&hour))
                .unwrap_or(Duration::MAX);
            (lo, hi)
        }
    }
}

/// The most quiet hours from `open` to `close` can move a touch later: the quiet span and a
/// daylight-saving hour (none when the hours are off, `open >= close`).
pub fn max_quiet_shift(open: NaiveTime, close: NaiveTime) -> Duration {
    if open < close {
        Duration::hours(24) - (close - open) + Duration::hours(1)
    } else {
        Duration::zero()
    }
}

/// A local date and time as an instant in `tz` (gap → forward; overlap → earlier).
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut candidate = local;
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&candidate).earliest() {
            return t.with_timezone(&Utc);
        }
        match candidate.checked_add_signed(Duration::minutes(30)) {
            Some(next) => candidate = next,
            None => break,
        }
    }
    Utc.from_utc_datetime(&local)
}

/// When the touch is due for an appointment starting at `start`, before quiet hours. Business
/// days are Monday to Friday except the organization's `holidays` (local dates). `None` when
/// the time is not representable (never for the bounded values [`parse`] returns, but a
/// caller skips such a touch rather than panic).
pub fn due(
    when: When,
    start: DateTime<Utc>,
    tz: Tz,
    holidays: &[NaiveDate],
) -> Option<DateTime<Utc>> {
    match when {
        When::Before(d) => start.checked_sub_signed(d),
        When::DaysBefore { days, business, at } => {
            let mut date: NaiveDate = start.with_timezone(&tz).date_naive();
            let mut left = days;
            while left > 0 {
                date = date.pred_opt()?;
                let closed = matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
                    || holidays.contains(&date);
                if !(business && closed) {
                    left -= 1;
                }
            }
            Some(local_to_utc(tz, date.and_time(at)))
        }
    }
}

/// Moves an instant out of quiet hours: before `open` → `open` that day; at or after `close`
/// → `open` the next day.
pub fn out_of_quiet_hours(
    at: DateTime<Utc>,
    tz: Tz,
    open: NaiveTime,
    close: NaiveTime,
) -> DateTime<Utc> {
    let local = at.with_timezone(&tz);
    let time = local.time();
    if time >= open && time < close {
        return at;
    }
    let date = if time < open {
        local.date_naive()
    } else {
        local.date_naive().succ_opt().unwrap_or(local.date_naive())
    };
    local_to_utc(tz, date.and_time(open))
}

pub fn parse_clock(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(before: Option<&str>, at: Option<&str>) -> Touch {
        Touch {
            id: "t".into(),
            before: before.map(String::from),
            at: at.map(String::from),
            channels: vec!["sms".into()],
            template: "reminder".into(),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn due(when: When, start: DateTime<Utc>, tz: Tz, holidays: &[NaiveDate]) -> DateTime<Utc> {
        super::due(when, start, tz, holidays).expect("representable")
    }

    /// Every duration and count is bounded (the planner computes with them), and the error
    /// names the field.
    #[test]
    fn absurd_times_are_refused_with_the_field() {
        let out_of_range = |before: Option<&str>, at: Option<&str>| {
            matches!(
                parse(&touch(before, at)),
                Err(ScheduleError::OutOfRange { .. })
            )
        };
        for spec in [
            "100000000d",
            "366d",
            "8761h",
            "525601m",
            "0m",
            "0d",
            "99999999999999999999999999d",
        ] {
            assert!(out_of_range(Some(spec), None), "{spec}");
        }
        for spec in [
            "61 business days before at 10:00",
            "366 days before at 10:00",
            "4294967296 days before at 10:00",
            "1 day before at 24:00",
            "1 day before at 10:61",
        ] {
            assert!(out_of_range(None, Some(spec)), "{spec}");
        }
        for spec in ["-5h", "5 weeks", "h", ""] {
            let error = parse(&touch(Some(spec), None)).unwrap_err();
            assert_eq!(error.field(), Some("before"), "{spec}");
        }
        for spec in [
            "1 business bday before at 10:00",
            "1 day after at 10:00",
            "-1 day before at 10:00",
        ] {
            let error = parse(&touch(None, Some(spec))).unwrap_err();
            assert_eq!(error.field(), Some("at"), "{spec}");
        }
        assert_eq!(
            parse(&touch(Some("2h"), Some("1 day before at 10:00"))),
            Err(ScheduleError::Both)
        );
        // The limits themselves are fine.
        assert_eq!(
            parse(&touch(Some("365d"), None)),
            Ok(When::Before(Duration::days(365)))
        );
        assert!(parse(&touch(None, Some("60 business days before at 23:59"))).is_ok());
        assert!(parse(&touch(None, Some("365 days before at 00:00"))).is_ok());
        // An instant the calendar cannot hold is no due time, not a panic.
        assert_eq!(
            super::due(
                When::Before(Duration::days(365)),
                DateTime::<Utc>::MIN_UTC,
                Tz::UTC,
                &[]
            ),
            None
        );
        let far = When::DaysBefore {
            days: 2,
            business: true,
            at: NaiveTime::MIN,
        };
        assert_eq!(
            super::due(far, DateTime::<Utc>::MIN_UTC, Tz::UTC, &[]),
            None
        );
    }

    #[test]
    fn offsets_and_day_specs() {
        assert_eq!(
            parse(&touch(Some("48h"), None)).unwrap(),
            When::Before(Duration::hours(48))
        );
        assert_eq!(
            parse(&touch(Some("7d"), None)).unwrap(),
            When::Before(Duration::days(7))
        );
        assert!(parse(&touch(Some("soon"), None)).is_err());
        assert!(parse(&touch(None, None)).is_err());
        let when = parse(&touch(None, Some("1 business day before at 10:00"))).unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        // Monday 2026-03-02 09:00 New York → previous business day is Friday 02-27 10:00.
        let start = utc("2026-03-02T14:00:00Z");
        assert_eq!(due(when, start, ny, &[]), utc("2026-02-27T15:00:00Z"));
        let calendar = parse(&touch(None, Some("1 day before at 10:00"))).unwrap();
        assert_eq!(due(calendar, start, ny, &[]), utc("2026-03-01T15:00:00Z"));
        // Tuesday 2026-12-29 after Christmas on Friday and the weekend: with 12-28 a holiday
        // too, "1 business day before" is Thursday 12-24.
        let holidays = [
            NaiveDate::from_ymd_opt(2026, 12, 25).unwrap(),
            NaiveDate::from_ymd_opt(2026, 12, 28).unwrap(),
        ];
        let tuesday = utc("2026-12-29T14:00:00Z");
        assert_eq!(
            due(when, tuesday, ny, &holidays),
            utc("2026-12-24T15:00:00Z")
        );
        assert_eq!(due(when, tuesday, ny, &[]), utc("2026-12-28T15:00:00Z"));
        // Calendar days ignore holidays.
        assert_eq!(
            due(calendar, tuesday, ny, &holidays),
            utc("2026-12-28T15:00:00Z")
        );
    }

    #[test]
    fn quiet_hours_wait_for_the_window_in_local_time() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let open = parse_clock("08:00").unwrap();
        let close = parse_clock("21:00").unwrap();
        // 2 h before a 9:00 appointment is 7:00 local → 8:00.
        assert_eq!(
            out_of_quiet_hours(utc("2026-06-10T11:00:00Z"), ny, open, close),
            utc("2026-06-10T12:00:00Z")
        );
        // 22:30 local → 8:00 the next day.
        assert_eq!(
            out_of_quiet_hours(utc("2026-06-11T02:30:00Z"), ny, open, close),
            utc("2026-06-11T12:00:00Z")
        );
        // Inside the window: unchanged.
        assert_eq!(
            out_of_quiet_hours(utc("2026-06-10T15:00:00Z"), ny, open, close),
            utc("2026-06-10T15:00:00Z")
        );
        // Tokyo patient of a New York clinic: 7:00 Tokyo is quiet for them.
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(
            out_of_quiet_hours(utc("2026-06-09T22:00:00Z"), tokyo, open, close),
            utc("2026-06-09T23:00:00Z")
        );
    }

    #[test]
    fn across_the_dst_change() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // Appointment Monday 2026-03-09 09:00 EDT (13:00Z); "1 day before at 10:00" is Sunday
        // 03-08 10:00 EDT (14:00Z) — the day clocks sprang forward.
        let when = parse(&touch(None, Some("1 day before at 10:00"))).unwrap();
        assert_eq!(
            due(when, utc("2026-03-09T13:00:00Z"), ny, &[]),
            utc("2026-03-08T14:00:00Z")
        );
        // 48 h before is an exact duration: Saturday 03-07 08:00 EST (13:00Z).
        assert_eq!(
            due(
                When::Before(Duration::hours(48)),
                utc("2026-03-09T13:00:00Z"),
                ny,
                &[]
            ),
            utc("2026-03-07T13:00:00Z")
        );
        // A local time in the gap (02:30 on 03-08) moves forward.
        let gap = NaiveDate::from_ymd_opt(2026, 3, 8)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(local_to_utc(ny, gap), utc("2026-03-08T07:00:00Z"));
    }

    /// `lead` bounds `start - due` for starts every 7 hours over two years, in zones with
    /// daylight saving, for calendar and business days with holidays, up to the longest (60
    /// business days: their weekends alone add 24 days); quiet hours move a touch later by at
    /// most `max_quiet_shift`. The planner reads and records touches by these bounds.
    #[test]
    fn leads_bound_every_due_time() {
        let zones: Vec<Tz> = [
            "UTC",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
        ]
        .iter()
        .map(|z| z.parse().unwrap())
        .collect();
        let holidays: Vec<NaiveDate> = [
            "2027-01-01",
            "2027-05-31",
            "2027-07-05",
            "2027-11-25",
            "2027-11-26",
            "2027-12-24",
            "2027-12-27",
        ]
        .iter()
        .map(|d| d.parse().unwrap())
        .collect();
        let (open, close) = (
            NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
        );
        let shift = max_quiet_shift(open, close);
        let specs = [
            (Some("7d"), None),
            (Some("90m"), None),
            (None, Some("1 day before at 23:59")),
            (None, Some("1 day before at 00:00")),
            (None, Some("3 business days before at 10:00")),
            (None, Some("60 business days before at 17:30")),
            (None, Some("365 days before at 00:00")),
        ];
        for (before, at) in specs {
            let when = parse(&touch(before, at)).unwrap();
            let (lo, hi) = lead(when, holidays.len());
            let mut start = utc("2027-01-01T00:00:00Z");
            while start < utc("2029-01-01T00:00:00Z") {
                for &zone in &zones {
                    let due = due(when, start, zone, &holidays);
                    let lead = start - due;
                    assert!(
                        lo <= lead && lead <= hi,
                        "{before:?} {at:?} {start} {zone}: {lead} not in {lo}..{hi}"
                    );
                    let moved = out_of_quiet_hours(due, zone, open, close);
                    assert!(
                        moved >= due && moved - due <= shift,
                        "{due} {zone}: moved to {moved}"
                    );
                }
                start += Duration::hours(7);
            }
        }
    }
}
