//! The HTTP server's own guards, below the routes: the accept loop (HTTP/1.1 through hyper,
//! with a header-read timeout, so a client that sends half a request head is disconnected
//! after `server.header_timeout_secs`), a request timeout (`server.request_timeout_secs`:
//! 408 when the request body had not all arrived, 503 otherwise), a concurrency limit
//! (`server.max_concurrent_requests`: 503 with `Retry-After` beyond it, instead of queueing
//! without bound), and a panic-catching layer (500, counted in [`HTTP_PANICS`]). Every refusal
//! is problem+json.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::{debug, error, warn};

use super::problem::{Problem, ProblemType};
use crate::config::ServerConfig;

/// Requests whose handler panicked since start (answered 500), shown in `/metrics`.
pub static HTTP_PANICS: AtomicU64 = AtomicU64::new(0);

/// Wraps the routes in the request guards (outermost first: panics, concurrency, timeout).
pub fn layers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    config: &ServerConfig,
) -> Router<S> {
    let limits = Arc::new(Limits {
        slots: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
        request_timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
    });
    router
        .layer(axum::middleware::from_fn_with_state(limits, limit_and_time))
        .layer(CatchPanicLayer::custom(panicked))
}

struct Limits {
    slots: Arc<Semaphore>,
    request_timeout: Duration,
}

/// A panic inside a handler: counted, logged without its message (it may quote input), 500.
fn panicked(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    HTTP_PANICS.fetch_add(1, Ordering::Relaxed);
    error!("an HTTP handler panicked; answered 500");
    Problem::internal().into_response()
}

async fn limit_and_time(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_slot) = limits.slots.clone().try_acquire_owned() else {
        debug!("concurrency limit reached; answered 503");
        let mut response = Problem::new(
            ProblemType::Overloaded,
            "the server is handling as many requests as it is configured to; retry shortly",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let received = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(Tracked {
            received: received.clone(),
            inner: body,
        })
    });
    let seconds = limits.request_timeout.as_secs();
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) if !received.load(Ordering::Relaxed) => {
            warn!("request body not received in time; answered 408");
            let mut response = Problem::new(
                ProblemType::RequestTimeout,
                format!("the request body did not arrive within {seconds} s"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Err(_) => {
            warn!("request not answered in time; answered 503");
            Problem::new(
                ProblemType::Timeout,
                format!("the request did not complete within {seconds} s"),
            )
            .into_response()
        }
    }
}

/// A request body that notes when it has been read to its end (or had none).
struct Tracked {
    received: Arc<AtomicBool>,
    inner: Body,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.received.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.received.store(true, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Accepts HTTP/1.1 connections until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "accepting an HTTP connection failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let (shutdown, open) = (shutdown.clone(), open_rx.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(open);
        });
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    /// A handler that panics gets a 500 problem+json and is counted; the router keeps serving.
    #[tokio::test]
    async fn a_panicking_handler_is_a_counted_500() {
        let config = ServerConfig::default();
        let app = layers(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "ok" })),
            &config,
        );
        let before = HTTP_PANICS.load(Ordering::Relaxed);
        let response = app
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(HTTP_PANICS.load(Ordering::Relaxed) > before);
        let response = app
            .oneshot(Request::get("/fine").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
