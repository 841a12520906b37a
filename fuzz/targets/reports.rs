//! Delivery reports: MDNs and DSNs parsed into notifications (`direct::mdn`, shared by Direct
//! and email) and bounces recognised for the email channel (`channels::email::dsn`), with the
//! delivery ids they name; and the processed MDN we would send back for the message.

use switchboard_mail::dsn::{is_reference, parse_bounce};
use switchboard_mail::mdn::{MdnError, parse_notification, parse_notifications, processed_mdn_for};

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    match parse_notifications(data) {
        Ok(all) => {
            let first = parse_notification(data);
            match all.first() {
                Some(n) => assert_eq!(first.as_ref(), Ok(n)),
                None => assert_eq!(first, Err(MdnError::MissingField("Final-Recipient"))),
            }
        }
        Err(e) => assert_eq!(parse_notification(data), Err(e)),
    }
    if let Some(bounce) = parse_bounce(data) {
        for id in bounce.candidates("sender.example") {
            assert!(
                is_reference(&id),
                "a candidate that is not a reference token"
            );
        }
    }
    if let Ok(mdn) = processed_mdn_for(data, "bob@recipient.example", "gw.example; Switchboard") {
        // Our own MDN must read back as a processed MDN.
        let n = parse_notification(&mdn).expect("our MDN parses");
        assert_eq!(n.outcome, switchboard_mail::mdn::Outcome::Processed);
    }
}
