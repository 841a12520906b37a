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
///
/// Answers are remembered ([`Recent`]): one number is read several times on its way (the
/// consent ledger's addresses, the channel choice, the accept, the send), and reading one
/// with libphonenumber's metadata costs about 9 µs (its validation runs regular
/// expressions). Under the reminder bench that was 30 % of the process's CPU.
pub fn to_e164(raw: &str, default_region: &str) -> Result<String, PhoneError> {
    let key = format!("{default_region}\u{0}{raw}");
    if let Some(known) = RECENT.get(&key) {
        return known;
    }
    let answer = read_e164(raw, default_region);
    RECENT.put(key, answer.clone());
    answer
}

/// Numbers read lately, in two generations of at most [`Recent::GENERATION`] each: a hit in the
/// older one moves to the newer, and a full newer one becomes the older (dropping the oldest),
/// so what is in use stays and memory stays bounded.
struct Recent(std::sync::Mutex<Generations>);

type Answers = std::collections::HashMap<String, Result<String, PhoneError>>;

#[derive(Default)]
struct Generations {
    newer: Answers,
    older: Answers,
}

static RECENT: std::sync::LazyLock<Recent> =
    std::sync::LazyLock::new(|| Recent(std::sync::Mutex::new(Generations::default())));

impl Recent {
    const GENERATION: usize = 4096;

    fn get(&self, key: &str) -> Option<Result<String, PhoneError>> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(answer) = g.newer.get(key) {
            return Some(answer.clone());
        }
        let answer = g.older.remove(key)?;
        g.insert(key.to_string(), answer.clone());
        Some(answer)
    }

    fn put(&self, key: String, answer: Result<String, PhoneError>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, answer);
    }
}

impl Generations {
    fn insert(&mut self, key: String, answer: Result<String, PhoneError>) {
        if self.newer.len() >= Recent::GENERATION {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(key, answer);
    }
}

fn read_e164(raw: &str, default_region: &str) -> Result<String, PhoneError> {
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

/// ASCII characters of [`GSM7_BASIC`], one bit each.
const GSM7_ASCII: u128 = {
    let bytes = GSM7_BASIC.as_bytes();
    let mut bits = 0u128;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] < 128 {
            bits |= 1 << bytes[i];
        }
        i += 1;
    }
    bits
};

/// Whether `c` is in [`GSM7_BASIC`]: a bit test for ASCII (most text), a search otherwise.
fn is_gsm7_basic(c: char) -> bool {
    match u8::try_from(c) {
        Ok(b) if b < 128 => GSM7_ASCII & (1 << b) != 0,
        _ => GSM7_BASIC.contains(c),
    }
}

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
        if is_gsm7_basic(c) {
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

    /// A remembered answer is the answer: per region (the same digits read in GB and in US
    /// differ), errors included.
    #[test]
    fn remembered_numbers_answer_as_read_per_region() {
        for _ in 0..2 {
            assert_eq!(to_e164("020 7946 0958", "GB").unwrap(), "+442079460958");
            assert_eq!(
                to_e164("020 7946 0958", "US"),
                read_e164("020 7946 0958", "US")
            );
            assert!(to_e164("020 7946 0958", "US").is_err());
            assert_eq!(to_e164("+1 555 0100", "US"), Err(PhoneError::Invalid));
        }
    }

    /// The memory holds at most two generations; what is in use survives a generation's turn.
    #[test]
    fn remembered_numbers_stay_bounded_and_keep_what_is_in_use() {
        let recent = Recent(std::sync::Mutex::new(Generations::default()));
        recent.put("kept".into(), Ok("+1".into()));
        for n in 0..3 * Recent::GENERATION {
            recent.put(format!("n{n}"), Err(PhoneError::Unparseable));
            if n % 1000 == 0 {
                assert_eq!(recent.get("kept"), Some(Ok("+1".into())), "at {n}");
            }
        }
        let g = recent.0.lock().unwrap();
        assert!(g.newer.len() + g.older.len() <= 2 * Recent::GENERATION);
        drop(g);
        assert_eq!(recent.get("n0"), None, "the oldest went");
    }

    /// Every character of the GSM-7 basic set is one septet, every other ASCII character
    /// (but the extension table's) turns the text into UCS-2.
    #[test]
    fn the_ascii_bit_test_matches_the_gsm7_table() {
        for c in GSM7_BASIC.chars() {
            let s = segments(&c.to_string());
            assert_eq!((s.encoding, s.units), (SmsEncoding::Gsm7, 1), "{c:?}");
        }
        for b in 0u8..128 {
            let c = char::from(b);
            if GSM7_BASIC.contains(c) || GSM7_EXTENDED.contains(c) {
                continue;
            }
            assert_eq!(
                segments(&c.to_string()).encoding,
                SmsEncoding::Ucs2,
                "{c:?}"
            );
        }
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
