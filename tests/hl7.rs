//! HL7 v2 over MLLP against the running daemon, on SQLite and PostgreSQL. The independent
//! client is `mllp_send` from PyPI `hl7`; faults use raw TCP.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Backend, TestDaemon, TestDb};
use switchboard::hl7::client;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hl7");

async fn start(db: &TestDb) -> (TestDaemon, SocketAddr) {
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.time_zone = "America/Chicago".into();
    config.hl7.max_frame_bytes = 1024 * 1024;
    let daemon = TestDaemon::start(config).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("hl7 listener");
    (daemon, addr)
}

/// `mllp_send --loose` one file; returns the MSA segments it printed. The UTF-8 byte-order
/// mark some files start with is removed first: `mllp_send --loose` would otherwise send it as
/// a message of its own (`MSH|^~\&|<BOM>`), which any receiver must reject.
fn mllp_send(file: &Path, addr: SocketAddr, scratch: &Path) -> Vec<String> {
    let bytes = std::fs::read(file).expect("vector");
    let copy = scratch.join(file.file_name().expect("name"));
    std::fs::write(&copy, bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes)).expect("copy");
    let output = Command::new("mllp_send")
        .args(["--loose", "-f"])
        .arg(&copy)
        .args(["-p", &addr.port().to_string(), "127.0.0.1"])
        .output()
        .expect("mllp_send (pip install hl7)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split(['\r', '\n'])
        .filter(|s| s.starts_with("MSA"))
        .map(str::to_string)
        .collect()
}

fn vector(name: &str) -> String {
    let text = std::fs::read_to_string(Path::new(VECTORS).join(name)).expect("vector");
    client::split_messages(&text).remove(0)
}

async fn send(addr: SocketAddr, messages: &[String]) -> Vec<(String, String)> {
    client::send(&addr.to_string(), messages, Duration::from_secs(10))
        .await
        .expect("send")
}

async fn every_vector_is_accepted_and_mapped(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let mut files: Vec<_> = std::fs::read_dir(VECTORS)
        .expect("vectors")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 12);
    for file in &files {
        let acks = mllp_send(file, addr, db.dir.path());
        assert!(!acks.is_empty(), "{}: no ACK", file.display());
        for ack in acks {
            assert!(ack.starts_with("MSA|AA|"), "{}: {ack}", file.display());
        }
    }

    let p = daemon.get_json("/v1/patients/PATID1234").await;
    assert_eq!(p["family_name"], "EVERYMAN");
    assert_eq!(p["given_name"], "ADAM");
    assert_eq!(p["birth_date"], "1988-08-18");
    assert_eq!(p["sex"], "M");
    assert_eq!(p["language"], "ara");
    let points: Vec<(String, String)> = p["contact_points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|c| {
            (
                c["system"].as_str().unwrap_or("").into(),
                c["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        points.contains(&("sms".into(), "12121212".into())),
        "{points:?}"
    );
    assert!(
        points.iter().any(|(s, _)| s == "phone"),
        "PID-14 TDD line is a phone: {points:?}"
    );

    let mario = daemon.get_json("/v1/patients/123456789").await;
    assert_eq!(
        (mario["family_name"].as_str(), mario["given_name"].as_str()),
        (Some("BROS"), Some("MARIO"))
    );
    assert_eq!(mario["birth_date"], "1985-01-01");
    assert_eq!(mario["contact_points"][0]["value"], "+15555550123");
    assert_eq!(mario["contact_points"][0]["use"], "HOME");
    let jane = daemon.get_json("/v1/patients/MRN12345").await;
    assert_eq!(
        (jane["family_name"].as_str(), jane["sex"].as_str()),
        (Some("Doe"), Some("F"))
    );
    assert_eq!(jane["birth_date"], "1978-01-01");

    // S12, S12 (second booking), S13, S14, S15, S26 for filler id 36996, in that order.
    let a = daemon.get_json("/v1/appointments/36996").await;
    assert_eq!(a["status"], "noshow");
    assert_eq!(a["start"], "2021-09-24T09:30:00+02:15");
    assert_eq!(a["duration_minutes"], 50);
    assert_eq!(a["placer_id"], "12345");
    assert_eq!(a["appointment_type"], "Normal");
    assert_eq!(a["reason"], "EMERGENCY");
    assert_eq!(a["location"], "GH Clinic");
    assert_eq!(a["location_code"], "055");
    assert_eq!(a["provider_id"], "1210");
    assert_eq!(a["provider_name"], "GE, Robert");
    assert_eq!(a["patient_id"], p["id"]);
    let list = daemon.get_json("/v1/patients/PATID1234/appointments").await;
    assert_eq!(list["appointments"].as_array().map(Vec::len), Some(1));

    // Every message is archived, sealed, with its outcome.
    let applied = daemon
        .core
        .store
        .hl7()
        .by_status(&["applied"], 100)
        .await
        .expect("archive");
    assert_eq!(
        applied.len(),
        12,
        "ADT vectors share control id MSG00001 but differ: none is dropped"
    );
    assert!(applied.iter().all(|row| row.raw.starts_with(b"SB1")));
    daemon.stop().await;
}
both_databases!(
    every_vector_is_accepted_and_mapped,
    super::every_vector_is_accepted_and_mapped
);

/// How many events the daemon has written.
async fn event_count(daemon: &TestDaemon) -> i64 {
    let (count,): (i64,) =
        switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query_as(
            "SELECT COUNT(*) FROM events",
        )
        .fetch_one(pool)
        .await)
        .expect("count events");
    count
}

