//! When a touch is due: offsets (`48h`) or day-and-time specs (`1 business day before at
//! 10:00`) computed in the patient's local time, then moved out of quiet hours. Daylight-saving
//! gaps move forward to the first valid instant; ambiguous times take the earlier one.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

use crate::config::Touch;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("touch {0}: give `before` (\"48h\") or `at` (\"1 business day before at 10:00\")")]
    Missing(String),
    #[error("touch {touch}: cannot read {spec:?}")]
    Unreadable { touch: String, spec: String },
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

pub fn parse(touch: &Touch) -> Result<When, ScheduleError> {
    let bad = |spec: &str| ScheduleError::Unreadable {
        touch: touch.id.clone(),
        spec: spec.to_string(),
    };
    if let Some(spec) = &touch.before {
        let spec = spec.trim();
        let (number, unit) = spec.split_at(
            spec.find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| bad(spec))?,
        );
        let n: i64 = number.parse().map_err(|_| bad(spec))?;
        let duration = match unit.trim() {
            "d" | "day" | "days" => Duration::days(n),
            "h" | "hour" | "hours" => Duration::hours(n),
            "m" | "min" | "minutes" => Duration::minutes(n),
            _ => return Err(bad(spec)),
        };
        return Ok(When::Before(duration));
    }
    if let Some(spec) = &touch.at {
        // "<n> [business] day(s) before at HH:MM"
        let words: Vec<&str> = spec.split_whitespace().collect();
        let n: u32 = words
            .first()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| bad(spec))?;
        let business = words.get(1) == Some(&"business");
        let time = words
            .iter()
            .position(|w| *w == "at")
            .and_then(|i| words.get(i + 1))
            .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M").ok())
            .ok_or_else(|| bad(spec))?;
        if !spec.contains("before") {
            return Err(bad(spec));
        }
        return Ok(When::DaysBefore {
            days: n,
            business,
            at: time,
        });
    }
    Err(ScheduleError::Missing(touch.id.clone()))
}

/// A local date and time as an instant in `tz` (gap → forward; overlap → earlier).
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut candidate = local;
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&candidate).earliest() {
            return t.with_timezone(&Utc);
        }
        candidate += Duration::minutes(30);
    }
    Utc.from_utc_datetime(&local)
}

/// When the touch is due for an appointment starting at `start`, before quiet hours. Business
/// days are Monday to Friday except the organization's `holidays` (local dates).
pub fn due(when: When, start: DateTime<Utc>, tz: Tz, holidays: &[NaiveDate]) -> DateTime<Utc> {
    match when {
        When::Before(d) => start - d,
        When::DaysBefore { days, business, at } => {
            let mut date: NaiveDate = start.with_timezone(&tz).date_naive();
            let mut left = days;
            while left > 0 {
                let Some(previous) = date.pred_opt() else {
                    break;
                };
                date = previous;
                let closed = matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
                    || holidays.contains(&date);
                if !(business && closed) {
                    left -= 1;
                }
            }
            local_to_utc(tz, date.and_time(at))
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
}
