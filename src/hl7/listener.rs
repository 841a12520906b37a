//! The MLLP server inside the daemon, over plain TCP or TLS (`hl7.tls_certificate`, OpenSSL),
//! optionally mutual TLS (`hl7.tls_client_ca`) and a source allow-list (`hl7.allow_from`):
//! see [`super::access`]. One task per connection (a semaphore caps how many);
//! messages on a connection are handled in order, each acknowledged only after it is
//! committed. A silent connection is closed after `hl7.idle_timeout_secs`. An oversize frame
//! gets AR and the connection stays usable; a peer that disconnects mid-frame has what arrived
//! archived as rejected, and the connection is closed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::{X509, X509VerifyResult};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_openssl::SslStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::access::{SourceAllowList, SubjectPattern};
use super::mllp::{Frame, FrameReader, encode_frame};
use super::processor::Hl7Processor;
use crate::store::{AuditEntry, new_id};

/// Builds the TLS acceptor from the configured PEM certificate chain and PKCS#8 key; with
/// `hl7.tls_client_ca`, it also demands a client certificate that chains to that CA.
pub fn tls_acceptor(config: &crate::config::Hl7Config) -> Result<Option<SslAcceptor>, String> {
    let (Some(cert_path), Some(key)) = (&config.tls_certificate, &config.tls_key) else {
        return Ok(None);
    };
    let tls = |e: openssl::error::ErrorStack| format!("hl7 TLS: {e}");
    let pem = std::fs::read(cert_path)
        .map_err(|e| format!("hl7.tls_certificate {}: {e}", cert_path.display()))?;
    let chain = X509::stack_from_pem(&pem).map_err(tls)?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(format!(
            "hl7.tls_certificate {}: no certificate in the file",
            cert_path.display()
        ));
    };
    let key = key.read().map_err(|e| e.to_string())?;
    let key = PKey::private_key_from_pem(key.as_bytes()).map_err(tls)?;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls)?;
    builder.set_certificate(leaf).map_err(tls)?;
    for cert in intermediates {
        builder.add_extra_chain_cert(cert.clone()).map_err(tls)?;
    }
    builder.set_private_key(&key).map_err(tls)?;
    builder
        .check_private_key()
        .map_err(|_| "hl7.tls_key does not match hl7.tls_certificate".to_string())?;
    if let Some(ca_path) = &config.tls_client_ca {
        let pem = std::fs::read(ca_path)
            .map_err(|e| format!("hl7.tls_client_ca {}: {e}", ca_path.display()))?;
        let cas = X509::stack_from_pem(&pem).map_err(tls)?;
        if cas.is_empty() {
            return Err(format!(
                "hl7.tls_client_ca {}: no certificate in the file",
                ca_path.display()
            ));
        }
        for ca in &cas {
            builder.cert_store_mut().add_cert(ca.clone()).map_err(tls)?;
            builder.add_client_ca(ca).map_err(tls)?;
        }
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(Some(builder.build()))
}

/// Who may connect, from the feed's configuration.
struct Access {
    sources: SourceAllowList,
    subjects: Vec<SubjectPattern>,
    /// Refusals are audited at most once a second; the rest are counted into the next row.
    audit_gate: Mutex<(Option<Instant>, u64)>,
}

impl Access {
    fn of(config: &crate::config::Hl7Config) -> Result<Self, String> {
        let subjects = config
            .allowed_subjects
            .iter()
            .map(|s| SubjectPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            sources: SourceAllowList::parse(&config.allow_from)?,
            subjects,
            audit_gate: Mutex::new((None, 0)),
        })
    }

    /// Logs a refused connection (by connection id) and audits it, throttled.
    async fn refuse(
        &self,
        processor: &Hl7Processor,
        connection: &str,
        reason: &str,
        fingerprint: Option<String>,
    ) {
        warn!(
            connection,
            reason,
            fingerprint = fingerprint.as_deref().unwrap_or(""),
            "MLLP connection refused"
        );
        let suppressed = {
            let Ok(mut gate) = self.audit_gate.lock() else {
                return;
            };
            let now = Instant::now();
            if gate
                .0
                .is_some_and(|last| now - last < Duration::from_secs(1))
            {
                gate.1 += 1;
                return;
            }
            gate.0 = Some(now);
            std::mem::take(&mut gate.1)
        };
        let mut detail = reason.to_string();
        if let Some(fingerprint) = fingerprint {
            detail.push_str(&format!("; client certificate sha256 {fingerprint}"));
        }
        if suppressed > 0 {
            detail.push_str(&format!(
                "; {suppressed} earlier refusals not recorded one by one"
            ));
        }
        let entry = AuditEntry {
            organization_id: processor.organization_id.clone(),
            action: "hl7_connection_refused".into(),
            actor: format!("mllp:{connection}"),
            outcome: Some("refused".into()),
            detail: Some(detail),
            ..AuditEntry::default()
        };
        if let Err(e) = processor.store.audit().record(&entry).await {
            warn!(connection, error = %e, "cannot audit a refused MLLP connection");
        }
    }
}