async fn reschedule_cancel_and_replay(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let acks = send(addr, &[vector("SIU-S12-02.hl7")]).await;
    assert_eq!(acks, [("AA".to_string(), "MSG00012".to_string())]);
    let a = daemon.get_json("/v1/appointments/36996").await;
    assert_eq!(
        (a["start"].as_str(), a["status"].as_str()),
        (Some("2021-08-18T11:30:00+02:15"), Some("booked"))
    );
    assert_eq!(a["reason"], "CHECKUP");

    send(addr, &[vector("SIU-S13-01.hl7")]).await;
    let a = daemon.get_json("/v1/appointments/36996").await;
    assert_eq!(
        (a["start"].as_str(), a["status"].as_str()),
        (Some("2021-09-24T09:30:00+02:15"), Some("booked"))
    );

    let cancel = vector("SIU-S15-01.hl7");
    let first = client::send(
        &addr.to_string(),
        std::slice::from_ref(&cancel),
        Duration::from_secs(10),
    )
    .await
    .expect("send");
    assert_eq!(first[0].0, "AA");
    assert_eq!(
        daemon.get_json("/v1/appointments/36996").await["status"],
        "cancelled"
    );
    // Counted in the store: the feed (`/v1/events`) holds back events behind any transaction
    // still open on the PostgreSQL cluster, other tests' included, so it may come back short.
    let events_before = event_count(&daemon).await;
    // The same message again (a sender that missed our ACK): same ACK, no second effect. (The
    // answer comes after the message has been applied: nothing can follow it.)
    let again = send(addr, &[cancel]).await;
    assert_eq!(again, first);
    assert_eq!(event_count(&daemon).await, events_before);
    daemon.stop().await;
}
both_databases!(
    reschedule_cancel_and_replay,
    super::reschedule_cancel_and_replay
);

fn adt(control: &str, trigger: &str, mrn: &str, family: &str, extra: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||ADT^{trigger}|{control}|P|2.5.1\rEVN|{trigger}|20240101\rPID|1||{mrn}^^^CLINIC^MR||{family}^PAT||19700101|F|||||(217)555-0100^PRN^CP\r{extra}"
    )
}

async fn merge_moves_appointments(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let siu = "MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||SIU^S12|S1|P|2.5.1\rSCH||APPT-9|||||||30|min|^^30^202412011000\rPID|1||MRN-OLD^^^CLINIC^MR||Old^Pat\r".to_string();
    let acks = send(
        addr,
        &[
            adt("A1", "A04", "MRN-NEW", "New", ""),
            adt("A2", "A04", "MRN-OLD", "Old", ""),
            siu,
        ],
    )
    .await;
    assert!(acks.iter().all(|(code, _)| code == "AA"), "{acks:?}");
    let old = daemon.get_json("/v1/patients/MRN-OLD").await;
    let new = daemon.get_json("/v1/patients/MRN-NEW").await;
    let appt = daemon.get_json("/v1/appointments/APPT-9").await;
    assert_eq!(appt["patient_id"], old["id"]);
    assert_eq!(
        appt["start"], "2024-12-01T10:00:00-06:00",
        "no offset: the feed's time zone"
    );
    let merge = adt("A3", "A40", "MRN-NEW", "New", "MRG|MRN-OLD^^^CLINIC^MR\r");
    assert_eq!(send(addr, &[merge]).await[0].0, "AA");
    let appt = daemon.get_json("/v1/appointments/APPT-9").await;
    assert_eq!(
        appt["patient_id"], new["id"],
        "the appointment moved to the surviving patient"
    );
    daemon.stop().await;
}
both_databases!(merge_moves_appointments, super::merge_moves_appointments);

