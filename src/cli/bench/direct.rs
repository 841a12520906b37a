//! `switchboard bench --direct-messages N`: the Direct send path without the network — build
//! the message around a 100 KB C-CDA, seal it (wrap, sign SHA-256, encrypt AES-256-CBC to one
//! RSA-2048 recipient with OAEP) and SMTP-frame it (dot-stuffing, `CRLF.CRLF`) — on one
//! core, beside `openssl cms -sign | openssl cms -encrypt` on the same input (which includes
//! two process starts per message; its figure is the CLI pipeline's, not libcrypto's).
//! Prints both rates and their ratio; where procfs is there, also the CPU time per message
//! of each (our thread's; the pipeline's processes'), which a shared machine disturbs less
//! than the wall clock. A throwaway test PKI is made with the openssl CLI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use switchboard::direct::{SealOptions, seal};

pub(super) const FROM: &str = "bench@direct.north.example";
pub(super) const TO: &str = "doc@direct.south.example";

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running the openssl CLI")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn leaf(dir: &Path, name: &str, email: &str) -> Result<()> {
    let ext = format!(
        "subjectAltName=email:{email}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=bench",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

/// A C-CDA padded (with an XML comment) to exactly 100 KiB.
pub(super) fn ccda_100k() -> String {
    // HL7's published sample CCD (tests/data/README.md), built in so the installed binary
    // measures the same document wherever it runs.
    let base = include_str!("../../../tests/data/ccda/CCD-2.xml").to_string();
    let target = 100 * 1024;
    let mut doc = base;
    if doc.len() + 8 < target {
        let pad = target - doc.len() - 8;
        doc.push_str("\n<!--");
        doc.extend(std::iter::repeat_n('x', pad));
        doc.push_str("-->");
    }
    doc
}

/// SMTP DATA framing into `out` (cleared first, so a send buffer can be
/// reused): leading dots doubled, ended by `CRLF.CRLF`.
///
/// Only the places where a line starts with a dot are visited (a vectorised
/// search for `LF.`); everything between them is copied in one piece.
pub fn smtp_frame(message: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(message.len() + 64);
    if message.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut copied = 0;
    for i in memchr::memmem::find_iter(message, b"\n.") {
        // Copy through the LF, add the stuffed dot; the original dot follows.
        out.extend_from_slice(&message[copied..=i]);
        out.push(b'.');
        copied = i + 1;
    }
    out.extend_from_slice(&message[copied..]);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Our sealing identity and the recipient's certificate, from the throwaway PKI (and, for
/// the open benchmark, the recipient's key and the CA).
pub(super) struct Pki {
    pub(super) cert: X509,
    pub(super) key: PKey<Private>,
    pub(super) recipient: X509,
    pub(super) recipient_key: PKey<Private>,
    pub(super) ca: X509,
}

/// Makes a CA and two leaf identities (us, the recipient) in `d` with the openssl CLI.
pub(super) fn make_pki(d: &Path) -> Result<Pki> {
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    leaf(d, "us", FROM)?;
    leaf(d, "doc", TO)?;
    Ok(Pki {
        cert: X509::from_pem(&std::fs::read(d.join("us.pem"))?)?,
        key: PKey::private_key_from_pem(&std::fs::read(d.join("us.key"))?)?,
        recipient: X509::from_pem(&std::fs::read(d.join("doc.pem"))?)?,
        recipient_key: PKey::private_key_from_pem(&std::fs::read(d.join("doc.key"))?)?,
        ca: X509::from_pem(&std::fs::read(d.join("ca.pem"))?)?,
    })
}

/// One timed run: messages, wall-clock time, CPU time when the OS tells it.
struct Measured {
    messages: usize,
    wall: Duration,
    cpu: Option<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.wall.as_secs_f64()
    }

    /// CPU milliseconds per message.
    fn cpu_ms(&self) -> Option<f64> {
        self.cpu
            .map(|c| c.as_secs_f64() * 1000.0 / self.messages.max(1) as f64)
    }

    fn cpu_note(&self) -> String {
        self.cpu_ms()
            .map(|ms| format!(" ({ms:.2} ms CPU per message)"))
            .unwrap_or_default()
    }
}

/// Clock ticks per second of the times in `/proc/*/stat` (Linux's USER_HZ).
const USER_HZ: u64 = 100;

/// Fields of a `/proc/*/stat` line counted from 1 as in proc(5), `first` and
/// the next one summed, as CPU time. `None` where there is no procfs.
fn proc_cpu(path: &str, first: usize) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(first - 3);
    let a: u64 = fields.next()?.parse().ok()?;
    let b: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((a + b) * 1000 / USER_HZ))
}

