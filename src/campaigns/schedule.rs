//! When a scheduled campaign runs: a cron expression (seconds first, as `reminders.schedule`)
//! read in the organization's time zone, each tick moved onto a business day (Monday to Friday,
//! not one of the organization's `holidays`; unless the campaign says `business_days: false`)
//! within its open hours (outside quiet hours, always). A run
//! sends only while the organization is open; one that is still going when quiet hours begin
//! waits for the next open hour.

use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;

use crate::config::OrganizationConfig;
use crate::reminders::schedule::{local_to_utc, out_of_quiet_hours, parse_clock};

/// An organization's calendar: time zone, open hours and holidays.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub zone: Tz,
    pub open: NaiveTime,
    pub close: NaiveTime,
    pub holidays: Vec<chrono::NaiveDate>,
    /// Sends only on business days (else every day, quiet hours still honoured).
    pub business_days: bool,
}

impl Calendar {
    /// The organization's calendar; `business_days`: closed on weekends and holidays.
    pub fn of(settings: &OrganizationConfig, business_days: bool) -> Self {
        Self {
            business_days,
            zone: settings.time_zone.parse().unwrap_or(Tz::UTC),
            open: parse_clock(&settings.quiet_hours_start).unwrap_or_default(),
            close: parse_clock(&settings.quiet_hours_end)
                .unwrap_or_else(|| NaiveTime::from_hms_opt(23, 59, 0).unwrap_or_default()),
            holidays: settings.holidays.clone(),
        }
    }

    fn business_day(&self, date: chrono::NaiveDate) -> bool {
        !self.business_days
            || !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
                && !self.holidays.contains(&date)
    }

    /// Whether messages may go out at `at`: a business day, outside quiet hours.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.zone);
        let time = local.time();
        self.business_day(local.date_naive()) && time >= self.open && time < self.close
    }

    /// The first open instant at or after `at`.
    pub fn next_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let mut t = at;
        // A year of closed days is a configuration nobody means; stop looking after it.
        for _ in 0..400 {
            t = out_of_quiet_hours(t, self.zone, self.open, self.close);
            let local = t.with_timezone(&self.zone);
            if self.business_day(local.date_naive()) {
                return t;
            }
            let next = local.date_naive().succ_opt().unwrap_or(local.date_naive());
            t = local_to_utc(self.zone, next.and_time(self.open));
        }
        t
    }

    /// The local date of an instant.
    pub fn date(&self, at: DateTime<Utc>) -> chrono::NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }
}

/// A campaign's schedule: the cron expression as given.
pub fn parse(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err("a cron expression with seconds first: `0 0 10 * * Mon-Fri`".into());
    }
    let schedule = cron::Schedule::from_str(expression)
        .map_err(|_| "not a cron expression (seconds first: `0 0 10 * * Mon-Fri`)".to_string())?;
    if schedule.upcoming(Utc).next().is_none() {
        return Err("the schedule never fires again".into());
    }
    Ok(schedule)
}

/// The next run after `after`: the schedule's next tick in the organization's time zone, moved
/// to the first open instant. `None` when the schedule never fires again.
pub fn next_run(
    schedule: &cron::Schedule,
    calendar: &Calendar,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&calendar.zone);
    let tick = schedule.after(&local).next()?.with_timezone(&Utc);
    Some(calendar.next_open(tick))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn calendar() -> Calendar {
        Calendar {
            zone: "America/New_York".parse().unwrap(),
            open: parse_clock("08:00").unwrap(),
            close: parse_clock("21:00").unwrap(),
            holidays: vec![chrono::NaiveDate::from_ymd_opt(2027, 3, 17).unwrap()],
            business_days: true,
        }
    }

    #[test]
    fn campaign_schedule_is_local_and_skips_closed_days() {
        let c = calendar();
        let daily = parse("0 0 10 * * *").unwrap();
        // Tuesday 2027-03-16 11:00 New York (15:00Z): next 10:00 is Wednesday, a holiday,
        // so Thursday at opening, 08:00 (12:00Z, daylight time).
        assert_eq!(
            next_run(&daily, &c, utc("2027-03-16T15:00:00Z")),
            Some(utc("2027-03-18T12:00:00Z"))
        );
        // Monday 09:00 (13:00Z): today's 10:00.
        assert_eq!(
            next_run(&daily, &c, utc("2027-03-15T13:00:00Z")),
            Some(utc("2027-03-15T14:00:00Z"))
        );
        // Friday after the tick → Saturday's tick moves to Monday at opening.
        assert_eq!(
            next_run(&daily, &c, utc("2027-03-19T15:00:00Z")),
            Some(utc("2027-03-22T12:00:00Z"))
        );
        // A tick in quiet hours (06:00 local) moves to 08:00.
        let early = parse("0 0 6 * * *").unwrap();
        assert_eq!(
            next_run(&early, &c, utc("2027-03-15T15:00:00Z")),
            Some(utc("2027-03-16T12:00:00Z"))
        );
        assert!(c.is_open(utc("2027-03-16T14:00:00Z")));
        assert!(!c.is_open(utc("2027-03-17T14:00:00Z")), "holiday");
        assert!(!c.is_open(utc("2027-03-16T02:00:00Z")), "quiet hours");
        // Every day: Saturday's tick stays on Saturday, quiet hours still apply.
        let every_day = Calendar {
            business_days: false,
            ..c
        };
        assert_eq!(
            next_run(&daily, &every_day, utc("2027-03-19T15:00:00Z")),
            Some(utc("2027-03-20T14:00:00Z"))
        );
        assert!(!every_day.is_open(utc("2027-03-16T02:00:00Z")));
    }

    #[test]
    fn campaign_schedule_needs_seconds_first() {
        assert!(parse("0 10 * * *").is_err());
        assert!(parse("every day").is_err());
        assert!(parse("0 0 10 * * Mon-Fri").is_ok());
        assert!(parse("0 0 0 1 1 * 2001").is_err());
    }
}
