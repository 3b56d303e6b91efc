//! The operator's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Context;
use super::runtime::Shared;

/// `/metrics`, `/healthz` (the process is up) and `/readyz` (the store answers and this replica
/// leads or campaigns).
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    shared: Arc<Shared>,
) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let metrics = Arc::clone(&ctx.metrics);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&metrics);
                async move {
                    let pieces = crate::metrics::pieces(m)
                        .map(|p| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(p)));
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        axum::body::Body::from_stream(futures_util::stream::iter(pieces)),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let shared = Arc::clone(&shared);
                async move {
                    if shared.store_ok.load(Ordering::Relaxed) {
                        let role = if shared.leading.load(Ordering::Relaxed) {
                            "leader"
                        } else {
                            "standby"
                        };
                        (StatusCode::OK, format!("ready ({role})\n"))
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: the store is unreachable\n".to_string(),
                        )
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
