//! HL7 v2 escape sequences, decoded by us: hl7-parser 0.3's decoder indexes strings by byte
//! with character positions (wrong for non-ASCII text, and it can panic on untrusted input).
//! Handles `\F\ \S\ \T\ \R\ \E\`, `\Xhh…\` (hex bytes, read as UTF-8, lossy), `\.br\`
//! (newline), and drops `\H\`/`\N\` highlighting; anything else is kept literally.

use crate::message::Delimiters;

/// Decodes one raw value (a component or subcomponent, never containing its own separators).
pub fn decode(raw: &str, d: &Delimiters) -> String {
    if !raw.contains(d.escape) {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(d.escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + d.escape.len_utf8()..];
        let Some(end) = after.find(d.escape) else {
            // Unterminated: keep the rest as written.
            out.push_str(&rest[start..]);
            return out;
        };
        let code = &after[..end];
        match code {
            "F" => out.push(d.field),
            "S" => out.push(d.component),
            "T" => out.push(d.subcomponent),
            "R" => out.push(d.repetition),
            "E" => out.push(d.escape),
            "H" | "N" => {}
            ".br" => out.push('\n'),
            _ if code.len() > 1 && code.starts_with('X') && code.len() % 2 == 1 => {
                match hex::decode(&code[1..]) {
                    Ok(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
                    Err(_) => {
                        out.push(d.escape);
                        out.push_str(code);
                        out.push(d.escape);
                    }
                }
            }
            _ => {
                out.push(d.escape);
                out.push_str(code);
                out.push(d.escape);
            }
        }
        rest = &after[end + d.escape.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Escapes text for inclusion in a field we write (ACK error messages). Line breaks become
/// spaces; other ASCII control characters become `\Xhh\`.
pub fn encode(text: &str, d: &Delimiters) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = if c == d.escape {
            Some('E')
        } else if c == d.field {
            Some('F')
        } else if c == d.component {
            Some('S')
        } else if c == d.subcomponent {
            Some('T')
        } else if c == d.repetition {
            Some('R')
        } else {
            None
        };
        match code {
            Some(code) => {
                out.push(d.escape);
                out.push(code);
                out.push(d.escape);
            }
            None if c == '\r' || c == '\n' => out.push(' '),
            // Other control characters (MLLP's 0x0B and 0x1C among them) as hex escapes.
            None if c.is_ascii_control() => {
                out.push(d.escape);
                out.push_str(&format!("X{:02X}", u32::from(c)));
                out.push(d.escape);
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_separators_hex_and_non_ascii() {
        let d = Delimiters::default();
        assert_eq!(decode(r"MÜLLER\T\SOHN", &d), "MÜLLER&SOHN");
        assert_eq!(decode(r"A\F\B\S\C\R\D\E\E", &d), r"A|B^C~D\E");
        assert_eq!(decode(r"caf\XC3A9\", &d), "café");
        assert_eq!(decode(r"line\.br\two", &d), "line\ntwo");
        assert_eq!(decode(r"\H\bold\N\", &d), "bold");
        assert_eq!(decode(r"ÄÖ\T\X", &d), "ÄÖ&X");
        assert_eq!(decode(r"open\Z", &d), r"open\Z");
        assert_eq!(decode(r"\Q\", &d), r"\Q\");
    }

    #[test]
    fn encode_round_trips() {
        let d = Delimiters::default();
        let text = r"a|b^c~d\e&f";
        assert_eq!(decode(&encode(text, &d), &d), text);
    }
}