/// Accepts connections until `shutdown`. A source outside `hl7.allow_from` is disconnected
/// at once; under mutual TLS a client without a trusted certificate, or whose subject is not
/// in `hl7.allowed_subjects`, is disconnected after the handshake; nothing is read from
/// either.
pub async fn serve(
    listener: TcpListener,
    processor: Arc<Hl7Processor>,
    tls: Option<SslAcceptor>,
    shutdown: CancellationToken,
) {
    let access = match Access::of(&processor.config) {
        Ok(access) => Arc::new(access),
        Err(e) => {
            // Validated at start-up already; fail closed all the same.
            error!(error = %e, "hl7 access settings are invalid; the MLLP listener is not running");
            return;
        }
    };
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
        let (processor, shutdown, tls, access) = (
            processor.clone(),
            shutdown.clone(),
            tls.clone(),
            access.clone(),
        );
        tokio::spawn(async move {
            let connection = new_id("mllp");
            debug!(connection, %peer, "MLLP connection opened");
            if !access.sources.allows(peer.ip()) {
                drop(stream);
                access
                    .refuse(
                        &processor,
                        &connection,
                        "source address not in hl7.allow_from",
                        None,
                    )
                    .await;
                drop(permit);
                return;
            }
            let _ = stream.set_nodelay(true);
            let _open = crate::metrics::metrics().hl7_connected(peer.ip());
            let result = match tls {
                None => connection_loop(stream, processor, shutdown).await,
                Some(tls) => match handshake(&tls, stream).await {
                    Ok(stream) => match verified_subject(&access, &stream) {
                        Ok(()) => connection_loop(stream, processor, shutdown).await,
                        Err((reason, fingerprint)) => {
                            drop(stream);
                            access
                                .refuse(&processor, &connection, reason, fingerprint)
                                .await;
                            Ok(())
                        }
                    },
                    Err(Handshake::ClientCertificate(reason)) => {
                        access.refuse(&processor, &connection, &reason, None).await;
                        Ok(())
                    }
                    Err(Handshake::Failed(e)) => Err(e),
                },
            };
            if let Err(e) = result {
                debug!(connection, error = %e, "MLLP connection ended with an error");
            }
            drop(permit);
        });
    }
}

enum Handshake {
    /// Mutual TLS refused the client's certificate (or it sent none).
    ClientCertificate(String),
    /// Anything else (a port scan, a timeout, a protocol error).
    Failed(std::io::Error),
}

async fn handshake(
    tls: &SslAcceptor,
    stream: TcpStream,
) -> Result<SslStream<TcpStream>, Handshake> {
    let failed = |e: String| Handshake::Failed(std::io::Error::other(e));
    let ssl = Ssl::new(tls.context()).map_err(|e| failed(e.to_string()))?;
    let mut stream = SslStream::new(ssl, stream).map_err(|e| failed(e.to_string()))?;
    let accepted = tokio::time::timeout(Duration::from_secs(30), Pin::new(&mut stream).accept())
        .await
        .map_err(|_| failed("TLS handshake timed out".into()))?;
    match accepted {
        Ok(()) => Ok(stream),
        Err(e) => {
            let verify = stream.ssl().verify_result();
            if verify != X509VerifyResult::OK {
                Err(Handshake::ClientCertificate(format!(
                    "client certificate not trusted: {}",
                    verify.error_string()
                )))
            } else if tls
                .context()
                .verify_mode()
                .contains(SslVerifyMode::FAIL_IF_NO_PEER_CERT)
                && stream.ssl().peer_certificate().is_none()
            {
                Err(Handshake::ClientCertificate(
                    "no client certificate presented".into(),
                ))
            } else {
                Err(failed(e.to_string()))
            }
        }
    }
}

/// Under mutual TLS: the client certificate's subject is one of `hl7.allowed_subjects`.
/// The error carries the reason and the certificate's SHA-256 fingerprint.
fn verified_subject(
    access: &Access,
    stream: &SslStream<TcpStream>,
) -> Result<(), (&'static str, Option<String>)> {
    if access.subjects.is_empty() {
        return Ok(());
    }
    let Some(cert) = stream.ssl().peer_certificate() else {
        return Err(("no client certificate presented", None));
    };
    if SubjectPattern::any_matches(&access.subjects, cert.subject_name()) {
        return Ok(());
    }
    let fingerprint = cert.digest(MessageDigest::sha256()).ok().map(hex::encode);
    Err((
        "client certificate subject not in hl7.allowed_subjects",
        fingerprint,
    ))
}

async fn connection_loop<S>(
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
