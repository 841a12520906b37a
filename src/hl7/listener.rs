//! The MLLP server inside the daemon, over plain TCP or TLS (`hl7.tls_certificate`). One task per connection (a semaphore caps how many);
//! messages on a connection are handled in order, each acknowledged only after it is
//! committed. A silent connection is closed after `hl7.idle_timeout_secs`. An oversize frame
//! gets AR and the connection stays usable; a peer that disconnects mid-frame has what arrived
//! archived as rejected, and the connection is closed.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_native_tls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::mllp::{Frame, FrameReader, encode_frame};
use super::processor::Hl7Processor;

/// Builds the TLS acceptor from the configured PEM certificate chain and PKCS#8 key.
pub fn tls_acceptor(config: &crate::config::Hl7Config) -> Result<Option<TlsAcceptor>, String> {
    let (Some(cert), Some(key)) = (&config.tls_certificate, &config.tls_key) else {
        return Ok(None);
    };
    let cert =
        std::fs::read(cert).map_err(|e| format!("hl7.tls_certificate {}: {e}", cert.display()))?;
    let key = key.read().map_err(|e| e.to_string())?;
    let identity = native_tls::Identity::from_pkcs8(&cert, key.as_bytes())
        .map_err(|e| format!("hl7 TLS identity: {e}"))?;
    let acceptor = native_tls::TlsAcceptor::new(identity).map_err(|e| format!("hl7 TLS: {e}"))?;
    Ok(Some(TlsAcceptor::from(acceptor)))
}

/// Accepts connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    processor: Arc<Hl7Processor>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(processor.config.max_connections.max(1)));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "HL7 MLLP listener is running");
    }
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "accepting an MLLP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (processor, shutdown, tls) = (processor.clone(), shutdown.clone(), tls.clone());
        tokio::spawn(async move {
            debug!(%peer, "MLLP connection opened");
            let _ = stream.set_nodelay(true);
            let result = match tls {
                None => connection(stream, processor, shutdown).await,
                Some(tls) => {
                    match tokio::time::timeout(Duration::from_secs(30), tls.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, processor, shutdown).await,
                        Ok(Err(e)) => Err(std::io::Error::other(e)),
                        Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
                    }
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "MLLP connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn connection<S>(
    stream: S,
    processor: Arc<Hl7Processor>,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FrameReader::new(read, processor.config.max_frame_bytes);
    let idle = Duration::from_secs(processor.config.idle_timeout_secs.max(1));
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(idle, frames.next_frame()) => match frame {
                Ok(frame) => frame?,
                Err(_) => return Ok(()), // idle
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let payload = match frame {
            None => return Ok(()),
            Some(Frame::Message(payload)) => payload,
            Some(Frame::Oversize { head, size }) => {
                let reason = format!(
                    "frame of {size} bytes exceeds hl7.max_frame_bytes ({})",
                    processor.config.max_frame_bytes
                );
                match processor.reject_oversize(&head, &reason).await {
                    Ok(ack) => {
                        write.write_all(&encode_frame(ack.as_bytes())).await?;
                        write.flush().await?;
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot archive an oversize frame; closing");
                        return Ok(());
                    }
                }
                continue;
            }
            Some(Frame::Truncated(partial)) => {
                if !partial.is_empty() {
                    let _ = processor.archive_truncated(&partial).await;
                }
                return Ok(());
            }
        };
        match processor.handle(&payload).await {
            Ok(outcome) => {
                write
                    .write_all(&encode_frame(outcome.ack.as_bytes()))
                    .await?;
                write.flush().await?;
            }
            Err(e) => {
                // Not even archived: no ACK, so the sender keeps the message and retries.
                warn!(error = %e, "HL7 message could not be archived; closing without ACK");
                return Ok(());
            }
        }
    }
}
