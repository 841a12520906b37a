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

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors/hl7");

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
        .hl7_by_status(&["applied"], 100)
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
    let events_before = daemon.get_json("/v1/events?after=0&limit=1000").await["events"]
        .as_array()
        .map(Vec::len);
    // The same message again (a sender that missed our ACK): same ACK, no second effect.
    let again = send(addr, &[cancel]).await;
    assert_eq!(again, first);
    let events_after = daemon.get_json("/v1/events?after=0&limit=1000").await["events"]
        .as_array()
        .map(Vec::len);
    assert_eq!(events_before, events_after);
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

    // The daemon is still up and every input was archived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send(addr, &[adt("AFTER", "A04", "MRN-AFTER", "After", "")]).await[0].0,
        "AA"
    );
    let store = &daemon.core.store;
    let rejected = store
        .hl7_by_status(&["rejected"], 100)
        .await
        .expect("archive");
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
    let errors = store.hl7_by_status(&["error"], 100).await.expect("archive");
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
        .hl7_by_status(&["rejected"], 10)
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
