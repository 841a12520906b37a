//! A minimal IMAP4rev1 client (RFC 3501), just what mailbox watching needs: greeting,
//! `CAPABILITY`/`STARTTLS`, `LOGIN`, `SELECT`, `UID SEARCH UNSEEN`, `UID FETCH BODY.PEEK[]`
//! (which does not set `\Seen`), `UID STORE +FLAGS.SILENT (\Seen)`, `IDLE`/`DONE`
//! (RFC 2177) and `LOGOUT`.
//!
//! TLS (implicit, STARTTLS required or opportunistic, none) goes through native-tls. Every
//! read is bounded by the connection timeout, except the wait inside IDLE, which is bounded by
//! the caller's limit; literals are capped in size, and so is everything one command brings
//! back: total bytes and number of untagged answers ([`ImapLimits`], per mailbox). A server
//! that sends more gets [`ImapError::TooMuch`] and the caller drops the session. An untagged `EXISTS` seen in any response
//! since the last `UID SEARCH` is remembered, so mail that arrived while we were busy wakes the
//! next IDLE at once.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::TlsMode;

/// Largest message we fetch (bytes); larger literals are an error.
const MAX_LITERAL: usize = 32 * 1024 * 1024;
/// Longest response line we accept.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("imap I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("imap: no answer within {0:?}")]
    Timeout(Duration),
    #[error("imap TLS: {0}")]
    Tls(String),
    #[error("imap server refused {command}: {text}")]
    Refused { command: &'static str, text: String },
    #[error("imap protocol: {0}")]
    Protocol(String),
    /// The answer to one command went past [`ImapLimits`]; the session must be dropped.
    #[error("imap: the answer to {command} exceeds {limit}")]
    TooMuch {
        command: &'static str,
        limit: String,
    },
}

/// What one command may bring back before the session is given up (a hostile or broken
/// server could otherwise stream literals until memory runs out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapLimits {
    /// Bytes of response lines and literals, together.
    pub max_bytes: usize,
    /// Untagged responses (`* ...`).
    pub max_untagged: usize,
}

impl Default for ImapLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_untagged: 10_000,
        }
    }
}

/// What is left of [`ImapLimits`] while one command's answer is read.
struct Budget {
    command: &'static str,
    bytes_left: usize,
    untagged_left: usize,
    limits: ImapLimits,
}

impl Budget {
    fn new(command: &'static str, limits: ImapLimits) -> Self {
        Self {
            command,
            bytes_left: limits.max_bytes,
            untagged_left: limits.max_untagged,
            limits,
        }
    }

    /// Takes `bytes` off the byte budget (before they are allocated).
    fn spend(&mut self, bytes: usize) -> Result<(), ImapError> {
        self.bytes_left = self
            .bytes_left
            .checked_sub(bytes)
            .ok_or(ImapError::TooMuch {
                command: self.command,
                limit: format!("{} bytes", self.limits.max_bytes),
            })?;
        Ok(())
    }

    /// Counts one untagged response.
    fn untagged(&mut self) -> Result<(), ImapError> {
        self.untagged_left = self
            .untagged_left
            .checked_sub(1)
            .ok_or(ImapError::TooMuch {
                command: self.command,
                limit: format!("{} untagged responses", self.limits.max_untagged),
            })?;
        Ok(())
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One untagged response line, with the literals it carried.
#[derive(Debug, Default)]
struct Untagged {
    text: String,
    literals: Vec<Vec<u8>>,
}

/// A logged-in (or about to be) IMAP session.
pub struct ImapSession {
    stream: BufReader<Box<dyn Stream>>,
    tag: u32,
    timeout: Duration,
    limits: ImapLimits,
    /// An untagged `EXISTS` arrived since the last `UID SEARCH` was sent.
    exists_seen: bool,
}

/// Why an IDLE ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEnd {
    /// The server reported a change in the message count (`* n EXISTS`).
    NewMail,
    /// The caller's limit passed without news.
    Timeout,
    /// The shutdown token fired; `DONE` was sent and answered.
    Shutdown,
}

/// What one response line means while IDLE is in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IdleLine {
    /// `+ idling`: the server accepted IDLE.
    Continuation,
    /// `* n EXISTS`.
    Exists,
    /// `* BYE ...`: the server is closing the connection.
    Bye(String),
    /// Our tag: IDLE is over (`ok`: it completed with OK).
    Tagged { ok: bool, text: String },
    /// Anything else (`* OK Still here`, `* n EXPUNGE`, `* n FETCH (FLAGS ...)`, `* n RECENT`).
    Other,
}

