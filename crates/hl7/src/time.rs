//! HL7 timestamps (DTM/TS): `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`. A timestamp with an
//! offset keeps it; one without is read in the organization's time zone. A local time that
//! does not exist (spring-forward gap) is moved forward by the gap; an ambiguous one (fall-back)
//! takes the earlier instant.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

/// Parses a timestamp; `None` when it is not one.
pub fn parse_timestamp(text: &str, zone: Tz) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    let (digits, offset) = match text.find(['+', '-']) {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    if whole.len() < 4
        || whole.len() > 14
        || whole.len() % 2 != 0
        || !whole.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>, default: u32| -> Option<u32> {
        match whole.get(range) {
            Some(s) if !s.is_empty() => s.parse().ok(),
            _ => Some(default),
        }
    };
    let date = NaiveDate::from_ymd_opt(num(0..4, 0)? as i32, num(4..6, 1)?, num(6..8, 1)?)?;
    let nanos = match fraction {
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<9}");
            padded.get(..9)?.parse().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    let time =
        NaiveTime::from_hms_nano_opt(num(8..10, 0)?, num(10..12, 0)?, num(12..14, 0)?, nanos)?;
    let local = NaiveDateTime::new(date, time);
    match offset {
        Some(offset) => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let value = &offset[1..];
            if value.len() != 4 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hours: i32 = value[..2].parse().ok()?;
            let minutes: i32 = value[2..].parse().ok()?;
            let fixed = FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))?;
            fixed.from_local_datetime(&local).single()
        }
        None => in_zone(local, zone),
    }
}

/// A local time in a zone, resolving DST gaps and overlaps as the module says.
pub fn in_zone(local: NaiveDateTime, zone: Tz) -> Option<DateTime<FixedOffset>> {
    match zone.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Some(t.fixed_offset()),
        chrono::LocalResult::Ambiguous(early, _) => Some(early.fixed_offset()),
        chrono::LocalResult::None => {
            // In a gap: the wall clock skipped ahead; move forward by an hour.
            let later = local + chrono::Duration::hours(1);
            zone.from_local_datetime(&later)
                .earliest()
                .map(|t| t.fixed_offset())
        }
    }
}

/// The date part of a timestamp (birth dates).
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    let digits = text.get(..8)?;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_offsets_and_uses_the_zone_otherwise() {
        let chicago: Tz = "America/Chicago".parse().expect("zone");
        let t = parse_timestamp("20210924093000+0215", chicago).expect("ts");
        assert_eq!(t.to_rfc3339(), "2021-09-24T09:30:00+02:15");
        let t = parse_timestamp("202401151430", chicago).expect("ts");
        assert_eq!(t.to_rfc3339(), "2024-01-15T14:30:00-06:00");
        let t = parse_timestamp("20240710", chicago).expect("ts");
        assert_eq!(t.to_rfc3339(), "2024-07-10T00:00:00-05:00");
        let t = parse_timestamp("20210817151943.4+0200", chicago).expect("ts");
        assert_eq!(t.timestamp_subsec_millis(), 400);
        // 2024-03-10 02:30 does not exist in Chicago.
        let t = parse_timestamp("202403100230", chicago).expect("gap");
        assert_eq!(t.to_rfc3339(), "2024-03-10T03:30:00-05:00");
        // 2024-11-03 01:30 happens twice: the earlier (CDT) one.
        let t = parse_timestamp("202411030130", chicago).expect("overlap");
        assert_eq!(t.to_rfc3339(), "2024-11-03T01:30:00-05:00");
        assert!(parse_timestamp(" 2024", chicago).is_some());
        assert!(parse_timestamp("2024x1", chicago).is_none());
        assert!(parse_timestamp("20241301", chicago).is_none());
        assert_eq!(
            parse_date("198808181126+0215")
                .map(|d| d.to_string())
                .as_deref(),
            Some("1988-08-18")
        );
    }
}