/// Writes raw bytes, reads one framed answer (None when the server closed instead).
fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> Option<String> {
    stream.write_all(bytes).expect("write");
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {
                answer.push(byte[0]);
                if answer.ends_with(&[0x1C, 0x0D]) {
                    return Some(String::from_utf8_lossy(&answer).into_owned());
                }
            }
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    switchboard::hl7::mllp::encode_frame(payload)
}

async fn malformed_input_gets_the_right_answer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut big = b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|BIG|P|2.5\rNTE|1||".to_vec();
        big.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
        let inputs: Vec<Vec<u8>> = vec![
            vec![0xFF, 0x00, 0x13, 0x37],
            b"PID|1||X".to_vec(),
            b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|V21|P|2.1\rPID|1||X^^^^MR".to_vec(),
            b"MSH|^~\\&|A|B|C|D|2024||ORU^R01|U1|P|2.5\rPID|1||X^^^^MR".to_vec(),
            b"MSH|^~\\&|A|B|C|D|2024||SIU^S12|NOSTART|P|2.5\rSCH||F1\rPID|1||X^^^^MR".to_vec(),
            big,
            // The same connection still works after the oversize frame.
            b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|OK1|P|2.5\rPID|1||OK1^^^^MR||Ok^Pat".to_vec(),
        ];
        let out: Vec<Option<String>> = inputs
            .iter()
            .map(|input| exchange(&mut s, &frame(input)))
            .collect();
        // A client that disconnects in the middle of a frame.
        let mut t = TcpStream::connect(addr).expect("connect");
        t.write_all(b"\x0bMSH|^~\\&|A|B|C|D|2024||ADT^A04|CUT|P|2.5\rPID|1||CU")
            .expect("write");
        drop(t);
        out
    })
    .await
    .expect("client");
    let msa = |i: usize| answers[i].as_deref().unwrap_or("(closed)").to_string();
    assert!(msa(0).contains("MSA|AR|"), "garbage: {}", msa(0));
    assert!(msa(1).contains("MSA|AR|"), "no MSH: {}", msa(1));
    assert!(
        msa(2).contains("MSA|AR|V21") && msa(2).contains("203"),
        "version: {}",
        msa(2)
    );
    assert!(
        msa(3).contains("MSA|AR|U1") && msa(3).contains("200"),
        "unknown type: {}",
        msa(3)
    );
    assert!(
        msa(4).contains("MSA|AE|NOSTART") && msa(4).contains("ERR||SCH^1^11"),
        "bad content: {}",
        msa(4)
    );
    assert!(msa(5).contains("MSA|AR|BIG"), "oversize: {}", msa(5));
    assert!(
        msa(6).contains("MSA|AA|OK1"),
        "usable after oversize: {}",
        msa(6)
    );

    // The daemon is still up and every input was archived (the cut frame once the listener
    // has seen that client hang up; the others before their answers).
    assert_eq!(
        send(addr, &[adt("AFTER", "A04", "MRN-AFTER", "After", "")]).await[0].0,
        "AA"
    );
    let store = &daemon.core.store;
    let rejected = common::wait::wait_until(
        "the cut frame archived",
        Duration::from_secs(10),
        async || {
            let rejected = store
                .hl7()
                .by_status(&["rejected"], 100)
                .await
                .expect("archive");
            rejected
                .iter()
                .any(|r| r.error.as_deref() == Some("connection closed in the middle of a frame"))
                .then_some(rejected)
        },
    )
    .await;
    assert_eq!(
        rejected.len(),
        6,
        "garbage, no MSH, 2.1, ORU, oversize, cut: {:?}",
        rejected.iter().map(|r| &r.error).collect::<Vec<_>>()
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.error.as_deref() == Some("connection closed in the middle of a frame"))
    );
    let errors = store
        .hl7()
        .by_status(&["error"], 100)
        .await
        .expect("archive");
    assert_eq!(errors.len(), 1);
    daemon.stop().await;
}
both_databases!(
    malformed_input_gets_the_right_answer,
    super::malformed_input_gets_the_right_answer
);

