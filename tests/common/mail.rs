//! Real mail peers for the email and Direct tests: the aiosmtpd sink
//! (`tests/peers/smtp_sink.py`), Debian's Dovecot and a private Postfix on loopback ports,
//! started without systemd. The sink binds a port the test holds until it listens
//! ([`Reserved`]); Dovecot and Postfix cannot share a port, so they get a [`free_port`] (racy).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ports::{Reserved, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// A peer's process, killed when dropped.
pub struct Peer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts the SMTP sink on a port of its own, writing into `dir`, once it says READY.
pub fn start_sink(dir: &Path, flags: &[&str]) -> Peer {
    start_sink_on(Reserved::new(), dir, flags)
}

/// Starts the SMTP sink on `port` (held until then: a client was refused there so far),
/// writing into `dir`, once it says READY.
pub fn start_sink_on(port: Reserved, dir: &Path, flags: &[&str]) -> Peer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtp_sink.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("--port")
        .arg(port.port().to_string())
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
    Peer {
        child,
        port: port.port(),
    }
}

/// Messages the sink accepted: (envelope, raw bytes), in arrival order.
pub fn received(dir: &Path) -> Vec<(Value, Vec<u8>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                // `.tmpN.eml` is the sink still writing (it renames when done).
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
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
    /// LMTP on loopback TCP, when started with `lmtp`.
    pub lmtp_port: u16,
    /// The first user's name: `deliver` and `flags` work on this user's mailbox.
    user: String,
}

/// What a [`Dovecot`] serves.
pub struct DovecotOptions<'a> {
    /// (user, password); each has a maildir of its own.
    pub users: Vec<(&'a str, &'a str)>,
    /// (certificate, key): STARTTLS on `port` and implicit TLS on `tls_port`.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// LMTP on `lmtp_port` (Debian dovecot-lmtpd) and the SASL socket `auth-client` for an MTA.
    pub lmtp: bool,
}

impl Dovecot {
    /// One user, `bounces`.
    pub fn start(password: &str) -> Self {
        Self::start_with(password, None)
    }

    /// One user, `bounces`; with `tls` (certificate, key): STARTTLS on `port` and implicit TLS
    /// on `tls_port`.
    pub fn start_with(password: &str, tls: Option<(&Path, &Path)>) -> Self {
        Self::start_options(DovecotOptions {
            users: vec![("bounces", password)],
            tls,
            lmtp: false,
        })
    }

    pub fn start_options(options: DovecotOptions<'_>) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Dovecot's own processes run as its users when started as root; they need to reach
        // the passwd file and the maildirs.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut passwd = String::new();
        for (user, password) in &options.users {
            let maildir = root.join("mail").join(user);
            let mut dirs = vec![
                root.join("mail"),
                root.join("home"),
                root.join("home").join(user),
            ];
            dirs.push(maildir.clone());
            for sub in ["new", "cur", "tmp"] {
                dirs.push(maildir.join(sub));
            }
            for path in &dirs {
                std::fs::create_dir_all(path).expect("maildir");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
            }
            passwd.push_str(&format!("{user}:{{PLAIN}}{password}\n"));
        }
        std::fs::write(root.join("passwd"), passwd).expect("passwd");
        let is_root = is_root();
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
        // Dovecot cannot share a held port: with `reuse_port = yes` every login process
        // listens on a socket of its own beside the master's, and a connection the kernel
        // hands to the master's socket is never answered. Free ports, then (racy).
        let port = free_port();
        let tls_port = if options.tls.is_some() {
            free_port()
        } else {
            0
        };
        let lmtp_port = if options.lmtp { free_port() } else { 0 };
        let ssl = match options.tls {
            Some((cert, key)) => format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                cert.display(),
                key.display()
            ),
            None => "ssl = no\n".to_string(),
        };
        let r = root.display();
        let (protocols, lmtp) = if options.lmtp {
            (
                "imap lmtp",
                format!(
                    "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp_port}\n  }}\n\
                     unix_listener lmtp {{\n    mode = 0\n  }}\n}}\n\
                     service auth {{\n  unix_listener auth-client {{\n    mode = 0666\n  }}\n}}\n"
                ),
            )
        } else {
            ("imap", String::new())
        };
        let conf = format!(
            "base_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/dovecot.log\n\
             protocols = {protocols}\nlisten = 127.0.0.1\n{ssl}disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n\
             default_internal_user = {internal}\ndefault_internal_group = {internal}\n\
             default_login_user = {login}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {r}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={mail_user} gid={mail_user} home={r}/home/%u\n}}\n\
             mail_location = maildir:{r}/mail/%u\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
               inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n{lmtp}"
        );
        std::fs::write(root.join("dovecot.conf"), conf).expect("conf");
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(root.join("dovecot.conf"))
            .status()
            .expect("dovecot (apt-get install dovecot-imapd)");
        assert!(status.success(), "dovecot did not start");
        let started = Instant::now();
        for p in [port, tls_port, lmtp_port].into_iter().filter(|p| *p != 0) {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(started.elapsed() < WAIT, "dovecot not listening");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Dovecot {
            dir,
            port,
            tls_port,
            lmtp_port,
            user: options
                .users
                .first()
                .map(|u| u.0.to_string())
                .unwrap_or_default(),
        }
    }