/// CPU time (user + system) of the calling thread so far.
fn thread_cpu() -> Option<Duration> {
    proc_cpu("/proc/thread-self/stat", 14)
}

/// CPU time (user + system) of this process's reaped children (and theirs).
fn children_cpu() -> Option<Duration> {
    proc_cpu("/proc/self/stat", 16)
}

/// Runs `work` and measures it, CPU time by `cpu` (before and after).
fn measure(
    messages: usize,
    cpu: fn() -> Option<Duration>,
    work: impl FnOnce() -> Result<()>,
) -> Result<Measured> {
    let cpu_before = cpu();
    let started = Instant::now();
    work()?;
    let wall = started.elapsed();
    let cpu = cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Ok(Measured {
        messages,
        wall,
        cpu,
    })
}

/// Builds, seals and frames `messages` messages around `doc`; returns the
/// bytes put on the wire.
fn seal_loop(pki: &Pki, doc: &str, messages: usize) -> Result<usize> {
    let mut bytes = 0usize;
    let mut wire = Vec::new();
    for i in 0..messages {
        let inner = switchboard::channels::direct::compose::inner_message(
            FROM,
            TO,
            &format!("bench{i}@direct.north.example"),
            Some("Referral"),
            doc,
            &[],
        );
        let sealed = seal(
            &inner,
            FROM,
            &[TO],
            &pki.cert,
            &pki.key,
            &[],
            std::slice::from_ref(&pki.recipient),
            SealOptions::default(),
        )?;
        smtp_frame(&sealed, &mut wire);
        bytes += wire.len();
    }
    Ok(bytes)
}

/// Runs `openssl cms -sign | openssl cms -encrypt` on the same input `runs` times.
fn cli_loop(d: &Path, doc: &str, runs: usize) -> Result<()> {
    let inner = switchboard::channels::direct::compose::inner_message(
        FROM,
        TO,
        "bench-cli@direct.north.example",
        Some("Referral"),
        doc,
        &[],
    );
    std::fs::write(d.join("inner.eml"), &inner)?;
    let pipeline = "openssl cms -sign -binary -md sha256 -in inner.eml -signer us.pem -inkey us.key \
         | openssl cms -encrypt -binary -aes256 -recip doc.pem -keyopt rsa_padding_mode:oaep \
           -keyopt rsa_oaep_md:sha256 -out out.p7m";
    for _ in 0..runs {
        let status = Command::new("sh")
            .current_dir(d)
            .arg("-c")
            .arg(pipeline)
            .status()
            .context("sh")?;
        if !status.success() {
            bail!("openssl cms pipeline failed");
        }
    }
    Ok(())
}

/// Runs the benchmark with `messages` messages and prints the figures.
pub fn run(messages: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let pki = make_pki(d)?;
    let doc = ccda_100k();

    let mut bytes = 0;
    let ours = measure(messages, thread_cpu, || {
        bytes = seal_loop(&pki, &doc, messages)?;
        Ok(())
    })?;
    println!(
        "direct seal ({} KiB C-CDA, sign SHA-256 + AES-256-CBC/RSA-OAEP + SMTP framing, 1 core): \
         {messages} messages in {:.2} s = {:.0} messages/s{}, {:.0} KiB per message on the wire",
        doc.len() / 1024,
        ours.wall.as_secs_f64(),
        ours.rate(),
        ours.cpu_note(),
        bytes as f64 / messages.max(1) as f64 / 1024.0
    );

    let cli_runs = messages.clamp(1, 100);
    let cli = measure(cli_runs, children_cpu, || cli_loop(d, &doc, cli_runs))?;
    println!(
        "openssl cms -sign | openssl cms -encrypt (same input, 2 processes per message): \
         {cli_runs} messages in {:.2} s = {:.0} messages/s{}",
        cli.wall.as_secs_f64(),
        cli.rate(),
        cli.cpu_note()
    );
    let cpu_ratio = ours
        .cpu_ms()
        .zip(cli.cpu_ms())
        .filter(|(o, _)| *o > 0.0)
        .map(|(o, c)| format!(", {:.1}x per CPU second", c / o))
        .unwrap_or_default();
    println!(
        "direct seal vs the openssl CLI pipeline: {:.1}x the messages per second{cpu_ratio}",
        ours.rate() / cli.rate()
    );
    Ok(())
}

/// The sealed message the open benchmark receives: the 100 KiB C-CDA from us to the recipient.
fn sealed_message(pki: &Pki, doc: &str) -> Result<Vec<u8>> {
    let inner = switchboard::channels::direct::compose::inner_message(
        FROM,
        TO,
        "bench-open@direct.north.example",
        Some("Referral"),
        doc,
        &[],
    );
    Ok(seal(
        &inner,
        FROM,
        &[TO],
        &pki.cert,
        &pki.key,
        &[],
        std::slice::from_ref(&pki.recipient),
        SealOptions::default(),
    )?)
}

