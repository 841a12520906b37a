//! Reminder rules as clients send them (`PUT /v1/reminder-rules/{id}`, JSON) or write them in
//! the configuration file (TOML): deserialised, each touch's `before`/`at` parsed as the API
//! validates it, then planned as the reminder cron plans it (due time for appointments across
//! the representable range in zones with odd DST rules, moved out of quiet hours).
//!
//! Input: byte 0 picks JSON or TOML, the zone and the quiet hours; the rest is the rule.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use switchboard::config::ReminderRule;
use switchboard::reminders::schedule::{due, out_of_quiet_hours, parse, parse_clock};

const ZONES: [Tz; 4] = [
    Tz::America__New_York,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Apia,
    Tz::UTC,
];

fn starts() -> [DateTime<Utc>; 4] {
    [
        Utc.with_ymd_and_hms(2026, 3, 8, 7, 30, 0)
            .single()
            .expect("date"),
        Utc.with_ymd_and_hms(2026, 11, 1, 5, 30, 0)
            .single()
            .expect("date"),
        Utc.with_ymd_and_hms(1970, 1, 2, 0, 0, 0)
            .single()
            .expect("date"),
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 0, 0)
            .single()
            .expect("date"),
    ]
}

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    let [select, rest @ ..] = data else {
        return;
    };
    let rule: ReminderRule = if select & 1 == 0 {
        match serde_json::from_slice(rest) {
            Ok(rule) => rule,
            Err(_) => return,
        }
    } else {
        match std::str::from_utf8(rest)
            .ok()
            .and_then(|t| toml::from_str(t).ok())
        {
            Some(rule) => rule,
            None => return,
        }
    };
    let zone = ZONES[usize::from(select >> 1) % ZONES.len()];
    let (open, close) = match select >> 3 & 3 {
        0 => ("08:00", "20:00"),
        1 => ("00:00", "23:59"),
        2 => ("22:00", "06:00"),
        _ => ("9:5", " 17:45 "),
    };
    let (open, close) = (
        parse_clock(open).unwrap_or_default(),
        parse_clock(close).unwrap_or_default(),
    );
    let holidays = [
        NaiveDate::from_ymd_opt(2026, 3, 6).expect("date"),
        NaiveDate::MIN,
        NaiveDate::MAX,
    ];
    for touch in &rule.touches {
        let Ok(when) = parse(touch) else {
            continue;
        };
        for start in starts() {
            // Out of range: the planner skips the touch with a reason.
            let Some(at) = due(when, start, zone, &holidays) else {
                continue;
            };
            if open < close {
                let _ = out_of_quiet_hours(at, zone, open, close);
            }
        }
    }
}
