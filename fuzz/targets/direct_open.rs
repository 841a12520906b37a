//! Inbound Direct S/MIME: `direct::open` on a whole message, with bob@recipient.example's key
//! (`fuzz/data/bob.pem`) and the fuzz CA as the only anchor, at a fixed time. The seeds are
//! messages alice@sender.example really encrypted to bob (`fuzz/data/seeds.sh`), so mutations
//! that keep the envelope intact get past decryption into signature, policy and unwrapping.

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use switchboard_direct::{TrustStore, open};

struct Fixture {
    keys: Vec<(X509, PKey<Private>)>,
    trust: TrustStore,
    now: DateTime<Utc>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let cert = X509::from_pem(include_bytes!("../data/bob.pem")).expect("bob.pem");
    let key = PKey::private_key_from_pem(include_bytes!("../data/bob.key")).expect("bob.key");
    let ca = X509::from_pem(include_bytes!("../data/ca.pem")).expect("ca.pem");
    Fixture {
        keys: vec![(cert, key)],
        trust: TrustStore::from_anchors(vec![ca]),
        now: Utc
            .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
            .single()
            .expect("a date"),
    }
});

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    let f = &*FIXTURE;
    if let Ok(opened) = open(data, &f.keys, &f.trust, "alice@sender.example", f.now) {
        assert!(
            !opened.signer_subjects.is_empty(),
            "accepted without a good signer"
        );
        // What the receiver does next: the processed MDN for the inner message.
        let _ = switchboard_mail::mdn::processed_mdn_for(
            &opened.inner,
            "bob@recipient.example",
            "gw.example; Switchboard",
        );
    }
}