/// Accepts `raw` `messages` times in-process (decrypt, verify, policy, chain, unwrap) and
/// parses the inner message; returns the bytes of the inner messages.
fn accept_loop(pki: &Pki, raw: &[u8], messages: usize) -> Result<usize> {
    use switchboard::direct::anchors::{AnchorSet, Anchors};
    let anchors = Anchors::new(vec![AnchorSet {
        domains: Vec::new(),
        outbound: false,
        inbound: true,
        certs: vec![pki.ca.clone()],
    }]);
    let keys = [(pki.recipient.clone(), pki.recipient_key.clone())];
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut bytes = 0;
    for _ in 0..messages {
        let accepted = rt
            .block_on(switchboard_direct::inbound::accept(
                raw,
                &keys,
                &anchors,
                None,
                chrono::Utc::now(),
            ))
            .map_err(|r| anyhow::anyhow!("the bench message was refused: {r}"))?;
        let inner = switchboard_mail::parse_message(&accepted.opened.inner)
            .context("the inner message does not parse")?;
        bytes += inner.body_text(0).map_or(0, |b| b.len());
    }
    Ok(bytes)
}

/// Runs `openssl cms -decrypt | openssl cms -verify` on `msg.eml` `runs` times.
fn cli_open_loop(d: &Path, runs: usize) -> Result<()> {
    let pipeline = "openssl cms -decrypt -in msg.eml -recip doc.pem -inkey doc.key \
         | openssl cms -verify -CAfile ca.pem -out /dev/null 2>/dev/null";
    for _ in 0..runs {
        let status = Command::new("sh")
            .current_dir(d)
            .arg("-c")
            .arg(pipeline)
            .status()
            .context("sh")?;
        if !status.success() {
            bail!("openssl cms -decrypt | -verify pipeline failed");
        }
    }
    Ok(())
}

/// `--direct-open N`: accepting a sealed 100 KiB C-CDA message in-process (decrypt, verify,
/// policy, chain, unwrap, parse) beside `openssl cms -decrypt | openssl cms -verify` on the
/// same input in the same run.
pub fn run_open(messages: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let pki = make_pki(d)?;
    let doc = ccda_100k();
    let raw = sealed_message(&pki, &doc)?;
    std::fs::write(d.join("msg.eml"), &raw)?;

    let mut bytes = 0;
    let ours = measure(messages, thread_cpu, || {
        bytes = accept_loop(&pki, &raw, messages)?;
        Ok(())
    })?;
    println!(
        "direct open ({} KiB C-CDA, {} KiB sealed; decrypt AES-256-CBC/RSA-OAEP + verify SHA-256 \
         + v1.3 policy + chain + unwrap + parse, 1 core): {messages} messages in {:.2} s = \
         {:.0} messages/s{}",
        doc.len() / 1024,
        raw.len() / 1024,
        ours.wall.as_secs_f64(),
        ours.rate(),
        ours.cpu_note(),
    );
    if bytes == 0 {
        bail!("the accepted messages had no body");
    }

    let cli_runs = messages.clamp(1, 100);
    let cli = measure(cli_runs, children_cpu, || cli_open_loop(d, cli_runs))?;
    println!(
        "openssl cms -decrypt | openssl cms -verify (same input, 2 processes per message): \
         {cli_runs} messages in {:.2} s = {:.0} messages/s{}",
        cli.wall.as_secs_f64(),
        cli.rate(),
        cli.cpu_note()
    );
    let cpu_ratio = ours
        .cpu_ms()
        .zip(cli.cpu_ms())
        .filter(|(o, _)| *o > 0.0)
        .map(|(o, c)| format!(", {:.1}x per CPU second", c / o))
        .unwrap_or_default();
    println!(
        "direct open vs the openssl CLI pipeline: {:.1}x the messages per second{cpu_ratio}",
        ours.rate() / cli.rate()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn framing_stuffs_dots() {
        let frame = |m: &[u8]| {
            let mut out = b"stale".to_vec();
            super::smtp_frame(m, &mut out);
            out
        };
        assert_eq!(frame(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(
            frame(b".a\r\n.\r\n..\r\nb"),
            b"..a\r\n..\r\n...\r\nb\r\n.\r\n"
        );
        assert_eq!(frame(b""), b"\r\n.\r\n");
    }

    #[test]
    fn proc_cpu_reads_this_thread() {
        if std::path::Path::new("/proc/thread-self/stat").exists() {
            assert!(super::thread_cpu().is_some());
            assert!(super::children_cpu().is_some());
        }
    }
}
