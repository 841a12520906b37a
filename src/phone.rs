//! Phone numbers: E.164 normalization (the `phonenumber` crate, Google's libphonenumber
//! metadata) and SMS segment counting (GSM-7 vs UCS-2).

use phonenumber::Mode;

/// Why a number cannot be texted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PhoneError {
    #[error("not a phone number")]
    Unparseable,
    #[error("not a valid number for its region")]
    Invalid,
}

/// The number in E.164 (`+15551234567`). Numbers without a country code are read in
/// `default_region` (ISO 3166 alpha-2, e.g. `US`).
pub fn to_e164(raw: &str, default_region: &str) -> Result<String, PhoneError> {
    let region = default_region.parse::<phonenumber::country::Id>().ok();
    let cleaned = raw.trim().trim_start_matches("tel:");
    let number = phonenumber::parse(region, cleaned).map_err(|_| PhoneError::Unparseable)?;
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid);
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

/// GSM 03.38 basic character set (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table (two septets each: escape + char).
const GSM7_EXTENDED: &str = "^{}\\[~]|€\x0c";

/// How a text is encoded and how many SMS segments it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: SmsEncoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub segments: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsEncoding {
    Gsm7,
    Ucs2,
}

/// Counts segments the way carriers do: GSM-7 160 septets in one part, 153 per part when
/// concatenated; UCS-2 70 / 67 code units.
pub fn segments(text: &str) -> Segments {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENDED.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    if gsm {
        let segments = match septets {
            0 => 1,
            n if n <= 160 => 1,
            n => n.div_ceil(153),
        };
        return Segments {
            encoding: SmsEncoding::Gsm7,
            units: septets,
            segments,
        };
    }
    let units: usize = text.chars().map(char::len_utf16).sum();
    let segments = match units {
        0 => 1,
        n if n <= 70 => 1,
        n => n.div_ceil(67),
    };
    Segments {
        encoding: SmsEncoding::Ucs2,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_national_and_international_numbers() {
        assert_eq!(to_e164("(415) 555-2671", "US").unwrap(), "+14155552671");
        assert_eq!(to_e164("+44 20 7946 0958", "US").unwrap(), "+442079460958");
        assert_eq!(to_e164("020 7946 0958", "GB").unwrap(), "+442079460958");
        assert_eq!(to_e164("tel:+14155552671", "US").unwrap(), "+14155552671");
        assert!(to_e164("12", "US").is_err());
        assert!(to_e164("not a number", "US").is_err());
        assert_eq!(to_e164("+1 555 0100", "US"), Err(PhoneError::Invalid));
    }

    #[test]
    fn counts_gsm7_and_ucs2_segments() {
        let plain = "a".repeat(160);
        assert_eq!(segments(&plain).segments, 1);
        assert_eq!(segments(&"a".repeat(161)).segments, 2);
        assert_eq!(segments(&"a".repeat(306)).segments, 2);
        assert_eq!(segments(&"a".repeat(307)).segments, 3);
        // Extension characters take two septets.
        let s = segments(&"€".repeat(80));
        assert_eq!(
            (s.encoding, s.units, s.segments),
            (SmsEncoding::Gsm7, 160, 1)
        );
        // One emoji or accented character outside GSM-7 turns the whole text into UCS-2.
        let s = segments(&format!("{}ó", "a".repeat(69)));
        assert_eq!((s.encoding, s.segments), (SmsEncoding::Ucs2, 1));
        let s = segments(&format!("{}🙂", "a".repeat(69)));
        assert_eq!(
            (s.encoding, s.units, s.segments),
            (SmsEncoding::Ucs2, 71, 2)
        );
        assert_eq!(segments("Sí, confirmo la cita").encoding, SmsEncoding::Ucs2);
    }
}
