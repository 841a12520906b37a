//! What an accepted Direct message turns into for intake (`intake::DirectSource`): the opened
//! inner RFC 5322 message → subject, body (text, or HTML rendered), attachments as declared,
//! XDM packages kept and unpacked, the C-CDA that names the patient, warnings. Checks: no
//! panic; the body within its limit; attachments within theirs; warnings are short codes.

use switchboard::intake::{DIRECT_MAX_ATTACHMENTS, DIRECT_MAX_BODY_BYTES, DirectSource, Source};

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    if let Ok(parsed) = DirectSource.parse(data) {
        assert!(parsed.body.len() <= DIRECT_MAX_BODY_BYTES);
        assert!(parsed.attachments.len() <= DIRECT_MAX_ATTACHMENTS);
        for warning in &parsed.warnings {
            assert!(warning.len() < 200, "a warning quoting content: {warning}");
        }
        let _ = format!("{parsed:?}");
    }
}