/// A message refused by configuration is kept, and `hl7 reprocess` applies it after the fix.
async fn reprocess_after_a_fix(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.processing_ids = vec!["P".into()];
    let mut daemon = TestDaemon::start(config.clone()).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener");
    let test_message = adt("T1", "A04", "MRN-T", "Training", "").replace("|T1|P|", "|T1|T|");
    assert_eq!(send(addr, &[test_message]).await[0].0, "AR");
    let rejected = daemon
        .core
        .store
        .hl7()
        .by_status(&["rejected"], 10)
        .await
        .expect("archive");
    assert_eq!(rejected.len(), 1);

    let mut fixed = config.hl7.clone();
    fixed.processing_ids = vec!["P".into(), "T".into()];
    let processor = switchboard::hl7::processor::Hl7Processor::new(
        daemon.core.store.clone(),
        daemon.core.keyring.clone(),
        fixed,
        "US",
        None,
    )
    .await
    .expect("processor");
    let outcome = processor
        .reprocess(&rejected[0].id)
        .await
        .expect("reprocess");
    assert_eq!(outcome.code.as_str(), "AA");
    assert_eq!(
        daemon.get_json("/v1/patients/MRN-T").await["family_name"],
        "Training"
    );
    daemon.stop().await;
}
both_databases!(reprocess_after_a_fix, super::reprocess_after_a_fix);

/// MLLP over TLS, with Python's ssl module as the independent client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_tls() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = db.dir.path();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl req");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.tls_certificate = Some(dir.join("cert.pem"));
    config.hl7.tls_key = Some(switchboard::config::Secret {
        file: Some(dir.join("key.pem")),
        credential: None,
    });
    let mut daemon = TestDaemon::start(config).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener");
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s = ctx.wrap_socket(raw, server_hostname="localhost")
s.sendall(b"\x0bMSH|^~\\&|EHR|CLINIC|SB|SB|20240101||ADT^A04|TLS1|P|2.5.1\rPID|1||MRN-TLS^^^CLINIC^MR||Secure^Pat\r\x1c\r")
ack = b""
while not ack.endswith(b"\x1c\r"):
    chunk = s.recv(4096)
    if not chunk:
        break
    ack += chunk
print(ack.decode().replace("\r", "\n"))
"#;
    let output = Command::new("python3")
        .args(["-c", script, &addr.port().to_string()])
        .arg(dir.join("cert.pem"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("MSA|AA|TLS1"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        daemon.get_json("/v1/patients/MRN-TLS").await["family_name"],
        "Secure"
    );
    daemon.stop().await;
}

/// A connection that stays silent past `hl7.idle_timeout_secs` is closed by the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.idle_timeout_secs = 1;
    let mut daemon = TestDaemon::start(config).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener");
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let started = std::time::Instant::now();
        let mut byte = [0u8; 1];
        let eof = matches!(s.read(&mut byte), Ok(0));
        (eof, started.elapsed())
    })
    .await
    .expect("client");
    assert!(closed.0, "the daemon closed the idle connection");
    assert!(
        closed.1 >= Duration::from_millis(900) && closed.1 < Duration::from_secs(5),
        "{:?}",
        closed.1
    );
    daemon.stop().await;
}

/// Runs the `openssl` CLI; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A P-256 key and a certificate for `subject` signed by `ca` (`None`: self-signed), made
/// with the openssl CLI: `<name>.key` and `<name>.pem` in `dir`.
fn certificate(dir: &Path, name: &str, subject: &str, ca: Option<&str>, extra: &[&str]) {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    match ca {
        None => {
            let mut args = vec![
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                subject,
                "-keyout",
                &key,
                "-out",
                &pem,
            ];
            args.extend_from_slice(extra);
            openssl(dir, &args);
        }
        Some(ca) => {
            let csr = format!("{name}.csr");
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    subject,
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                ],
            );
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-set_serial",
                    "2",
                    "-days",
                    "1",
                    "-out",
                    &pem,
                ],
            );
        }
    }
}

