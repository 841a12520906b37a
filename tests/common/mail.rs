//! Real mail peers for the Direct tests (copied from `tests/email.rs`, which keeps its own so
//! that the two branches merge cleanly): the aiosmtpd sink (`tests/peers/smtp_sink.py`) and
//! Debian's dovecot on loopback ports, started without systemd.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A child process killed when dropped.
pub struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts the SMTP sink on `port`, writing into `dir`, once it says READY.
pub fn start_sink(port: u16, dir: &Path, flags: &[&str]) -> Peer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtp_sink.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd)");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("sink output");
    assert_eq!(line.trim(), "READY", "the SMTP sink did not start");
    Peer(child)
}

/// Messages the sink accepted: (envelope, raw bytes), in arrival order.
pub fn received(dir: &Path) -> Vec<(Value, Vec<u8>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|eml| {
            let meta = std::fs::read(eml.with_extension("json")).expect("envelope");
            (
                serde_json::from_slice(&meta).expect("json"),
                std::fs::read(&eml).expect("eml"),
            )
        })
        .collect()
}

/// Dovecot on a loopback port, from a generated config in a temp dir, without systemd.
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// IMAPS (implicit TLS), when started with a certificate.
    pub tls_port: u16,
}

impl Dovecot {
    pub fn start(password: &str) -> Self {
        Self::start_with(password, None)
    }

    /// With `tls` (certificate, key): STARTTLS on `port` and implicit TLS on `tls_port`.
    pub fn start_with(password: &str, tls: Option<(&Path, &Path)>) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Dovecot's own processes run as its users when started as root; they need to reach
        // the passwd file and the maildir.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let maildir = root.join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        for path in [
            &maildir,
            &maildir.join("new"),
            &maildir.join("cur"),
            &maildir.join("tmp"),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        std::fs::write(
            root.join("passwd"),
            format!("bounces:{{PLAIN}}{password}\n"),
        )
        .expect("passwd");
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let (internal, login, mail_user) = if is_root {
            (
                "dovecot".to_string(),
                "dovenull".to_string(),
                "dovecot".to_string(),
            )
        } else {
            let me = std::env::var("USER").unwrap_or_else(|_| "nobody".into());
            (me.clone(), me.clone(), me)
        };
        let port = free_port();
        let tls_port = if tls.is_some() { free_port() } else { 0 };
        let ssl = match tls {
            Some((cert, key)) => format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                cert.display(),
                key.display()
            ),
            None => "ssl = no\n".to_string(),
        };
        let r = root.display();
        let conf = format!(
            "base_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/dovecot.log\n\
             protocols = imap\nlisten = 127.0.0.1\n{ssl}disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n\
             default_internal_user = {internal}\ndefault_internal_group = {internal}\n\
             default_login_user = {login}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {r}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={mail_user} gid={mail_user} home={r}/home\n}}\n\
             mail_location = maildir:{r}/Maildir\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
               inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n"
        );
        std::fs::write(root.join("dovecot.conf"), conf).expect("conf");
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(root.join("dovecot.conf"))
            .status()
            .expect("dovecot (apt-get install dovecot-imapd)");
        assert!(status.success(), "dovecot did not start");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < WAIT, "dovecot not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Dovecot {
            dir,
            port,
            tls_port,
        }
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    /// Delivers `raw` into the mailbox as a new message, as an MDA would.
    pub fn deliver(&self, name: &str, raw: &str) {
        let tmp = self.maildir().join("tmp").join(name);
        std::fs::write(&tmp, raw).expect("write mail");
        std::fs::rename(&tmp, self.maildir().join("new").join(name)).expect("deliver");
    }

    /// The IMAP flags of the message delivered as `name` (maildir `:2,<flags>`), if any.
    pub fn flags(&self, name: &str) -> Option<String> {
        for sub in ["new", "cur"] {
            for entry in std::fs::read_dir(self.maildir().join(sub)).ok()?.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if file == name {
                    return Some(String::new());
                }
                if let Some(flags) = file.strip_prefix(&format!("{name}:2,")) {
                    return Some(flags.to_string());
                }
            }
        }
        None
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("dovecot.log"));
            eprintln!("dovecot log:\n{}", log.unwrap_or_default());
        }
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .arg("stop")
            .status();
    }
}
