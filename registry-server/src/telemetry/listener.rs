//! The metrics listener: `GET /metrics` in the Prometheus text format, on an address of its own
//! so that it can stay on a private network while the gRPC port faces the internet.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// Serves `/metrics` on `addr` until `stop`; returns the address it listens on.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                // Reading the registry's figures touches the store and the file system.
                let text = tokio::task::spawn_blocking(move || metrics.render())
                    .await
                    .unwrap_or_else(|e| format!("# the scrape failed: {e}\n"));
                ([(CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], text)
            }
        }),
    );
    tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    tracing::info!(%local, "serving metrics at /metrics");
    Ok(local)
}