/// `openssl s_client` as the sending system: sends one framed message, prints what came
/// back until the daemon closes the connection. Returns (stdout, stderr).
fn s_client(dir: &Path, addr: SocketAddr, client: Option<&str>, message: &str) -> (String, String) {
    let mut command = Command::new("timeout");
    command
        .current_dir(dir)
        .args(["20", "openssl", "s_client", "-quiet", "-connect"])
        .arg(addr.to_string())
        .args(["-servername", "localhost", "-CAfile", "server.pem"]);
    if let Some(name) = client {
        command.args([
            "-cert",
            &format!("{name}.pem"),
            "-key",
            &format!("{name}.key"),
        ]);
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&frame(message.as_bytes()))
        .expect("write");
    let output = child.wait_with_output().expect("s_client");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every archived HL7 row, whatever its status.
async fn archived(daemon: &TestDaemon) -> usize {
    daemon
        .core
        .store
        .hl7()
        .by_status(&["received", "applied", "rejected", "error"], 100)
        .await
        .expect("archive")
        .len()
}

/// Polls until the feed's organization has an `hl7_connection_refused` audit row.
async fn wait_refusal_audited(daemon: &TestDaemon, organization_id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = daemon
            .core
            .store
            .audit()
            .entries(organization_id, 50)
            .await
            .expect("audit");
        if let Some(event) = events.iter().find(|e| e.action == "hl7_connection_refused") {
            return event.detail.clone().unwrap_or_default();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal audited: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mutual TLS: only a certificate from the feed's CA with an allowed subject is served.
/// Without a certificate, with one from another issuer, or with another subject, the
/// connection is refused before anything is read, and the refusal is audited.
async fn mutual_tls_admits_only_allowed_certificates(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = db.dir.path().to_path_buf();
    certificate(&dir, "ca", "/CN=North Feed CA", None, &[]);
    certificate(
        &dir,
        "server",
        "/CN=localhost",
        None,
        &["-addext", "subjectAltName=DNS:localhost"],
    );
    certificate(
        &dir,
        "ehr",
        "/O=North Clinic/CN=ehr.north.example",
        Some("ca"),
        &[],
    );
    certificate(
        &dir,
        "intruder",
        "/O=North Clinic/CN=intruder.example",
        Some("ca"),
        &[],
    );
    certificate(
        &dir,
        "forged",
        "/O=North Clinic/CN=ehr.north.example",
        None,
        &[],
    );

    let mut config = db.config();
    // Reachable from other hosts: allowed because client certificates are required.
    config.hl7.listen = Some("0.0.0.0:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.idle_timeout_secs = 1;
    config.hl7.tls_certificate = Some(dir.join("server.pem"));
    config.hl7.tls_key = Some(switchboard::config::Secret {
        file: Some(dir.join("server.key")),
        credential: None,
    });
    config.hl7.tls_client_ca = Some(dir.join("ca.pem"));
    config.hl7.allowed_subjects = vec!["CN=ehr.north.example, O=North Clinic".into()];
    let mut daemon = TestDaemon::start(config).await;
    let port = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let north = daemon
        .core
        .store
        .organizations()
        .ensure("north", "north")
        .await
        .expect("org")
        .id;
    let message = |id: &str| {
        format!(
            "MSH|^~\\&|EHR|CLINIC|SB|SB|20240101||ADT^A04|{id}|P|2.5.1\rPID|1||MRN-{id}^^^CLINIC^MR||Secure^Pat\r"
        )
    };

    for (client, id) in [
        (None, "NOCERT"),
        (Some("forged"), "FORGED"),
        (Some("intruder"), "OTHER"),
    ] {
        let (stdout, stderr) = {
            let dir = dir.clone();
            let body = message(id);
            tokio::task::spawn_blocking(move || s_client(&dir, addr, client, &body))
                .await
                .expect("client")
        };
        assert!(
            !stdout.contains("MSA"),
            "{client:?} got an answer: {stdout} {stderr}"
        );
        let detail = wait_refusal_audited(&daemon, &north).await;
        assert!(
            !detail.contains("intruder"),
            "audit names no subject: {detail}"
        );
        let response = daemon
            .http
            .get(daemon.url(&format!("/v1/patients/MRN-{id}")))
            .bearer_auth(&daemon.key)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 404, "{client:?}: nothing was applied");
    }
    assert_eq!(
        archived(&daemon).await,
        0,
        "nothing was read from refused clients"
    );

    let (stdout, stderr) = {
        let dir = dir.clone();
        let body = message("MTLS1");
        tokio::task::spawn_blocking(move || s_client(&dir, addr, Some("ehr"), &body))
            .await
            .expect("client")
    };
    assert!(stdout.contains("MSA|AA|MTLS1"), "{stdout} {stderr}");
    assert_eq!(
        daemon.get_json("/v1/patients/MRN-MTLS1").await["family_name"],
        "Secure"
    );
    daemon.stop().await;
}
both_databases!(
    mutual_tls_admits_only_allowed_certificates,
    super::mutual_tls_admits_only_allowed_certificates
);

/// `hl7.allow_from`: a source outside the list is disconnected before anything is read; a
/// listed one is served.
async fn source_allow_list(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.allow_from = vec!["127.0.0.2/32".into()];
    let mut daemon = TestDaemon::start(config.clone()).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener");
    let north = daemon
        .core
        .store
        .organizations()
        .ensure("north", "north")
        .await
        .expect("org")
        .id;
    let message = adt("SRC1", "A04", "MRN-SRC", "Source", "");
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        exchange(&mut s, &frame(message.as_bytes()))
    })
    .await
    .expect("client");
    assert_eq!(
        answer, None,
        "a source outside hl7.allow_from gets no answer"
    );
    wait_refusal_audited(&daemon, &north).await;
    assert_eq!(archived(&daemon).await, 0, "nothing was read");
    daemon.stop().await;

    config.hl7.allow_from = vec!["10.0.0.0/8".into(), "127.0.0.1".into()];
    let mut daemon = TestDaemon::start(config).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener");
    let file = db.dir.path().join("adt.hl7");
    std::fs::write(&file, adt("SRC2", "A04", "MRN-SRC", "Source", "")).expect("file");
    let acks = mllp_send(&file, addr, db.dir.path());
    assert!(acks[0].starts_with("MSA|AA|SRC2"), "{acks:?}");
    assert_eq!(
        daemon.get_json("/v1/patients/MRN-SRC").await["family_name"],
        "Source"
    );
    daemon.stop().await;
}
both_databases!(source_allow_list, super::source_allow_list);

/// A listener reachable from other hosts with neither client certificates nor an allow-list
/// does not start, and says how to fix it.
#[test]
fn an_open_listener_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("open.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[hl7]\nlisten = \"0.0.0.0:0\"\n",
            dir.path().display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("switchboard");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started with an open HL7 listener");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(!status.success());
    for hint in ["hl7.allow_from", "hl7.tls_client_ca", "127.0.0.1"] {
        assert!(stderr.contains(hint), "{hint} missing from: {stderr}");
    }
    // Loopback needs neither.
    let ok = switchboard::config::Config::from_toml("[hl7]\nlisten = \"127.0.0.1:2575\"\n");
    assert!(ok.is_ok(), "{ok:?}");
}

/// A duration too large to count (SCH-9 in hours past i64 minutes) used to overflow in the
/// mapping and kill the connection without an answer (so the engine resent it forever):
/// now the message is applied without a duration.
async fn absurd_durations_are_ignored(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let siu = "MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||SIU^S12|HUGE1|P|2.5.1\rSCH||APPT-HUGE|||||||9223372036854775807|h|^^30^202412011000\rPID|1||MRN-HUGE^^^CLINIC^MR||Huge^Pat\r";
    let acks = send(addr, &[siu.to_string()]).await;
    assert_eq!(acks[0].0, "AA", "{acks:?}");
    let appointment = daemon.get_json("/v1/appointments/APPT-HUGE").await;
    assert!(appointment["duration_minutes"].is_null(), "{appointment}");
    daemon.stop().await;
}
both_databases!(
    absurd_durations_are_ignored,
    super::absurd_durations_are_ignored
);

/// The archive as an operator reads it through the admin API: listed newest first and by
/// outcome, a message's segments masked outside MSH, revealed only on request and audited.
async fn archive_is_listed_masked_and_revealed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let good = std::fs::read_to_string(Path::new(VECTORS).join("ADT-A04-01.hl7"))
        .expect("vector")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let acks = send(
        addr,
        &[
            good,
            "MSH|^~\\&|EHR|North|SB|North|20261128||SIU^S12|bad-1|P|2.5\rSCH|\r".to_string(),
        ],
    )
    .await;
    assert_eq!(acks.len(), 2, "{acks:?}");
    let list = daemon.get_json("/v1/hl7/messages").await;
    let messages = list["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{list:#}");
    assert_eq!(messages[0]["control_id"], "bad-1", "newest first");
    assert_ne!(messages[0]["status"], "applied", "{list:#}");
    let applied = daemon
        .get_json("/v1/hl7/messages?status=applied&type=ADT")
        .await;
    let applied = applied["messages"].as_array().expect("messages");
    assert_eq!(applied.len(), 1);
    let id = applied[0]["id"].as_str().expect("id");

    let masked = daemon.get_json(&format!("/v1/hl7/messages/{id}")).await;
    assert_eq!(masked["revealed"], false);
    let text = masked["segments"].to_string();
    assert!(text.contains("\"PID\""), "{masked:#}");
    assert!(
        !text.contains("EVERYMAN"),
        "a name in a masked view: {masked:#}"
    );
    let audited = |rows: &[switchboard::store::AuditRow]| {
        rows.iter().filter(|r| r.action == "hl7_revealed").count()
    };
    let before = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 100)
        .await
        .expect("audit");
    assert_eq!(audited(&before), 0, "masking is not a disclosure");
    let revealed = daemon
        .get_json(&format!("/v1/hl7/messages/{id}?reveal=true"))
        .await;
    assert_eq!(revealed["revealed"], true);
    assert!(revealed["segments"].to_string().contains("EVERYMAN"));
    let after = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 100)
        .await
        .expect("audit");
    assert_eq!(audited(&after), 1, "revealing is audited");

    let other = daemon.key_for("south").await;
    let response = daemon
        .http
        .get(daemon.url(&format!("/v1/hl7/messages/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404, "another organization's message");
    daemon.stop().await;
}
both_databases!(
    archive_is_listed_masked_and_revealed,
    super::archive_is_listed_masked_and_revealed
);

/// Eight connections at once (their messages share commits): every message is acknowledged
/// AA, each patient is written once, and the same message sent on two connections at the same
/// moment — possibly in one batch — is archived once and acknowledged on both.
async fn concurrent_connections_share_commits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let mut tasks = Vec::new();
    for c in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut messages: Vec<String> = (0..25)
                .map(|i| {
                    adt(
                        &format!("C{c}-{i}"),
                        "A08",
                        &format!("MRN-{c}-{}", i % 5),
                        "Group",
                        "",
                    )
                })
                .collect();
            // Connections 0 and 1 each send the very same message last.
            if c < 2 {
                messages.push(adt("TWIN", "A04", "MRN-TWIN", "Twin", ""));
            }
            (messages.len(), send(addr, &messages).await)
        }));
    }
    for task in tasks {
        let (sent, acks) = task.await.expect("connection");
        assert_eq!(acks.len(), sent);
        for (code, control) in &acks {
            assert_eq!(code, "AA", "{control}");
        }
    }
    let (archived, twins, patients): (i64, i64, i64) =
        switchboard::store::on_db!(daemon.core.store.db(), |pool| {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM hl7_messages),
                        (SELECT COUNT(*) FROM hl7_messages WHERE control_id = 'TWIN'),
                        (SELECT COUNT(*) FROM patients)",
            )
            .fetch_one(pool)
            .await
        })
        .expect("counts");
    assert_eq!((archived, twins), (8 * 25 + 1, 1));
    assert_eq!(patients, 8 * 5 + 1);
    daemon.stop().await;
}
both_databases!(
    concurrent_connections_share_commits,
    super::concurrent_connections_share_commits
);

