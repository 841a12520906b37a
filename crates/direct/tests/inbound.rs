//! `switchboard_direct::inbound::accept` against the `openssl` CLI as the sending STA: the
//! ciphers and key transports a HISP may use, wrapped and unwrapped messages, several signers,
//! the v1.3 negative matrix (each refused with its check), and signer revocation by a CRL from
//! `openssl ca -gencrl` served over HTTP on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::*;
use switchboard_direct::Check;
use switchboard_direct::anchors::{AnchorSet, Anchors};
use switchboard_direct::discovery::fetch::{Fetch, FetchError, Purpose};
use switchboard_direct::discovery::options::{CrlMode, RevocationConfig};
use switchboard_direct::discovery::revocation::Fetcher;
use switchboard_direct::inbound::{Accepted, Refusal, accept};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn bob_keys() -> Vec<(
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
)> {
    // Two keys, as during a rollover: the new one first.
    vec![pki().id("bob_next").pair(), pki().id("bob").pair()]
}

async fn run(raw: &[u8]) -> Result<Accepted, Refusal> {
    accept(raw, &bob_keys(), &pki().anchors(), None, Utc::now()).await
}

async fn refused(raw: &[u8]) -> Refusal {
    match run(raw).await {
        Ok(a) => panic!("accepted: {:?}", a.opened.verdicts),
        Err(r) => r,
    }
}

fn alice() -> &'static Ident {
    pki().id("alice")
}

// ---------------------------------------------------------------- positive

#[tokio::test]
async fn cli_ciphers_and_key_transports_are_accepted() -> TestResult {
    let inner = inner_message(ALICE);
    let cases: [(&str, &[&str], &str); 6] = [
        ("-aes-128-cbc", &[], "AES-128-CBC"),
        ("-aes-256-cbc", &[], "AES-256-CBC"),
        ("-aes-128-gcm", &[], "AES-128-GCM"),
        ("-aes-256-gcm", &[], "AES-256-GCM"),
        ("-aes-128-cbc", &["rsa_padding_mode:oaep"], "AES-128-CBC"),
        (
            "-aes-256-cbc",
            &["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
            "AES-256-CBC",
        ),
    ];
    for (cipher, keyopts, name) in cases {
        let dir = tempfile::tempdir()?;
        sign(dir.path(), &wrapped(&inner), &[alice()], "sha256");
        let raw = encrypt(dir.path(), pki().id("bob"), cipher, keyopts, ALICE);
        let ok = run(&raw)
            .await
            .map_err(|r| format!("{cipher} {keyopts:?}: {r}"))?;
        assert_eq!(ok.opened.cipher.to_string(), name);
        assert_eq!(ok.opened.inner, inner, "{cipher} {keyopts:?}");
        assert!(ok.opened.wrapped);
        assert_eq!(ok.sender, ALICE);
        assert_eq!(ok.signers.len(), 1);
        assert_eq!(ok.signers[0].to_der()?, alice().cert().to_der()?);
    }
    Ok(())
}

#[tokio::test]
async fn message_to_the_rollover_key_is_accepted() -> TestResult {
    let dir = tempfile::tempdir()?;
    sign(
        dir.path(),
        &wrapped(&inner_message(ALICE)),
        &[alice()],
        "sha256",
    );
    let raw = encrypt(dir.path(), pki().id("bob_next"), "-aes-256-cbc", &[], ALICE);
    assert_eq!(run(&raw).await?.opened.inner, inner_message(ALICE));
    Ok(())
}

#[tokio::test]
async fn unwrapped_and_encoded_wrappings_are_accepted() -> TestResult {
    use base64::Engine;
    let inner = inner_message(ALICE);

    // Unwrapped: the outer headers plus the signed entity.
    let entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nunwrapped body\r\n";
    let ok = run(&sealed(entity, &[alice()], "sha256", "-aes-128-cbc", ALICE)).await?;
    assert!(!ok.opened.wrapped);
    let text = String::from_utf8(ok.opened.inner)?;
    assert!(text.contains(&format!("From: {ALICE}")), "{text}");
    assert!(text.ends_with("\r\n\r\nunwrapped body\r\n"), "{text}");

    // message/rfc822 in base64.
    let mut entity =
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&inner);
    for chunk in b64.as_bytes().chunks(76) {
        entity.extend_from_slice(chunk);
        entity.extend_from_slice(b"\r\n");
    }
    let ok = run(&sealed(
        &entity,
        &[alice()],
        "sha256",
        "-aes-256-cbc",
        ALICE,
    ))
    .await?;
    assert!(ok.opened.wrapped);
    assert_eq!(ok.opened.inner, inner);

    // message/rfc822 in quoted-printable (a soft line break in the body).
    let mut entity =
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            .to_vec();
    let text = String::from_utf8(inner.clone())?.replace("please see", "please =\r\nsee");
    entity.extend_from_slice(text.as_bytes());
    let ok = run(&sealed(
        &entity,
        &[alice()],
        "sha256",
        "-aes-256-cbc",
        ALICE,
    ))
    .await?;
    assert_eq!(ok.opened.inner, inner);

    // The nhind RI's base64-wrapped vector, signed by a domain-bound certificate.
    let vector = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/direct/messages/nhind-Wrapped_Base64.eml");
    let raw = std::fs::read(vector)?;
    let raw = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&raw);
    let toby = "toby@nhind.hsgincubator.com";
    let ok = run(&sealed(
        raw,
        &[pki().id("toby")],
        "sha256",
        "-aes-128-cbc",
        toby,
    ))
    .await?;
    assert!(ok.opened.wrapped);
    let text = String::from_utf8(ok.opened.inner)?;
    assert!(
        text.contains("Subject: This message has a base64 internal message"),
        "{text}"
    );
    assert_eq!(ok.sender, toby);
    Ok(())
}

