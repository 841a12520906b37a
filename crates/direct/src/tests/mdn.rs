//! MDN/DSN parsing on the Direct RI vectors and the MDN builder.

use super::vectors;
use crate::mdn::{
    MdnDisposition, MdnError, MdnRequest, NotificationKind, Outcome, build_mdn, parse_notification,
    parse_notifications,
};

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(vectors().join("messages").join(name)).expect("vector")
}

#[test]
fn processed_mdn() {
    let n = parse_notification(&vector("ri-MDNMessage.txt")).expect("mdn");
    assert_eq!(n.kind, NotificationKind::Mdn);
    assert_eq!(n.outcome, Outcome::Processed);
    assert_eq!(
        n.original_message_id.as_deref(),
        Some("9501051053.aa04167@IETF.CNR I.Reston.VA.US")
    );
    assert_eq!(
        n.final_recipient.as_deref(),
        Some("externuser1@starugh-stateline.com")
    );
    assert!(!n.final_destination_delivery);
}

#[test]
fn dispatched_mdn_with_lf_line_ends() {
    let n = parse_notification(&vector("ri-MDNDispatchedMessage.txt")).expect("mdn");
    assert_eq!(n.outcome, Outcome::Dispatched);
    assert!(n.final_destination_delivery);
    assert_eq!(
        n.original_message_id.as_deref(),
        Some("9501051053.aa04167@IETF.CNR I.Reston.VA.US")
    );
}

#[test]
fn failure_dsn() {
    let all = parse_notifications(&vector("ri-DSNMessage.txt")).expect("dsn");
    assert_eq!(all.len(), 1);
    let n = &all[0];
    assert_eq!(n.kind, NotificationKind::Dsn);
    assert_eq!(n.final_recipient.as_deref(), Some("carol@ivory.edu"));
    assert_eq!(
        n.outcome,
        Outcome::Failed {
            reason: "smtp; 550 error - no such recipient".into()
        }
    );
    assert_eq!(n.status.as_deref(), Some("5.0.0"));
    assert_eq!(
        n.original_message_id.as_deref(),
        Some("9501051053.aa04167@IETF.CNR I.Reston.VA.US")
    );
}

#[test]
fn dsn_with_returned_headers_and_several_recipients() {
    let raw = "From: MAILER-DAEMON@mx.example\r\nTo: a@sender.example\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n\
        --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n\
        Final-Recipient: rfc822; One@Recipient.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n\
        Final-Recipient: rfc822;two@recipient.example\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n\
        --b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: a@sender.example\r\nMessage-ID: <orig-1@sender.example>\r\n\r\n\
        --b--\r\n";
    let all = parse_notifications(raw.as_bytes()).expect("dsn");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].outcome, Outcome::Delayed);
    assert_eq!(
        all[0].final_recipient.as_deref(),
        Some("one@recipient.example")
    );
    assert_eq!(all[1].outcome, Outcome::Delivered);
    assert!(
        all.iter()
            .all(|n| n.original_message_id.as_deref() == Some("orig-1@sender.example"))
    );
}

#[test]
fn failed_mdn_and_non_reports() {
    let raw = "To: a@b.example\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n\
        --x\r\nContent-Type: message/disposition-notification\r\n\r\n\
        Final-Recipient: rfc822;bob@recipient.example\r\nOriginal-Message-ID: <m1@sender.example>\r\n\
        Disposition: automatic-action/MDN-sent-automatically; failed\r\nFailure: recipient mailbox unknown\r\n\r\n--x--\r\n";
    let n = parse_notification(raw.as_bytes()).expect("mdn");
    assert_eq!(
        n.outcome,
        Outcome::Failed {
            reason: "failed: recipient mailbox unknown".into()
        }
    );
    assert_eq!(
        parse_notification(b"Subject: hi\r\n\r\nhello\r\n"),
        Err(MdnError::NotAReport)
    );
}