/// Reads `line` (a whole response line, literals cut out) during IDLE tagged `tag`.
fn idle_line(line: &str, tag: &str) -> IdleLine {
    if line == "+" || line.starts_with("+ ") {
        return IdleLine::Continuation;
    }
    if let Some(rest) = line.strip_prefix("* ") {
        if is_exists(rest) {
            return IdleLine::Exists;
        }
        if rest.len() >= 3 && rest.as_bytes()[..3].eq_ignore_ascii_case(b"BYE") {
            return IdleLine::Bye(rest.chars().take(200).collect());
        }
        return IdleLine::Other;
    }
    if let Some(status) = line
        .strip_prefix(tag)
        .and_then(|rest| rest.strip_prefix(' '))
    {
        return IdleLine::Tagged {
            ok: status.len() >= 2 && status.as_bytes()[..2].eq_ignore_ascii_case(b"OK"),
            text: status.chars().take(200).collect(),
        };
    }
    IdleLine::Other
}

/// `n EXISTS` (the untagged text after `* `).
fn is_exists(untagged: &str) -> bool {
    let mut words = untagged.split_ascii_whitespace();
    matches!(
        (words.next(), words.next(), words.next()),
        (Some(n), Some(word), None)
            if n.parse::<u32>().is_ok() && word.eq_ignore_ascii_case("EXISTS")
    )
}

/// `* CAPABILITY IMAP4rev1 IDLE ...` (untagged text after `* `, or a `[CAPABILITY ...]` code):
/// the capability names, uppercased.
fn capability_names(untagged: &str) -> Option<Vec<String>> {
    let mut words = untagged.split_ascii_whitespace();
    let first = words.next()?;
    if !first.eq_ignore_ascii_case("CAPABILITY") {
        return None;
    }
    Some(words.map(|w| w.to_ascii_uppercase()).collect())
}

/// Where and how to connect.
pub struct ImapTarget<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: TlsMode,
    pub connector: Option<&'a tokio_native_tls::TlsConnector>,
    pub timeout: Duration,
    pub limits: ImapLimits,
}

impl ImapSession {
    /// Connects, reads the greeting and secures the connection as `target.tls` asks.
    pub async fn connect(target: ImapTarget<'_>) -> Result<Self, ImapError> {
        let tcp = within(
            target.timeout,
            TcpStream::connect((target.host, target.port)),
        )
        .await??;
        let stream: Box<dyn Stream> = match target.tls {
            TlsMode::Implicit => secure(&target, Box::new(tcp)).await?,
            _ => Box::new(tcp),
        };
        let mut session = Self {
            stream: BufReader::new(stream),
            tag: 0,
            timeout: target.timeout,
            limits: target.limits,
            exists_seen: false,
        };
        let greeting = session.read_line().await?;
        if !greeting.starts_with("* OK") && !greeting.starts_with("* PREAUTH") {
            return Err(ImapError::Protocol("unexpected greeting".into()));
        }
        if matches!(target.tls, TlsMode::Starttls | TlsMode::Opportunistic) {
            let caps = session.command("CAPABILITY", "CAPABILITY").await?;
            let offered = caps
                .iter()
                .any(|u| u.text.to_ascii_uppercase().contains("STARTTLS"));
            if offered {
                session.command("STARTTLS", "STARTTLS").await?;
                // Nothing may be buffered past the tagged OK (RFC 3501 6.2.1).
                if !session.stream.buffer().is_empty() {
                    return Err(ImapError::Protocol("data after STARTTLS".into()));
                }
                let secured = secure(&target, session.stream.into_inner()).await?;
                session = Self {
                    stream: BufReader::new(secured),
                    tag: 0,
                    timeout: target.timeout,
                    limits: target.limits,
                    exists_seen: false,
                };
            } else if target.tls == TlsMode::Starttls {
                return Err(ImapError::Tls("server does not offer STARTTLS".into()));
            }
        }
        Ok(session)
    }

