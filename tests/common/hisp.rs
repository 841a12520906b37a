//! Postfix + Dovecot as a Direct HISP (shared by the Direct tests): our mailbox `US` and a
//! peer's `DOC`, each on its own domain.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::TestDb;
use super::mail::{Dovecot, DovecotOptions, Postfix, imap_messages, tls_certificate};

/// Our Direct address (the connector's).
pub const US: &str = "clinic@direct.north.example";
/// The peer's Direct address.
pub const DOC: &str = "doc@direct.south.example";
const WAIT: Duration = Duration::from_secs(30);

pub const US_PASSWORD: &str = "clinic-secret";
pub const DOC_PASSWORD: &str = "doc-secret";

/// The HISP: Dovecot (IMAP with STARTTLS, LMTP, SASL) holding our mailbox and the recipient's,
/// and a private Postfix (STARTTLS required, AUTH) delivering both domains to it.
pub struct Hisp {
    pub imap: Dovecot,
    pub postfix: Postfix,
    pub cert: PathBuf,
    _certs: tempfile::TempDir,
}

impl Hisp {
    pub fn start() -> Self {
        let certs = tempfile::tempdir().expect("tempdir");
        let (cert, key) = tls_certificate(certs.path());
        let imap = Dovecot::start_options(DovecotOptions {
            users: vec![(US, US_PASSWORD), (DOC, DOC_PASSWORD)],
            tls: Some((&cert, &key)),
            lmtp: true,
        });
        let postfix = Postfix::start(
            &imap,
            &["direct.north.example", "direct.south.example"],
            &cert,
            &key,
        );
        Hisp {
            imap,
            postfix,
            cert,
            _certs: certs,
        }
    }

    /// The connector's `smtp` (STARTTLS + AUTH to Postfix) and `mailbox` (STARTTLS to Dovecot,
    /// polled every `poll_secs` without IDLE) settings.
    pub fn connector(&self, db: &TestDb, poll_secs: u64) -> (String, String) {
        let password = db.dir.path().join("hisp-password");
        std::fs::write(&password, US_PASSWORD).expect("secret");
        let common = format!(
            "host = \"127.0.0.1\", tls = \"starttls\", ca_certificate = \"{}\", \
             username = \"{US}\", password = {{ file = \"{}\" }}",
            self.cert.display(),
            password.display()
        );
        (
            format!(
                "smtp = {{ {common}, port = {}, timeout_secs = 10 }}\n",
                self.postfix.port
            ),
            format!(
                "mailbox = {{ {common}, port = {}, poll_interval_secs = {poll_secs} }}\n",
                self.imap.port
            ),
        )
    }

    /// The recipient's mailbox once it holds `count` messages (read over IMAP).
    pub fn doc_inbox(&self, count: usize) -> Vec<Vec<u8>> {
        let started = Instant::now();
        loop {
            let messages = imap_messages(self.imap.port, DOC, DOC_PASSWORD);
            if messages.len() >= count {
                return messages;
            }
            assert!(
                started.elapsed() < WAIT,
                "{} of {count} messages reached the recipient's mailbox:\n{}",
                messages.len(),
                self.postfix.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The recipient's side sends a notification to us through the HISP (STARTTLS, AUTH).
    pub fn notify_us(&self, raw: &str) {
        self.postfix
            .submit(&self.cert, DOC, DOC_PASSWORD, DOC, US, raw.as_bytes());
    }
}