#[tokio::test]
async fn domain_bound_signer_is_accepted() -> TestResult {
    let raw = sealed(
        &wrapped(&inner_message(ALICE)),
        &[pki().id("alice_domain")],
        "sha256",
        "-aes-128-cbc",
        ALICE,
    );
    assert_eq!(run(&raw).await?.signers.len(), 1);
    Ok(())
}

#[tokio::test]
async fn one_good_signer_of_two_suffices() -> TestResult {
    let raw = sealed(
        &wrapped(&inner_message(ALICE)),
        &[pki().id("alice_expired"), alice()],
        "sha256",
        "-aes-128-cbc",
        ALICE,
    );
    let ok = run(&raw).await?;
    assert_eq!(ok.signers.len(), 1);
    assert_eq!(ok.signers[0].to_der()?, alice().cert().to_der()?);
    assert_eq!(ok.opened.signer_subjects, vec!["CN=alice".to_string()]);
    let failed: Vec<_> = ok
        .opened
        .verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(|v| (v.check, v.signer))
        .collect();
    // The expired signer (its index is its place in the DER SET of SignerInfos) fails validity.
    let expired = failed.first().and_then(|(_, s)| *s);
    assert!(failed.contains(&(Check::Validity, expired)), "{failed:?}");
    assert!(failed.iter().all(|(_, s)| *s == expired), "{failed:?}");
    Ok(())
}

// ---------------------------------------------------------------- negative

async fn assert_refused(raw: &[u8], check: Check, what: &str) {
    let r = refused(raw).await;
    assert_eq!(r.check, check, "{what}: {r}");
    assert!(!r.retryable, "{what}");
    assert!(r.to_string().starts_with(&format!("{check}: ")), "{r}");
    assert!(
        !r.reason.contains(ALICE),
        "{what}: reason names an address: {r}"
    );
}

fn from_alice(signer: &Ident, md: &str, cipher: &str) -> Vec<u8> {
    sealed(
        &wrapped(&inner_message(ALICE)),
        &[signer],
        md,
        cipher,
        ALICE,
    )
}