#[test]
fn built_mdn_parses_back() {
    for (disposition, fdd, outcome) in [
        (MdnDisposition::Processed, false, Outcome::Processed),
        (MdnDisposition::Dispatched, true, Outcome::Dispatched),
    ] {
        let raw = build_mdn(&MdnRequest {
            from: "bob@recipient.example",
            to: "alice@sender.example",
            original_message_id: "<m1@sender.example>",
            reporting_ua: "gateway.recipient.example; Switchboard",
            disposition,
            final_destination_delivery: fdd,
        })
        .expect("build");
        let n = parse_notification(&raw).expect("parse");
        assert_eq!(n.outcome, outcome);
        assert_eq!(n.final_destination_delivery, fdd);
        assert_eq!(n.original_message_id.as_deref(), Some("m1@sender.example"));
        assert_eq!(n.final_recipient.as_deref(), Some("bob@recipient.example"));
    }
    let bad = build_mdn(&MdnRequest {
        from: "bob@recipient.example",
        to: "alice@sender.example\r\nBcc: x@y",
        original_message_id: "m1",
        reporting_ua: "ua",
        disposition: MdnDisposition::Processed,
        final_destination_delivery: false,
    });
    assert_eq!(bad, Err(MdnError::InvalidField("to")));
}

#[test]
fn failed_mdn_names_no_content_and_keeps_its_id() {
    let req = MdnRequest {
        from: "bob@recipient.example",
        to: "alice@sender.example",
        original_message_id: "<m1@sender.example>",
        reporting_ua: "gateway.recipient.example; Switchboard",
        disposition: MdnDisposition::Failed,
        final_destination_delivery: false,
    };
    let raw = crate::mdn::build_mdn_with_id(&req, "<fixed@recipient.example>").expect("build");
    let text = String::from_utf8(raw.clone()).expect("ascii");
    assert!(
        text.contains("Message-ID: <fixed@recipient.example>\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Disposition: automatic-action/MDN-sent-automatically;failed\r\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Failure: {}\r\n", crate::mdn::FAILURE_TEXT)),
        "{text}"
    );
    let n = parse_notification(&raw).expect("parse");
    assert_eq!(
        n.outcome,
        Outcome::Failed {
            reason: format!("failed: {}", crate::mdn::FAILURE_TEXT)
        }
    );
    assert_eq!(n.original_message_id.as_deref(), Some("m1@sender.example"));
    assert_eq!(
        crate::mdn::build_mdn_with_id(&req, "two\r\nlines"),
        Err(MdnError::InvalidField("message id"))
    );
}

#[test]
fn processed_mdn_for_a_received_message() {
    let raw = crate::mdn::processed_mdn_for(
        &super::sample_message(),
        super::BOB,
        "gateway.recipient.example; Switchboard",
    )
    .expect("mdn");
    let text = String::from_utf8(raw.clone()).expect("utf8");
    assert!(text.contains(&format!("To: <{}>\r\n", super::ALICE)));
    assert!(
        !text.contains("Referral"),
        "no content of the original in the MDN"
    );
    let n = parse_notification(&raw).expect("parse");
    assert_eq!(n.outcome, Outcome::Processed);
    assert_eq!(n.original_message_id.as_deref(), Some("m1@sender.example"));
    assert_eq!(n.final_recipient.as_deref(), Some(super::BOB));
    assert_eq!(
        crate::mdn::processed_mdn_for(b"Subject: x\r\n\r\nbody", super::BOB, "ua"),
        Err(MdnError::MissingField("Message-ID"))
    );
}

#[test]
fn mdn_can_be_sealed_and_opened() {
    use super::{ALICE, BOB, pki};
    use crate::smime::{SealOptions, open, seal};
    let p = pki();
    let mdn =
        crate::mdn::processed_mdn_for(&super::sample_message(), BOB, "ua.example; Switchboard")
            .expect("mdn");
    let sealed = seal(
        &mdn,
        BOB,
        &[ALICE],
        &p.bob.cert,
        &p.bob.key,
        &[],
        std::slice::from_ref(&p.alice.cert),
        SealOptions::default(),
    )
    .expect("seal");
    let opened = open(
        &sealed,
        &[p.alice.pair()],
        &super::trust(),
        BOB,
        super::now(),
    )
    .expect("open");
    assert_eq!(
        parse_notification(&opened.inner).expect("parse").outcome,
        Outcome::Processed
    );
}
