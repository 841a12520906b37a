//! A small MLLP client for operators (`switchboard hl7 send`): sends each message of each file
//! and waits for its ACK. LF/CRLF segment ends are sent as CR; a file holding several
//! messages is split at each line starting with `MSH`.

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
