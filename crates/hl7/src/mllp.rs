//! MLLP framing: `0x0B payload 0x1C 0x0D`. Several frames per connection, frames split across
//! reads, bytes between frames skipped, a maximum frame size (an oversize frame is read to its
//! end and reported as [`Frame::Oversize`], so the caller can answer AR and keep the
//! connection usable), and EOF in the middle of a frame reported as [`Frame::Truncated`].

use tokio::io::{AsyncRead, AsyncReadExt};

pub const START: u8 = 0x0B;
pub const END: [u8; 2] = [0x1C, 0x0D];

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    /// A frame over the limit; its first bytes are kept so the header can still be read.
    Oversize {
        head: Vec<u8>,
        size: usize,
    },
    /// The peer closed mid-frame; what had arrived.
    Truncated(Vec<u8>),
}

/// Wraps a payload in MLLP framing.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(START);
    out.extend_from_slice(payload);
    out.extend_from_slice(&END);
    out
}

pub struct FrameReader<R> {
    reader: R,
    buffer: Vec<u8>,
    max_frame: usize,
}

const HEAD_KEPT: usize = 4096;

/// Most bytes asked of the socket at once.
const READ_CHUNK: usize = 16 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_frame: usize) -> Self {
        Self {
            reader,
            buffer: Vec::with_capacity(8192),
            max_frame,
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn next_frame(&mut self) -> std::io::Result<Option<Frame>> {
        let mut in_frame = false;
        let mut oversize: Option<(Vec<u8>, usize)> = None;
        let mut scanned: usize = 0;
        loop {
            if !in_frame {
                match self.buffer.iter().position(|&b| b == START) {
                    Some(i) => {
                        self.buffer.drain(..=i);
                        in_frame = true;
                        scanned = 0;
                    }
                    None => self.buffer.clear(),
                }
            }
            if in_frame {
                let from = scanned.saturating_sub(1);
                if let Some(i) = self.buffer[from..]
                    .windows(2)
                    .position(|w| w == END)
                    .map(|i| i + from)
                {
                    let payload: Vec<u8> = self.buffer.drain(..i + 2).take(i).collect();
                    return Ok(Some(match oversize {
                        Some((head, size)) => Frame::Oversize {
                            head,
                            size: size + payload.len(),
                        },
                        None if payload.len() > self.max_frame => Frame::Oversize {
                            head: payload[..HEAD_KEPT.min(payload.len())].to_vec(),
                            size: payload.len(),
                        },
                        None => Frame::Message(payload),
                    }));
                }
                scanned = self.buffer.len();
                // A last byte that may begin the end marker is not (yet) the frame's.
                let keep = usize::from(self.buffer.last() == Some(&END[0]));
                let body = self.buffer.len() - keep;
                if oversize.is_none() && body > self.max_frame {
                    oversize = Some((self.buffer[..HEAD_KEPT.min(body)].to_vec(), 0));
                }
                if let Some((_, size)) = &mut oversize {
                    // Keep only the tail that could hold the start of the end marker.
                    *size += body;
                    self.buffer.drain(..body);
                    scanned = self.buffer.len();
                }
            }
            // Straight into the buffer's spare capacity: a 16 KiB stack chunk was zeroed on
            // every read, so a peer sending one byte per segment cost 16 KiB of memset per
            // byte (the hl7 fuzz target ran at ≈ 60 inputs/s because of it).
            if self.buffer.capacity() - self.buffer.len() < READ_CHUNK / 4 {
                self.buffer.reserve(READ_CHUNK);
            }
            let n = self.reader.read_buf(&mut self.buffer).await?;
            if n == 0 {
                return Ok(match (in_frame, oversize) {
                    (false, _) => None,
                    (true, Some((head, _))) => Some(Frame::Truncated(head)),
                    (true, None) => Some(Frame::Truncated(std::mem::take(&mut self.buffer))),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let mut reader = FrameReader::new(input, max);
        let mut out = Vec::new();
        while let Some(frame) = reader.next_frame().await.expect("read") {
            let truncated = matches!(frame, Frame::Truncated(_));
            out.push(frame);
            if truncated {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn splits_frames_skips_garbage_and_bounds_size() {
        let mut input = b"garbage".to_vec();
        input.extend(encode_frame(b"ONE"));
        input.extend(encode_frame(b"TWO"));
        input.extend(encode_frame(&[b'x'; 100]));
        input.extend(encode_frame(b"THREE"));
        input.extend(b"\x0bHALF");
        let got = frames(&input, 50).await;
        assert_eq!(got[0], Frame::Message(b"ONE".to_vec()));
        assert_eq!(got[1], Frame::Message(b"TWO".to_vec()));
        assert!(
            matches!(&got[2], Frame::Oversize { size: 100, .. }),
            "{:?}",
            got[2]
        );
        assert_eq!(got[3], Frame::Message(b"THREE".to_vec()));
        assert_eq!(got[4], Frame::Truncated(b"HALF".to_vec()));
    }

    /// Found by the hl7 fuzz target: an oversize frame whose read ended on the end marker's
    /// first byte kept that byte in its head, so the head was longer than the frame.
    #[tokio::test]
    async fn an_oversize_head_never_holds_the_end_marker() {
        use tokio::io::AsyncReadExt;
        let mut first = vec![START];
        first.extend([b'x'; 60]);
        first.push(END[0]);
        let second = [END[1]];
        let mut reader = FrameReader::new((&first[..]).chain(&second[..]), 50);
        let frame = reader.next_frame().await.expect("read");
        assert_eq!(
            frame,
            Some(Frame::Oversize {
                head: vec![b'x'; 60],
                size: 60
            })
        );
    }

    /// Found next by the same target: a frame of exactly the limit whose read ended on the
    /// end marker's first byte was called oversize.
    #[tokio::test]
    async fn a_frame_of_the_limit_split_before_its_end_is_a_message() {
        use tokio::io::AsyncReadExt;
        let mut first = vec![START];
        first.extend([b'x'; 50]);
        first.push(END[0]);
        let second = [END[1]];
        let mut reader = FrameReader::new((&first[..]).chain(&second[..]), 50);
        let frame = reader.next_frame().await.expect("read");
        assert_eq!(frame, Some(Frame::Message(vec![b'x'; 50])));
    }

    #[tokio::test]
    async fn frames_split_across_reads() {
        let (mut client, server) = tokio::io::duplex(4);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in encode_frame(b"MSH|split across many reads").chunks(3) {
                client.write_all(chunk).await.expect("write");
            }
        });
        let mut reader = FrameReader::new(server, 1024);
        let frame = reader.next_frame().await.expect("read");
        assert_eq!(
            frame,
            Some(Frame::Message(b"MSH|split across many reads".to_vec()))
        );
        writer.await.expect("writer");
        assert_eq!(reader.next_frame().await.expect("eof"), None);
    }
}