#[tokio::test]
async fn negative_matrix() {
    let p = pki();
    assert_refused(
        &from_alice(p.id("alice_expired"), "sha256", "-aes-128-cbc"),
        Check::Validity,
        "expired",
    )
    .await;
    assert_refused(
        &from_alice(p.id("alice_untrusted"), "sha256", "-aes-128-cbc"),
        Check::Chain,
        "untrusted",
    )
    .await;
    assert_refused(
        &from_alice(alice(), "sha1", "-aes-128-cbc"),
        Check::SignerDigest,
        "SHA-1 digest",
    )
    .await;
    assert_refused(
        &from_alice(p.id("alice_sha1_cert"), "sha256", "-aes-128-cbc"),
        Check::CertificateDigest,
        "SHA-1-signed certificate",
    )
    .await;
    assert_refused(
        &from_alice(alice(), "sha256", "-des3"),
        Check::ContentCipher,
        "3DES",
    )
    .await;
    assert_refused(
        &from_alice(p.id("alice_1024"), "sha256", "-aes-128-cbc"),
        Check::KeyStrength,
        "1024-bit",
    )
    .await;
    assert_refused(
        &from_alice(p.id("alice_dn_only"), "sha256", "-aes-128-cbc"),
        Check::AddressBinding,
        "subject-only binding",
    )
    .await;
    // The sender is alice, the signer carol.
    assert_refused(
        &from_alice(p.id("carol"), "sha256", "-aes-128-cbc"),
        Check::AddressBinding,
        "From not bound to the signer",
    )
    .await;
    // Signed by alice, but the original message is from carol.
    assert_refused(
        &sealed(
            &wrapped(&inner_message(CAROL)),
            &[alice()],
            "sha256",
            "-aes-128-cbc",
            ALICE,
        ),
        Check::FromHeader,
        "inner From is not the sender",
    )
    .await;
}

#[tokio::test]
async fn weak_intermediate_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = pki();
    sign_carrying(
        dir.path(),
        &wrapped(&inner_message(ALICE)),
        &[p.id("alice_weak_sub")],
        Some(&p.weak_sub),
        "sha256",
    );
    let raw = encrypt(dir.path(), p.id("bob"), "-aes-128-cbc", &[], ALICE);
    let r = refused(&raw).await;
    assert_eq!(r.check, Check::KeyStrength, "{r}");
    assert!(r.reason.contains("1024"), "{r}");
    // The path itself is fine: only the v1.3 rule refuses it.
    assert!(
        r.verdicts
            .iter()
            .any(|v| v.check == Check::Chain && v.passed())
    );
    Ok(())
}

#[tokio::test]
async fn tampered_content_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    sign(
        dir.path(),
        &wrapped(&inner_message(ALICE)),
        &[alice()],
        "sha256",
    );
    let signed = std::fs::read_to_string(dir.path().join("signed.eml"))?;
    assert!(signed.contains("please see the referral"));
    std::fs::write(
        dir.path().join("signed.eml"),
        signed.replace("please see the referral", "please see the REFERRAL"),
    )?;
    let raw = encrypt(dir.path(), pki().id("bob"), "-aes-128-cbc", &[], ALICE);
    assert_refused(&raw, Check::Signature, "tampered").await;
    Ok(())
}

#[tokio::test]
async fn not_encrypted_to_us_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    sign(
        dir.path(),
        &wrapped(&inner_message(ALICE)),
        &[alice()],
        "sha256",
    );
    let raw = encrypt(dir.path(), pki().id("carol"), "-aes-128-cbc", &[], ALICE);
    assert_refused(&raw, Check::Decrypt, "not encrypted to us").await;

    // Signed only: not encrypted at all.
    let signed = std::fs::read(dir.path().join("signed.eml"))?;
    let mut raw = format!("From: {ALICE}\r\nTo: {BOB}\r\nSubject: x\r\n").into_bytes();
    raw.extend_from_slice(&signed);
    assert_refused(&raw, Check::NotEncrypted, "signed only").await;
    assert_refused(b"\x00\x01 not a message", Check::Malformed, "garbage").await;
    Ok(())
}

