//! Serving: the router and the accept loop, with hyper's limits on slow clients and
//! headers, and graceful shutdown.

use crate::app::App;
use crate::http;
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The router: every path goes to the one handler, which matches configured routes itself
/// so that unknown paths and wrong methods get the contract's error body too.
pub fn app(state: Arc<App>) -> Router {
    Router::new().fallback(http::handle).with_state(state)
}

/// Serves `state` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (for at most [`SHUTDOWN_GRACE`]).
///
/// Each connection is served by hyper with the request limits: a client has
/// `header_timeout_ms` to send its headers (so a slow client cannot hold a connection), and
/// hyper's own caps on header count and size sit above the handler's checks, so that a
/// request just over a limit still gets the contract's error body.
pub async fn run(
    listener: TcpListener,
    state: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let limits = state.limits;
    let router = app(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_headers(limits.max_headers.saturating_mul(2).saturating_add(16))
        // hyper refuses buffers under 8 KiB.
        .max_buf_size((limits.max_header_bytes.saturating_mul(2) + 1024).max(8192));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // The client's address travels with each request: authentication routes
                // count failed logons per address.
                let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                    router.clone(),
                    move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                        request
                    },
                ));
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after {SHUTDOWN_GRACE:?}, closing them");
    }
    Ok(())
}

/// Longest wait for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
