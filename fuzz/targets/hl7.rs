//! HL7 over MLLP as the listener reads it: frames cut from a byte stream delivered in chunks
//! of a fuzzed size, each frame parsed, its header validated, mapped to a patient or
//! appointment event (and on to the store's input types, phone numbers normalised), and
//! acknowledged; oversize frames have their first line read for the AR, as the processor does.
//!
//! Input: byte 0 picks the read size, byte 1 the maximum frame size, the rest is the stream.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use chrono_tz::Tz;
use switchboard::hl7::mapping::{Hl7Event, map_message};
use switchboard::hl7::processor::appointment_input;
use switchboard::store::ContactPointInput;
use switchboard_hl7::ack::{AckCode, AckError, build_ack};
use switchboard_hl7::message::Message;
use switchboard_hl7::mllp::{END, Frame, FrameReader, START};
use tokio::io::{AsyncRead, ReadBuf};

/// A peer that sends `data` in reads of at most `chunk` bytes.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (reads from memory) to completion.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory read never waits"),
    }
}

const ZONES: [Tz; 3] = [
    Tz::America__New_York,
    Tz::Europe__London,
    Tz::Australia__Lord_Howe,
];

fn handle(raw: &[u8], zone: Tz) {
    let message = match Message::parse(raw) {
        Ok(message) => message,
        Err(e) => {
            let error = AckError {
                segment: "MSH".into(),
                field: 1,
                code: 100,
                text: e.to_string(),
            };
            build_ack(
                None,
                AckCode::Reject,
                "hl7_x",
                "20260101120000",
                Some(&error),
            );
            return;
        }
    };
    let header = &message.header;
    let verdict = message.validate_header().map_err(|e| e.to_string());
    let mapped = map_message(&message, zone);
    match &mapped {
        Ok(Hl7Event::PatientUpsert(patient))
        | Ok(Hl7Event::PatientMerge {
            surviving: patient, ..
        }) => {
            contact_points(patient);
        }
        Ok(Hl7Event::Appointment {
            patient,
            appointment,
            ..
        }) => {
            contact_points(patient);
            let input = appointment_input(appointment, "hl7");
            assert_eq!(input.start_at, appointment.start.timestamp_millis());
        }
        Err(_) => {}
    }
    let error = match (&verdict, &mapped) {
        (Err(text), _) => Some(AckError {
            segment: "MSH".into(),
            field: 9,
            code: 200,
            text: text.clone(),
        }),
        (_, Err(e)) => Some(AckError {
            segment: "PID".into(),
            field: 3,
            code: 102,
            text: e.to_string(),
        }),
        _ => None,
    };
    let code = if error.is_some() {
        AckCode::Error
    } else {
        AckCode::Accept
    };
    let ack = build_ack(
        Some(header),
        code,
        "hl7_x",
        "20260101120000",
        error.as_ref(),
    );
    // The ACK is one frame: it must carry no MLLP framing byte of its own.
    assert!(
        !ack.bytes().any(|b| b == START || b == END[0]),
        "ACK carries an MLLP framing byte"
    );
}

fn contact_points(patient: &switchboard::hl7::mapping::PatientRecord) {
    for c in &patient.contact_points {
        ContactPointInput::new(&c.system, &c.value, c.use_code.clone(), c.rank, "US");
    }
    if let Some(address) = &patient.address {
        serde_json::to_string(address).expect("an address serialises");
    }
}

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    let [read, max, stream @ ..] = data else {
        return;
    };
    let chunk = if *read == 0 {
        16 * 1024
    } else {
        usize::from(*read)
    };
    let max_frame = if *max < 128 {
        16 + usize::from(*max) * 8
    } else {
        1 << 20
    };
    let zone = ZONES[usize::from(*max) % ZONES.len()];
    let mut reader = FrameReader::new(
        Chunked {
            data: stream,
            chunk,
        },
        max_frame,
    );
    loop {
        match ready(reader.next_frame()).expect("in-memory reads do not fail") {
            Some(Frame::Message(payload)) => {
                assert!(
                    payload.len() <= max_frame,
                    "a frame over the limit was not flagged"
                );
                assert!(
                    !payload.windows(2).any(|w| w == END),
                    "a frame kept its end marker"
                );
                handle(&payload, zone);
            }
            Some(Frame::Oversize { head, size }) => {
                assert!(
                    size > max_frame && head.len() <= size,
                    "oversize {size} <= {max_frame}"
                );
                if let Some(line) = head.split(|&b| b == b'\r' || b == b'\n').next() {
                    let _ = Message::parse(line);
                }
            }
            Some(Frame::Truncated(_)) | None => break,
        }
    }
}