#[tokio::test]
async fn only_inbound_anchors_for_the_senders_domain_count() -> TestResult {
    let raw = from_alice(alice(), "sha256", "-aes-128-cbc");
    let set = |domains: Vec<String>, inbound| AnchorSet {
        domains,
        outbound: true,
        inbound,
        certs: vec![pki().ca.cert()],
    };
    let now = Utc::now();
    for (anchors, ok) in [
        (
            Anchors::new(vec![set(vec!["sender.example".into()], true)]),
            true,
        ),
        (
            Anchors::new(vec![set(vec!["other.example".into()], true)]),
            false,
        ),
        (Anchors::new(vec![set(Vec::new(), false)]), false),
    ] {
        let res = accept(&raw, &bob_keys(), &anchors, None, now).await;
        match (res, ok) {
            (Ok(_), true) => {}
            (Err(r), false) => assert_eq!(r.check, Check::Chain, "{r}"),
            (res, _) => panic!("unexpected: {:?}", res.map(|a| a.sender)),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- revocation

/// A real HTTP/1.0 server on loopback serving the files of `dir`; counts requests.
fn serve(dir: PathBuf) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let answer = match std::fs::read(dir.join(path)) {
                Ok(body) if !path.contains("..") && !path.is_empty() => {
                    let mut a = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    a.extend_from_slice(&body);
                    a
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = s.write_all(&answer);
        }
    });
    (port, hits)
}

/// The daemon's `FetchPolicy` is tested in the daemon; here a plain HTTP/1.0 GET to loopback.
#[derive(Debug)]
struct LoopbackGet;

fn http_get(url: &str) -> Result<Vec<u8>, FetchError> {
    let u = url::Url::parse(url).map_err(|_| FetchError::Url)?;
    let (host, port) = (
        u.host_str().unwrap_or("").to_string(),
        u.port().unwrap_or(80),
    );
    let transport = |reason: String| FetchError::Transport {
        host: host.clone(),
        port,
        reason,
    };
    if host != "127.0.0.1" {
        return Err(FetchError::Url);
    }
    let addr = format!("{host}:{port}")
        .parse()
        .map_err(|_| FetchError::Url)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| transport(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| transport(e.to_string()))?;
    write!(s, "GET {} HTTP/1.0\r\nHost: {host}\r\n\r\n", u.path())
        .map_err(|e| transport(e.to_string()))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| transport(e.to_string()))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| transport("no header end".into()))?;
    let status: u16 = String::from_utf8_lossy(&answer[..split])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(FetchError::Status { host, port, status });
    }
    Ok(answer[split + 4..].to_vec())
}

#[async_trait::async_trait]
impl Fetch for LoopbackGet {
    async fn get(&self, url: &str, _purpose: Purpose) -> Result<Vec<u8>, FetchError> {
        let url = url.to_string();
        tokio::task::spawn_blocking(move || http_get(&url))
            .await
            .map_err(|_| FetchError::Url)?
    }

    fn check_ldap(
        &self,
        _domain: &str,
        _host: &str,
        _port: u16,
        _ips: &[std::net::IpAddr],
    ) -> Result<(), FetchError> {
        Err(FetchError::Url)
    }
}

fn fetcher(crl: CrlMode, inbound_crl: CrlMode) -> Fetcher {
    Fetcher::new(
        RevocationConfig {
            aia: false,
            crl,
            inbound_crl,
            timeout_secs: 2,
            cache_secs: 600,
        },
        Arc::new(LoopbackGet),
    )
}