    /// A session over a stream that is already connected and past the greeting, for the
    /// fuzz target (`fuzz/`), which plays the server. Not an API: no TLS, no greeting check.
    #[doc(hidden)]
    pub fn over_stream<S>(stream: S, timeout: Duration) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self {
            stream: BufReader::new(Box::new(stream)),
            tag: 0,
            timeout,
            limits: ImapLimits::default(),
            exists_seen: false,
        }
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), ImapError> {
        let cmd = format!("LOGIN {} {}", quote(user)?, quote(password)?);
        self.command("LOGIN", &cmd).await.map(|_| ())
    }

    pub async fn select(&mut self, mailbox: &str) -> Result<(), ImapError> {
        let cmd = format!("SELECT {}", quote(mailbox)?);
        self.command("SELECT", &cmd).await.map(|_| ())
    }

    /// The server's capabilities (asked again: they may change after LOGIN), uppercased.
    pub async fn capabilities(&mut self) -> Result<Vec<String>, ImapError> {
        let answers = self.command("CAPABILITY", "CAPABILITY").await?;
        Ok(answers
            .iter()
            .filter_map(|a| capability_names(&a.text))
            .flatten()
            .collect())
    }

    /// UIDs of messages without `\Seen`.
    pub async fn unseen(&mut self) -> Result<Vec<u32>, ImapError> {
        self.exists_seen = false;
        let answers = self.command("UID SEARCH", "UID SEARCH UNSEEN").await?;
        let mut uids = Vec::new();
        for answer in answers {
            if let Some(rest) = answer.text.strip_prefix("SEARCH") {
                uids.extend(
                    rest.split_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok()),
                );
            }
        }
        Ok(uids)
    }

    /// The whole message with this UID, without marking it `\Seen`. `None`: it is gone.
    pub async fn fetch(&mut self, uid: u32) -> Result<Option<Vec<u8>>, ImapError> {
        let cmd = format!("UID FETCH {uid} BODY.PEEK[]");
        let answers = self.command("UID FETCH", &cmd).await?;
        Ok(answers
            .into_iter()
            .find(|a| a.text.to_ascii_uppercase().contains("FETCH") && !a.literals.is_empty())
            .and_then(|mut a| a.literals.pop()))
    }

    /// Adds `\Seen` to the message with this UID.
    pub async fn mark_seen(&mut self, uid: u32) -> Result<(), ImapError> {
        let cmd = format!("UID STORE {uid} +FLAGS.SILENT (\\Seen)");
        self.command("UID STORE", &cmd).await.map(|_| ())
    }

    /// IDLE (RFC 2177) until the server reports new mail, `max` passes or `shutdown` fires;
    /// then `DONE`. Returns at once with [`IdleEnd::NewMail`] when an `EXISTS` arrived since
    /// the last `UID SEARCH` (mail that came in while we were busy). The session must have a
    /// mailbox selected and the server must list `IDLE`.
    pub async fn idle(
        &mut self,
        max: Duration,
        shutdown: &CancellationToken,
    ) -> Result<IdleEnd, ImapError> {
        if std::mem::take(&mut self.exists_seen) {
            return Ok(IdleEnd::NewMail);
        }
        let deadline = tokio::time::Instant::now() + max;
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.write_line(&format!("{tag} IDLE")).await?;
        // Untagged data may come before the continuation; remember news, start waiting after.
        let mut news = false;
        let mut budget = Budget::new("IDLE", self.limits);
        loop {
            let (line, _) = self.read_response_line(&mut budget).await?;
            budget.untagged()?;
            match idle_line(&line, &tag) {
                IdleLine::Continuation => break,
                IdleLine::Exists => news = true,
                IdleLine::Bye(text) => return Err(ImapError::Protocol(text)),
                IdleLine::Tagged { ok: false, text } => {
                    return Err(ImapError::Refused {
                        command: "IDLE",
                        text,
                    });
                }
                // IDLE ended before it began (a server quirk): look again.
                IdleLine::Tagged { ok: true, .. } => return Ok(IdleEnd::NewMail),
                IdleLine::Other => {}
            }
        }
        let end = if news {
            IdleEnd::NewMail
        } else {
            loop {
                // `fill_buf` consumes nothing, so losing the race to the timer or the token
                // loses no data; once bytes are there, a whole line follows promptly.
                let available = tokio::select! {
                    _ = shutdown.cancelled() => break IdleEnd::Shutdown,
                    _ = tokio::time::sleep_until(deadline) => break IdleEnd::Timeout,
                    filled = self.stream.fill_buf() => filled.map(|b| b.len())?,
                };
                if available == 0 {
                    return Err(ImapError::Protocol("connection closed".into()));
                }
                let (line, _) = self.read_response_line(&mut budget).await?;
                budget.untagged()?;
                match idle_line(&line, &tag) {
                    IdleLine::Exists => break IdleEnd::NewMail,
                    IdleLine::Bye(text) => return Err(ImapError::Protocol(text)),
                    // The server ended IDLE itself (RFC 2177 allows it): no DONE needed.
                    IdleLine::Tagged { ok: true, .. } => return Ok(IdleEnd::Timeout),
                    IdleLine::Tagged { ok: false, text } => {
                        return Err(ImapError::Refused {
                            command: "IDLE",
                            text,
                        });
                    }
                    IdleLine::Continuation | IdleLine::Other => {}
                }
            }
        };
        self.write_line("DONE").await?;
        loop {
            let (line, _) = self.read_response_line(&mut budget).await?;
            budget.untagged()?;
            match idle_line(&line, &tag) {
                IdleLine::Tagged { ok: true, .. } => return Ok(end),
                IdleLine::Tagged { ok: false, text } => {
                    return Err(ImapError::Refused {
                        command: "IDLE",
                        text,
                    });
                }
                IdleLine::Bye(text) => return Err(ImapError::Protocol(text)),
                // News that raced our DONE: the next pass looks anyway.
                IdleLine::Exists | IdleLine::Continuation | IdleLine::Other => {}
            }
        }
    }

    pub async fn logout(mut self) -> Result<(), ImapError> {
        self.command("LOGOUT", "LOGOUT").await.map(|_| ())
    }

    /// Sends one command and collects untagged answers until its tagged completion.
    async fn command(
        &mut self,
        name: &'static str,
        command: &str,
    ) -> Result<Vec<Untagged>, ImapError> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.write_line(&format!("{tag} {command}")).await?;
        let mut answers = Vec::new();
        let mut budget = Budget::new(name, self.limits);
        loop {
            let (text, literals) = self.read_response_line(&mut budget).await?;
            if let Some(status) = text.strip_prefix(&format!("{tag} ")) {
                if status.len() >= 2 && status.as_bytes()[..2].eq_ignore_ascii_case(b"OK") {
                    return Ok(answers);
                }
                return Err(ImapError::Refused {
                    command: name,
                    text: status.chars().take(200).collect(),
                });
            }
            if let Some(rest) = text.strip_prefix("* ") {
                budget.untagged()?;
                if is_exists(rest) {
                    self.exists_seen = true;
                }
                answers.push(Untagged {
                    text: rest.to_string(),
                    literals,
                });
            }
            // "+ " continuation requests are not used by these commands; ignore them.
        }
    }

    /// Writes `line` and CRLF.
    async fn write_line(&mut self, line: &str) -> Result<(), ImapError> {
        let line = format!("{line}\r\n");
        within(self.timeout, async {
            self.stream.get_mut().write_all(line.as_bytes()).await?;
            self.stream.get_mut().flush().await
        })
        .await??;
        Ok(())
    }

    /// One logical response line: text with each `{n}` literal cut out and returned apart.
    /// Everything read is charged to `budget`, each literal before it is allocated.
    async fn read_response_line(
        &mut self,
        budget: &mut Budget,
    ) -> Result<(String, Vec<Vec<u8>>), ImapError> {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let line = self.read_line().await?;
            budget.spend(line.len() + 2)?;
            match literal_size(&line) {
                Some((prefix, size)) => {
                    if size > MAX_LITERAL {
                        return Err(ImapError::Protocol(format!("literal of {size} bytes")));
                    }
                    budget.spend(size)?;
                    text.push_str(prefix);
                    let mut literal = vec![0; size];
                    within(self.timeout, self.stream.read_exact(&mut literal)).await??;
                    literals.push(literal);
                }
                None => {
                    text.push_str(&line);
                    return Ok((text, literals));
                }
            }
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn read_line(&mut self) -> Result<String, ImapError> {
        let mut buf = Vec::new();
        let stream = &mut self.stream;
        let read = within(self.timeout, async {
            let mut limited = stream.take(MAX_LINE as u64);
            limited.read_until(b'\n', &mut buf).await
        })
        .await??;
        if read == 0 {
            return Err(ImapError::Protocol("connection closed".into()));
        }
        if !buf.ends_with(b"\n") {
            return Err(ImapError::Protocol("line too long".into()));
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Wraps `stream` in TLS for `target.host`.
async fn secure(
    target: &ImapTarget<'_>,
    stream: Box<dyn Stream>,
) -> Result<Box<dyn Stream>, ImapError> {
    let connector = target
        .connector
        .ok_or_else(|| ImapError::Tls("no TLS connector".into()))?;
    let tls = within(target.timeout, connector.connect(target.host, stream))
        .await?
        .map_err(|e| ImapError::Tls(e.to_string()))?;
    Ok(Box::new(tls))
}

/// `... {123}` at the end of a line: the text before it and the literal's size.
fn literal_size(line: &str) -> Option<(&str, usize)> {
    let body = line.strip_suffix('}')?;
    let open = body.rfind('{')?;
    let size = body[open + 1..].trim_end_matches('+').parse().ok()?;
    Some((&line[..open], size))
}

/// A quoted string; refuses characters a quoted string cannot carry.
fn quote(value: &str) -> Result<String, ImapError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(ImapError::Protocol("value with a line break".into()));
    }
    Ok(format!(
        "\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

async fn within<F: std::future::Future>(timeout: Duration, f: F) -> Result<F::Output, ImapError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| ImapError::Timeout(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_quotes() {
        assert_eq!(
            literal_size("* 1 FETCH (UID 7 BODY[] {42}"),
            Some(("* 1 FETCH (UID 7 BODY[] ", 42))
        );
        assert_eq!(literal_size("* 1 FETCH (FLAGS (\\Seen))"), None);
        assert_eq!(quote("a\"b\\c").expect("quoted"), "\"a\\\"b\\\\c\"");
        assert!(quote("a\r\nb").is_err());
    }

    #[test]
    fn idle_responses() {
        assert_eq!(idle_line("+ idling", "a7"), IdleLine::Continuation);
        assert_eq!(idle_line("+", "a7"), IdleLine::Continuation);
        assert_eq!(idle_line("* 4 EXISTS", "a7"), IdleLine::Exists);
        assert_eq!(idle_line("* 0 exists", "a7"), IdleLine::Exists);
        assert_eq!(idle_line("* 3 RECENT", "a7"), IdleLine::Other);
        assert_eq!(idle_line("* 2 EXPUNGE", "a7"), IdleLine::Other);
        assert_eq!(idle_line("* OK Still here", "a7"), IdleLine::Other);
        assert_eq!(
            idle_line("* 1 FETCH (FLAGS (\\Seen))", "a7"),
            IdleLine::Other
        );
        // Text that merely mentions EXISTS is not a count.
        assert_eq!(idle_line("* OK 5 EXISTS later", "a7"), IdleLine::Other);
        assert!(matches!(
            idle_line("* BYE shutting down", "a7"),
            IdleLine::Bye(_)
        ));
        assert_eq!(
            idle_line("a7 OK Idle completed (0.001 + 9.9 secs).", "a7"),
            IdleLine::Tagged {
                ok: true,
                text: "OK Idle completed (0.001 + 9.9 secs).".into()
            }
        );
        assert!(matches!(
            idle_line("a7 BAD Expected DONE.", "a7"),
            IdleLine::Tagged { ok: false, .. }
        ));
        // Another tag that shares a prefix is not ours.
        assert_eq!(idle_line("a71 OK done", "a7"), IdleLine::Other);
    }

    /// A session over one end of an in-process pipe; the test plays the server on the other.
    fn piped() -> (ImapSession, BufReader<tokio::io::DuplexStream>) {
        let (client, server) = tokio::io::duplex(4096);
        let session = ImapSession {
            stream: BufReader::new(Box::new(client)),
            tag: 0,
            timeout: Duration::from_secs(5),
            limits: ImapLimits::default(),
            exists_seen: false,
        };
        (session, BufReader::new(server))
    }

    async fn expect_line(server: &mut BufReader<tokio::io::DuplexStream>, want: &str) {
        let mut line = String::new();
        server.read_line(&mut line).await.expect("read");
        assert_eq!(line, format!("{want}\r\n"));
    }

    async fn say(server: &mut BufReader<tokio::io::DuplexStream>, text: &str) {
        server
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .expect("write");
    }

    #[tokio::test]
    async fn idle_wakes_on_exists_and_sends_done() {
        let (mut session, mut server) = piped();
        let never = CancellationToken::new();
        let server_side = async {
            expect_line(&mut server, "a1 IDLE").await;
            say(&mut server, "+ idling\r\n* OK Still here\r\n* 1 RECENT\r\n").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            say(&mut server, "* 4 EXISTS\r\n").await;
            expect_line(&mut server, "DONE").await;
            say(&mut server, "a1 OK Idle completed.\r\n").await;
        };
        let (end, ()) = tokio::join!(session.idle(Duration::from_secs(60), &never), server_side);
        assert_eq!(end.expect("idle"), IdleEnd::NewMail);
    }

    #[tokio::test]
    async fn idle_ends_with_done_on_timeout_and_on_shutdown() {
        let (mut session, mut server) = piped();
        let never = CancellationToken::new();
        let server_side = async {
            expect_line(&mut server, "a1 IDLE").await;
            say(&mut server, "+ idling\r\n").await;
            expect_line(&mut server, "DONE").await;
            // Late news racing the DONE is skipped; the next pass looks anyway.
            say(&mut server, "* 5 EXISTS\r\na1 OK Idle completed.\r\n").await;
        };
        let (end, ()) = tokio::join!(
            session.idle(Duration::from_millis(100), &never),
            server_side
        );
        assert_eq!(end.expect("idle"), IdleEnd::Timeout);

        let shutdown = CancellationToken::new();
        let server_side = async {
            expect_line(&mut server, "a2 IDLE").await;
            say(&mut server, "+ idling\r\n").await;
            shutdown.cancel();
            expect_line(&mut server, "DONE").await;
            say(&mut server, "a2 OK Idle completed.\r\n").await;
        };
        let (end, ()) = tokio::join!(
            session.idle(Duration::from_secs(60), &shutdown),
            server_side
        );
        assert_eq!(end.expect("idle"), IdleEnd::Shutdown);
    }

    #[tokio::test]
    async fn mail_seen_while_busy_skips_the_wait() {
        let (mut session, mut server) = piped();
        let never = CancellationToken::new();
        // A STORE answered with news of a new message: the next IDLE returns at once.
        let server_side = async {
            expect_line(&mut server, "a1 UID STORE 3 +FLAGS.SILENT (\\Seen)").await;
            say(&mut server, "* 4 EXISTS\r\na1 OK Store completed.\r\n").await;
        };
        let (stored, ()) = tokio::join!(session.mark_seen(3), server_side);
        stored.expect("store");
        let end = session
            .idle(Duration::from_secs(60), &never)
            .await
            .expect("idle");
        assert_eq!(end, IdleEnd::NewMail);
        // A server that refuses IDLE is an error, and a BYE ends the session.
        let server_side = async {
            expect_line(&mut server, "a2 IDLE").await;
            say(&mut server, "a2 BAD Unknown command\r\n").await;
            expect_line(&mut server, "a3 IDLE").await;
            say(&mut server, "+ idling\r\n* BYE Server shutting down.\r\n").await;
        };
        let both = async {
            let refused = session.idle(Duration::from_secs(60), &never).await;
            let bye = session.idle(Duration::from_secs(60), &never).await;
            (refused, bye)
        };
        let ((refused, bye), ()) = tokio::join!(both, server_side);
        assert!(matches!(
            refused,
            Err(ImapError::Refused {
                command: "IDLE",
                ..
            })
        ));
        assert!(matches!(bye, Err(ImapError::Protocol(_))));
    }

    /// A hostile server answers one FETCH with literal after literal (80 × 1 MiB) and one
    /// SEARCH with 10,001 untagged lines: the default limits stop both and the session's
    /// owner gets `TooMuch` instead of holding everything in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_answer_is_capped_in_bytes_and_untagged_responses() {
        let (mut session, mut server) = piped();
        let flood = tokio::spawn(async move {
            expect_line(&mut server, "a1 UID FETCH 7 BODY.PEEK[]").await;
            let literal = vec![b'x'; 1024 * 1024];
            for i in 1..=80 {
                let head = format!("* {i} FETCH (UID {i} BODY[] {{{}}}\r\n", literal.len());
                let sent = async {
                    server.get_mut().write_all(head.as_bytes()).await?;
                    server.get_mut().write_all(&literal).await?;
                    server.get_mut().write_all(b")\r\n").await
                };
                if sent.await.is_err() {
                    return i; // the client hung up
                }
            }
            let _ = server.get_mut().write_all(b"a1 OK done\r\n").await;
            81
        });
        let fetched = session.fetch(7).await;
        assert!(
            matches!(
                &fetched,
                Err(ImapError::TooMuch {
                    command: "UID FETCH",
                    ..
                })
            ),
            "{:?}",
            fetched.as_ref().map(|m| m.as_ref().map(Vec::len))
        );
        drop(session);
        let sent = flood.await.expect("server");
        assert!(
            sent <= 66,
            "the client stopped reading after 64 MiB ({sent} literals sent)"
        );

        let (mut session, mut server) = piped();
        let flood = tokio::spawn(async move {
            expect_line(&mut server, "a1 UID SEARCH UNSEEN").await;
            for i in 1..=10_001 {
                let line = format!("* {i} FETCH (FLAGS (\\Seen))\r\n");
                if server.get_mut().write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = server.get_mut().write_all(b"a1 OK done\r\n").await;
        });
        let unseen = session.unseen().await;
        assert!(
            matches!(&unseen, Err(ImapError::TooMuch { command: "UID SEARCH", limit }) if limit.contains("10000 untagged")),
            "{unseen:?}"
        );
        drop(session);
        flood.await.expect("server");
    }

    #[test]
    fn capabilities_are_listed() {
        assert_eq!(
            capability_names("CAPABILITY IMAP4rev1 SASL-IR idle LITERAL+"),
            Some(vec![
                "IMAP4REV1".to_string(),
                "SASL-IR".into(),
                "IDLE".into(),
                "LITERAL+".into()
            ])
        );
        assert_eq!(capability_names("OK [CAPABILITY IMAP4rev1 IDLE] hi"), None);
        assert_eq!(capability_names("3 EXISTS"), None);
    }

    /// Found while writing `fuzz/imap`: a status or untagged answer starting with a multi-byte
    /// character (any byte that is not UTF-8 becomes one) was sliced inside it: a panic.
    #[tokio::test]
    async fn answers_starting_with_multibyte_text_are_refusals_not_panics() {
        let (mut session, mut server) = piped();
        let never = CancellationToken::new();
        let server_side = async {
            expect_line(&mut server, "a1 CAPABILITY").await;
            say(&mut server, "* CAPABILITY IMAP4rev1\r\na1 \u{20ac}OK\r\n").await;
            expect_line(&mut server, "a2 IDLE").await;
            say(&mut server, "* \u{e9}\u{20ac}\r\na2 \u{20ac}\r\n").await;
        };
        let client = async {
            let caps = session.capabilities().await;
            (caps, session.idle(Duration::from_secs(60), &never).await)
        };
        let ((caps, idle), ()) = tokio::join!(client, server_side);
        assert!(matches!(
            caps,
            Err(ImapError::Refused {
                command: "CAPABILITY",
                ..
            })
        ));
        assert!(matches!(
            idle,
            Err(ImapError::Refused {
                command: "IDLE",
                ..
            })
        ));
    }
}