/// SIU^S12 `k` for the one appointment `APPT-SAME` of the one patient `MRN-SAME`: message `k`
/// moves it to `k` minutes after 2027-01-01 00:00 (-06:00), names the patient `Fam{k}` and
/// gives them the phone number (217) 555-`k`.
fn same_patient_update(k: usize) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||SIU^S12|U{k}|P|2.5.1\r\
         SCH||APPT-SAME|||||ROUTINE|Checkup|||^^30^20270101{h:02}{m:02}00-0600\r\
         PID|1||MRN-SAME^^^CLINIC^MR||Fam{k}^Pat||19800101|F|||||(217)555-{k:04}^PRN^CP\r",
        h = k / 60,
        m = k % 60,
    )
}

/// Eight connections update the same patient and appointment at once, their last messages
/// released together (so that one batch holds several updates of the same rows): every message
/// is archived and acknowledged AA once, with its own control id; one `appointment.changed`
/// event per message, each connection's in the order it sent them; and the patient, their
/// contact points and the appointment are what the message applied last (the last event)
/// says, as applying the messages one after another would leave them.
async fn same_patient_updates_apply_in_arrival_order(backend: Backend) {
    const CONNECTIONS: usize = 8;
    const EACH: usize = 6;
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let release = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let release = release.clone();
        tasks.push(tokio::spawn(async move {
            let messages: Vec<String> = (0..EACH)
                .map(|i| same_patient_update(c * EACH + i))
                .collect();
            let mut acks = send(addr, &messages[..EACH - 1]).await;
            release.wait().await;
            acks.extend(send(addr, &messages[EACH - 1..]).await);
            acks
        }));
    }
    for (c, task) in tasks.into_iter().enumerate() {
        let acks = task.await.expect("connection");
        let expected: Vec<(String, String)> = (0..EACH)
            .map(|i| ("AA".to_string(), format!("U{}", c * EACH + i)))
            .collect();
        assert_eq!(acks, expected, "connection {c}");
    }
    let (archived, payloads, family, phones): (i64, Vec<String>, String, Vec<String>) =
        switchboard::store::on_db!(daemon.core.store.db(), |pool| async {
            let (archived,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM hl7_messages WHERE status = 'applied' AND control_id LIKE 'U%'",
            )
            .fetch_one(pool)
            .await?;
            let payloads: Vec<String> = sqlx::query_scalar(
                "SELECT payload FROM events WHERE kind = 'appointment.changed' ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            let family: String = sqlx::query_scalar(
                "SELECT family_name FROM patients WHERE external_id = 'MRN-SAME'",
            )
            .fetch_one(pool)
            .await?;
            let phones: Vec<String> = sqlx::query_scalar(
                "SELECT c.value FROM contact_points c JOIN patients p ON p.id = c.patient_id
                 WHERE p.external_id = 'MRN-SAME'",
            )
            .fetch_all(pool)
            .await?;
            Ok::<_, sqlx::Error>((archived, payloads, family, phones))
        }
        .await)
        .expect("read back");
    assert_eq!(archived, (CONNECTIONS * EACH) as i64);
    // Message k moved the appointment to `base + k` minutes: the events name the messages in
    // the order they were applied.
    let starts: Vec<i64> = payloads
        .iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p).expect("payload")["start_at"]
                .as_i64()
                .expect("start_at")
        })
        .collect();
    let base = *starts.iter().min().expect("events");
    let order: Vec<usize> = starts
        .iter()
        .map(|s| ((s - base) / 60_000) as usize)
        .collect();
    let mut all = order.clone();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..CONNECTIONS * EACH).collect::<Vec<_>>(),
        "one event per message"
    );
    for c in 0..CONNECTIONS {
        let own: Vec<usize> = order.iter().copied().filter(|k| k / EACH == c).collect();
        assert_eq!(
            own,
            (c * EACH..(c + 1) * EACH).collect::<Vec<_>>(),
            "connection {c}"
        );
    }
    let last = *order.last().expect("events");
    assert_eq!(
        family,
        format!("Fam{last}"),
        "the patient as the last message left it"
    );
    assert_eq!(phones.len(), 1, "{phones:?}");
    assert!(
        phones[0].ends_with(&format!("{last:04}")),
        "{phones:?} after message {last}"
    );
    let appointment = daemon.get_json("/v1/appointments/APPT-SAME").await;
    let expected_start = chrono::DateTime::from_timestamp_millis(base + 60_000 * last as i64)
        .expect("start")
        .with_timezone(&chrono::FixedOffset::west_opt(6 * 3600).expect("offset"))
        .to_rfc3339();
    assert_eq!(appointment["start"], expected_start, "after message {last}");
    daemon.stop().await;
}
both_databases!(
    same_patient_updates_apply_in_arrival_order,
    super::same_patient_updates_apply_in_arrival_order
);