#[tokio::test]
async fn signer_revocation_by_crl_over_http() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let ca_dir = tmp.path().join("crl-ca");
    let ca = make_ca(&ca_dir, "Switchboard Test CRL CA");
    let (port, hits) = serve(ca_dir.clone());
    let dead_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let leaf = |name, url: String| Leaf {
        crl_url: Some(url),
        ..Leaf::new(name, ALICE)
    };
    let url = format!("http://127.0.0.1:{port}/ca.crl");
    let good = issue(&ca_dir, &leaf("good", url.clone()));
    let revoked = issue(&ca_dir, &leaf("revoked", url));
    let down = issue(
        &ca_dir,
        &leaf("down", format!("http://127.0.0.1:{dead_port}/ca.crl")),
    );
    ossl(
        &ca_dir,
        &["ca", "-config", "ca.cnf", "-revoke", "revoked.pem"],
    );
    ossl(
        &ca_dir,
        &["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl"],
    );

    let anchors = Anchors::new(vec![AnchorSet {
        domains: vec!["sender.example".into()],
        outbound: false,
        inbound: true,
        certs: vec![ca.cert()],
    }]);
    let keys = bob_keys();
    let now = Utc::now();
    let msg = |id: &Ident| from_alice(id, "sha256", "-aes-128-cbc");
    let (good_msg, revoked_msg, down_msg) = (msg(&good), msg(&revoked), msg(&down));

    // Nothing is fetched for a certificate that does not chain.
    let hard = fetcher(CrlMode::Soft, CrlMode::Hard);
    let r = accept(&revoked_msg, &keys, &pki().anchors(), Some(&hard), now)
        .await
        .err()
        .ok_or("accepted an untrusted signer")?;
    assert_eq!(r.check, Check::Chain);
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Revoked: refused for good, under hard and under soft alike.
    for mode in [CrlMode::Hard, CrlMode::Soft] {
        let f = fetcher(CrlMode::Off, mode);
        let r = accept(&revoked_msg, &keys, &anchors, Some(&f), now)
            .await
            .err()
            .ok_or("accepted a revoked signer")?;
        assert_eq!((r.check, r.retryable), (Check::Revocation, false), "{r}");
        assert!(r.reason.contains("revoked"), "{r}");
    }
    let before = hits.load(Ordering::SeqCst);
    assert_eq!(before, 2);

    // Good: accepted with a passed revocation verdict; the second message uses the cache.
    for _ in 0..2 {
        let ok = accept(&good_msg, &keys, &anchors, Some(&hard), now).await?;
        assert_eq!(ok.signers.len(), 1);
        assert!(
            ok.opened
                .verdicts
                .iter()
                .any(|v| v.check == Check::Revocation && v.signer == Some(0) && v.passed())
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before + 1,
        "the CRL was cached"
    );

    // The CRL server is down: hard leaves the verdict open (retry later), soft accepts.
    let r = accept(&down_msg, &keys, &anchors, Some(&hard), now)
        .await
        .err()
        .ok_or("accepted with an unreachable CRL under hard")?;
    assert_eq!((r.check, r.retryable), (Check::Revocation, true), "{r}");
    assert!(r.reason.contains(&format!("127.0.0.1:{dead_port}")), "{r}");
    let soft = fetcher(CrlMode::Hard, CrlMode::Soft);
    let ok = accept(&down_msg, &keys, &anchors, Some(&soft), now).await?;
    assert_eq!(ok.signers.len(), 1);

    // inbound_crl = off: not checked at all (the outbound mode does not apply).
    let off = fetcher(CrlMode::Hard, CrlMode::Off);
    assert!(
        accept(&revoked_msg, &keys, &anchors, Some(&off), now)
            .await
            .is_ok()
    );
    Ok(())
}

// ---------------------------------------------------------------- rate (manual)

/// The crate-level figure behind `switchboard bench --direct-open` (which needs the whole
/// daemon built): `cargo test --release -p switchboard-direct --test inbound -- --ignored
/// --nocapture accept_rate`. A 100 KiB message sealed by the CLI (SHA-256, AES-256-CBC,
/// RSA-OAEP SHA-256), accepted in-process vs `openssl cms -decrypt | openssl cms -verify`.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn accept_rate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let mut inner = inner_message(ALICE);
    inner.truncate(inner.len() - b"Hello Bob,\r\nplease see the referral.\r\n".len());
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n";
    while inner.len() < 100 * 1024 {
        inner.extend_from_slice(line);
    }
    sign(d, &wrapped(&inner), &[alice()], "sha256");
    let raw = encrypt(
        d,
        pki().id("bob"),
        "-aes-256-cbc",
        &["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
        ALICE,
    );
    std::fs::write(d.join("msg.eml"), &raw)?;
    pki().ca.write(d, "ca");
    pki().id("bob").write(d, "bob");
    let (keys, anchors) = (bob_keys(), pki().anchors());
    let n = 300;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let ok = accept(&raw, &keys, &anchors, None, Utc::now()).await?;
        assert_eq!(ok.opened.inner.len(), inner.len());
    }
    let ours = n as f64 / started.elapsed().as_secs_f64();
    let runs = 50;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        let status = std::process::Command::new("sh")
            .current_dir(d)
            .arg("-c")
            .arg(
                "openssl cms -decrypt -in msg.eml -recip bob.pem -inkey bob.key \
                 | openssl cms -verify -CAfile ca.pem -out /dev/null 2>/dev/null",
            )
            .status()?;
        assert!(status.success());
    }
    let cli = runs as f64 / started.elapsed().as_secs_f64();
    println!(
        "accept: {ours:.0} messages/s; openssl cms -decrypt | -verify: {cli:.0} messages/s; {:.1}x",
        ours / cli
    );
    Ok(())
}
