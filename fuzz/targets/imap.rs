//! The IMAP client's response reading (`channels::email::imap`): the fuzz input is everything
//! a hostile server says, and the client runs what the mailbox watcher runs (CAPABILITY,
//! SELECT, UID SEARCH, UID FETCH of up to three messages, UID STORE, IDLE, LOGOUT) until the
//! first error. Lines, literals, tagged and untagged answers and IDLE's responses all come
//! from the input; what the client writes is discarded.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use switchboard_mail::imap::{ImapError, ImapSession};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// The server: reads come from the input, writes go nowhere.
struct Server {
    said: Vec<u8>,
    at: usize,
}

impl AsyncRead for Server {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let rest = &self.said[self.at..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Server {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});

async fn session(data: &[u8]) -> Result<(), ImapError> {
    let server = Server {
        said: data.to_vec(),
        at: 0,
    };
    let mut imap = ImapSession::over_stream(server, Duration::from_secs(60));
    imap.capabilities().await?;
    imap.select("INBOX").await?;
    for uid in imap.unseen().await?.into_iter().take(3) {
        if imap.fetch(uid).await?.is_some() {
            imap.mark_seen(uid).await?;
        }
    }
    // The server never makes us wait: every read is answered from the input at once.
    imap.idle(Duration::from_secs(3600), &CancellationToken::new())
        .await?;
    imap.logout().await
}

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    let _ = RUNTIME.block_on(session(data));
}