    /// The SASL socket an MTA authenticates through (`smtpd_sasl_type = dovecot`).
    pub fn auth_socket(&self) -> PathBuf {
        self.dir.path().join("run").join("auth-client")
    }

    /// The first user's maildir.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail").join(&self.user)
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

/// A private Debian Postfix instance on a loopback port, started without systemd
/// (`postfix -c <dir>/etc start`, its own queue and data directories): STARTTLS required with
/// `cert`/`key`, AUTH (PLAIN/LOGIN) through the Dovecot's SASL socket, and mail for `domains`
/// delivered to that Dovecot over LMTP. Postfix's master must run as root. Stopped on drop.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Postfix {
    pub fn start(dovecot: &Dovecot, domains: &[&str], cert: &Path, key: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        assert!(
            is_root(),
            "the Postfix tests start a private Postfix, whose master runs as root"
        );
        assert!(dovecot.lmtp_port != 0, "dovecot was started without LMTP");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for sub in ["etc", "spool", "data"] {
            std::fs::create_dir_all(root.join(sub)).expect("postfix dirs");
        }
        // The data directory (master.lock, TLS caches) belongs to the mail owner.
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(root.join("data"))
            .status()
            .expect("chown");
        assert!(chown.success(), "no postfix user (apt-get install postfix)");
        let port = free_port();
        let r = root.display();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             config_directory = {r}/etc\nqueue_directory = {r}/spool\ndata_directory = {r}/data\n\
             maillog_file = {r}/postfix.log\nmaillog_file_prefixes = {r}\n\
             mail_owner = postfix\nsetgid_group = postdrop\n\
             myhostname = hisp.test\nmydomain = hisp.test\nmyorigin = hisp.test\nmydestination =\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
             alias_maps =\nalias_database =\nlocal_recipient_maps =\nrelayhost =\n\
             virtual_mailbox_domains = {domains}\n\
             virtual_transport = lmtp:inet:127.0.0.1:{lmtp}\n\
             smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {auth}\n\
             smtpd_sasl_authenticated_header = yes\n\
             smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n\
             smtpd_tls_security_level = encrypt\nsmtpd_tls_auth_only = yes\n\
             smtpd_tls_received_header = yes\n\
             smtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
             smtpd_recipient_restrictions = permit_sasl_authenticated, reject\n",
            domains = domains.join(" "),
            lmtp = dovecot.lmtp_port,
            auth = dovecot.auth_socket().display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).expect("main.cf");
        // Debian's master.cf without chroot, postscreen or local delivery.
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup    unix n - n 60 1 pickup\n\
             cleanup   unix n - n - 0 cleanup\n\
             qmgr      unix n - n 300 1 qmgr\n\
             tlsmgr    unix - - n 1000? 1 tlsmgr\n\
             rewrite   unix - - n - - trivial-rewrite\n\
             bounce    unix - - n - 0 bounce\n\
             defer     unix - - n - 0 bounce\n\
             trace     unix - - n - 0 bounce\n\
             verify    unix - - n - 1 verify\n\
             flush     unix n - n 1000? 0 flush\n\
             proxymap  unix - - n - - proxymap\n\
             smtp      unix - - n - - smtp\n\
             relay     unix - - n - - smtp\n\
             showq     unix n - n - - showq\n\
             error     unix - - n - - error\n\
             retry     unix - - n - - error\n\
             discard   unix - - n - - discard\n\
             lmtp      unix - - n - - lmtp\n\
             anvil     unix - - n - 1 anvil\n\
             scache    unix - - n - 1 scache\n\
             postlog   unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(root.join("etc/master.cf"), master_cf).expect("master.cf");
        let postfix = Postfix { dir, port };
        let status = Command::new("postfix")
            .arg("-c")
            .arg(postfix.dir.path().join("etc"))
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("postfix (apt-get install postfix)");
        assert!(
            status.success(),
            "postfix did not start:\n{}",
            postfix.log()
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < WAIT,
                "postfix not listening:\n{}",
                postfix.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        postfix
    }

    /// Postfix's log (`maillog_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
    }

    /// Submits `raw` as `user` (STARTTLS verified against `ca`, AUTH) with the independent
    /// client in `tests/peers/mail_client.py`.
    pub fn submit(&self, ca: &Path, user: &str, password: &str, from: &str, to: &str, raw: &[u8]) {
        use std::io::Write;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mail_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("submit")
            .args(["--port", &self.port.to_string()])
            .arg("--cafile")
            .arg(ca)
            .args(["--user", user, "--password", password])
            .args(["--mail-from", from, "--rcpt", to])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(raw)
            .expect("message to the client");
        let out = child.wait_with_output().expect("mail client");
        assert!(
            out.status.success(),
            "submission refused: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("postfix log:\n{}", self.log());
        }
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Every message in `user`'s INBOX on `port`, read over IMAP by the independent client in
/// `tests/peers/mail_client.py`.
pub fn imap_messages(port: u16, user: &str, password: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mail_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("fetch")
        .args(["--port", &port.to_string()])
        .args(["--user", user, "--password", password])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "IMAP fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<String> = serde_json::from_slice(&out.stdout).expect("json");
    list.iter()
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .expect("base64")
        })
        .collect()
}

/// A self-signed certificate for 127.0.0.1 (the openssl CLI), doubling as its own CA:
/// (certificate, key) in `dir`.
pub fn tls_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
