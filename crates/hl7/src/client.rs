//! A small MLLP client for operators (`switchboard hl7 send`): sends each message of each file
//! and waits for its ACK. LF/CRLF segment ends are sent as CR; a file holding several
//! messages is split at each line starting with `MSH`. Messages are bytes: a file in
//! ISO-8859-1 (or any MSH-18 character set) is sent as it is, never re-encoded.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::message::Message;
use crate::mllp::{Frame, FrameReader, encode_frame};

/// Splits a file's text into messages with CR segment ends.
pub fn split_messages(text: &str) -> Vec<String> {
    let text = text.trim_start_matches('\u{feff}');
    let mut messages: Vec<String> = Vec::new();
    for line in text.split(['\r', '\n']).filter(|l| !l.trim().is_empty()) {
        let line = line.trim_start_matches('\u{feff}');
        if line.starts_with("MSH") || messages.is_empty() {
            messages.push(String::new());
        }
        if let Some(current) = messages.last_mut() {
            current.push_str(line);
            current.push('\r');
        }
    }
    messages
}

/// [`split_messages`] on bytes: the file's own bytes, whatever its character set.
pub fn split_message_bytes(bytes: &[u8]) -> Vec<Vec<u8>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for line in bytes
        .split(|b| matches!(b, b'\r' | b'\n'))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    {
        if line.starts_with(b"MSH") || messages.is_empty() {
            messages.push(Vec::new());
        }
        if let Some(current) = messages.last_mut() {
            current.extend_from_slice(line);
            current.push(b'\r');
        }
    }
    messages
}

/// One acknowledgement as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// MSA-1: AA, AE, AR (CA, CE, CR in enhanced mode); `??` when the ACK did not parse.
    pub code: String,
    /// MSA-2: the control id of the message acknowledged.
    pub control_id: String,
    /// Why it was not accepted: ERR-8, else MSA-3, else ERR-3's text, else ERR-1's (empty
    /// for an AA).
    pub reason: String,
}

impl Ack {
    pub fn accepted(&self) -> bool {
        matches!(self.code.as_str(), "AA" | "CA")
    }

    fn parse(raw: &[u8]) -> Ack {
        match Message::parse(raw) {
            Ok(ack) => {
                let msa = ack.segment("MSA");
                let err = ack.segment("ERR");
                let field = |s: Option<&crate::message::Segment>, f, c| {
                    s.map(|s| s.comp(f, c).trim().to_string())
                        .filter(|t| !t.is_empty())
                };
                let reason = field(err, 8, 1)
                    .or_else(|| field(msa, 3, 1))
                    .or_else(|| field(err, 3, 2))
                    .or_else(|| {
                        field(err, 1, 4).map(|c| c.split('&').nth(1).unwrap_or(&c).to_string())
                    })
                    .unwrap_or_default();
                Ack {
                    code: field(msa, 1, 1).unwrap_or_default(),
                    control_id: field(msa, 2, 1).unwrap_or_default(),
                    reason,
                }
            }
            Err(e) => Ack {
                code: "??".into(),
                control_id: String::new(),
                reason: format!("unparsable ACK: {e}"),
            },
        }
    }
}

/// What [`send_each`] got: the ACKs received, in order, and the error that ended the
/// connection early (the messages after `acks.len()` got no ACK).
#[derive(Debug)]
pub struct Sent {
    pub acks: Vec<Ack>,
    pub error: Option<std::io::Error>,
}

/// Sends messages over one connection, waiting for each ACK (`timeout` each); `on_ack` sees
/// each as it arrives. A timeout or closed connection ends the run but keeps the ACKs already
/// received.
pub async fn send_each(
    addr: &str,
    messages: &[Vec<u8>],
    timeout: Duration,
    mut on_ack: impl FnMut(usize, &Ack),
) -> Sent {
    let mut acks = Vec::with_capacity(messages.len());
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(error) => {
            return Sent {
                acks,
                error: Some(error),
            };
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read, 16 * 1024 * 1024);
    for (i, message) in messages.iter().enumerate() {
        let next = async {
            write.write_all(&encode_frame(message)).await?;
            match tokio::time::timeout(timeout, reader.next_frame()).await {
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no ACK within {} s", timeout.as_secs()),
                )),
                Ok(Ok(Some(Frame::Message(ack)))) => Ok(Ack::parse(&ack)),
                Ok(Ok(_)) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before the ACK",
                )),
                Ok(Err(e)) => Err(e),
            }
        };
        match next.await {
            Ok(ack) => {
                on_ack(i, &ack);
                acks.push(ack);
            }
            Err(error) => {
                return Sent {
                    acks,
                    error: Some(error),
                };
            }
        }
    }
    Sent { acks, error: None }
}

/// Sends messages over one connection; returns each ACK's MSA-1 and MSA-2 (or an error text).
pub async fn send(
    addr: &str,
    messages: &[String],
    timeout: Duration,
) -> std::io::Result<Vec<(String, String)>> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut acks = FrameReader::new(read, 16 * 1024 * 1024);
    let mut results = Vec::with_capacity(messages.len());
    for message in messages {
        write.write_all(&encode_frame(message.as_bytes())).await?;
        let frame = tokio::time::timeout(timeout, acks.next_frame())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no ACK in time"))??;
        let result = match frame {
            Some(Frame::Message(ack)) => match Message::parse(&ack) {
                Ok(ack) => {
                    let msa = ack.segment("MSA");
                    (
                        msa.map(|m| m.comp(1, 1).to_string()).unwrap_or_default(),
                        msa.map(|m| m.comp(2, 1).to_string()).unwrap_or_default(),
                    )
                }
                Err(e) => ("??".into(), format!("unparsable ACK: {e}")),
            },
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before the ACK",
                ));
            }
        };
        results.push(result);
    }
    Ok(results)
}
