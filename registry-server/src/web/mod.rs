//! The public web face: one HTTP listener (HTTP/1.1 and HTTP/2) for those without gRPC tooling.
//!
//! - [`api`]: the read methods as JSON (the Connect protocol's unary form), answered by the
//!   same service objects as gRPC; [`error`] turns their `Status` into a JSON error with the
//!   same code and field violations.
//! - [`tiles`]: the log as C2SP `tlog-tiles` for mirrors, auditors and caches.
//! - [`openapi`]: the OpenAPI description of the JSON API, generated from the `.proto` files.
//! - [`page`]: the lookup page at `/`, which checks the registry's evidence in the browser.
//!
//! Nothing here writes: commands stay on the gRPC port.

pub mod api;
pub mod error;
pub mod listener;
pub mod openapi;
pub mod page;
pub mod tiles;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use tonic_health::pb::health_check_response::ServingStatus;

use crate::grpc::audit::AuditApi;
use crate::grpc::health::HealthHandle;
use crate::grpc::lookup::LookupApi;
use crate::log::LogReader;
use crate::peers::Budget;

/// What the web face serves from: the log and the services the gRPC server holds.
#[derive(Clone)]
pub struct WebServices {
    /// The log, for tiles.
    pub reader: LogReader,
    /// The audit methods.
    pub audit: Arc<AuditApi>,
    /// The lookups; absent on a server without the registry's machine.
    pub lookup: Option<Arc<LookupApi>>,
    /// gRPC health, which the JSON API and `/healthz` follow.
    pub health: HealthHandle,
    /// Where requests are counted and timed.
    pub metrics: Arc<crate::telemetry::Metrics>,
}

/// How the web face serves.
#[derive(Debug, Clone, Copy)]
pub struct WebSettings {
    /// Calls in progress at once; more are refused at once.
    pub max_calls: usize,
    /// Bytes of tiles kept in memory.
    pub tile_cache_bytes: u64,
    /// How long one request may take.
    pub request_timeout: std::time::Duration,
    /// Calls in progress from one peer (0: no cap); more are refused at once.
    pub max_calls_per_peer: usize,
    /// One log line per request (target `registry::request`), as for gRPC calls.
    pub request_log: bool,
    /// The language the lookup page opens in.
    pub page_language: crate::config::PageLanguage,
}

impl WebSettings {
    /// The settings of the configuration, clamped as the gRPC listener clamps them.
    pub fn of(config: &crate::config::Config) -> Self {
        let secs = |s: u64| std::time::Duration::from_secs(s.clamp(1, 86_400));
        Self {
            max_calls: config.max_calls,
            tile_cache_bytes: u64::from(config.tile_cache_mib) << 20,
            // 0 means no timeout for gRPC; here a day stands for it.
            request_timeout: secs(match config.request_timeout_secs {
                0 => 86_400,
                s => s,
            }),
            max_calls_per_peer: config.max_calls_per_peer,
            request_log: config.request_log,
            page_language: config.page_language,
        }
    }
}

/// The web face's routes.
pub fn router(services: WebServices, settings: WebSettings) -> Result<Router, page::PageError> {
    let health = services.health.clone();
    let observer = Observer {
        metrics: services.metrics.clone(),
        log: settings.request_log,
        calls: Budget::new(usize::MAX, settings.max_calls_per_peer),
    };
    let page = page::routes(services.audit.identity(), settings.page_language)?;
    let router = Router::new()
        .merge(page)
        .merge(api::routes(services.audit, services.lookup, services.health))
        .merge(tiles::routes(services.reader, settings.tile_cache_bytes))
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(move || healthz(health.clone())))
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES));
    // Over the call cap a request is refused at once (503, as gRPC answers UNAVAILABLE) rather
    // than queued; a request that takes longer than the timeout is cut (504).
    let limits = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(settings.max_calls.max(1))
        .timeout(settings.request_timeout);
    // Outermost, so that shed and timed-out requests are counted too.
    Ok(router.layer(limits).layer(axum::middleware::from_fn_with_state(observer, observe)))
}

/// What [`observe`] reports to.
#[derive(Clone)]
struct Observer {
    metrics: Arc<crate::telemetry::Metrics>,
    log: bool,
    /// Calls in progress per peer (the total is capped by the concurrency limit inside).
    calls: Budget,
}

/// Counts and times every request under its route, logs it when asked (as the gRPC calls are),
/// and answers with its request ID (`x-request-id`: the client's own when it sent a usable one).
/// Keeps the connection from its idle deadline while the request runs, and refuses a peer's
/// request over its cap of calls in progress at once (429, as gRPC answers RESOURCE_EXHAUSTED).
async fn observe(
    axum::extract::State(observer): axum::extract::State<Observer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = route_of(request.uri().path());
    let id = crate::telemetry::request_id(request.headers());
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<listener::WebPeer>>()
        .map(|c| c.0.0.clone());
    let busy = peer.as_ref().map(|p| p.activity.begin());
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let share = match &peer {
        Some(p) => observer.calls.take(p.key, 1).map(Some),
        None => Ok(None),
    };
    let (mut response, held) = match share {
        Ok(share) => (next.run(request).await, Some((share, busy))),
        Err(_) => {
            observer.metrics.refused("calls_per_peer");
            let refusal = error::HttpError(tonic::Status::resource_exhausted(
                "this peer has as many calls in progress as one may have (max_calls_per_peer); retry later",
            ));
            (refusal.into_response(), None)
        }
    };
    let peer = peer.map(|p| p.key.to_string());
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    observer.metrics.http_request(route, status, seconds);
    if observer.log {
        tracing::info!(
            target: "registry::request",
            method = %format_args!("{method} {route}"),
            peer = %peer.unwrap_or_default(),
            code = status,
            duration_ms = seconds * 1e3,
            request_id = %id,
            "request"
        );
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(crate::telemetry::REQUEST_ID, value);
    }
    match held {
        Some(held) => response.map(|body| axum::body::Body::new(Holding { body, _held: held })),
        None => response,
    }
}

/// A response body that keeps the request's place in the per-peer count and its connection's
/// activity until the answer has been sent (a tile bundle or a large batch answer takes a
/// while to a slow client), as the gRPC port's calls do.
struct Holding<T> {
    body: axum::body::Body,
    _held: T,
}

impl<T: Unpin> http_body::Body for Holding<T> {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request's route for metrics: one of a fixed set, so that no client can mint labels.
fn route_of(path: &str) -> &'static str {
    if let Some(m) = api::METHODS.iter().find(|m| m.path() == path) {
        return m.name;
    }
    match path {
        "/" => "page",
        p if p.starts_with("/assets/") => "assets",
        "/checkpoint" => "checkpoint",
        "/openapi.json" => "openapi",
        "/healthz" => "healthz",
        p if p.starts_with("/tile/entries/") => "entries",
        p if p.starts_with("/tile/") => "tile",
        _ => "other",
    }
}

async fn overloaded(e: tower::BoxError) -> axum::response::Response {
    let status = if e.is::<tower::timeout::error::Elapsed>() {
        tonic::Status::deadline_exceeded("the request took longer than the server allows")
    } else {
        tonic::Status::unavailable("the server is at its limit of calls in progress; retry")
    };
    error::HttpError(status).into_response()
}

/// For load balancers of the web port: 200 while the server serves, 503 otherwise.
async fn healthz(health: HealthHandle) -> (StatusCode, &'static str) {
    match health.get("") {
        Some(ServingStatus::NotServing) => (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n"),
        _ => (StatusCode::OK, "SERVING\n"),
    }
}

async fn openapi_json() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        openapi::document_json(),
    )
}

/// Serves the web face on `addr` until `stop`, accepting connections as `accepting` says (its
/// caps, deadlines and TLS, with the gRPC port's certificate); returns the address it listens on.
pub async fn serve_web(
    addr: SocketAddr,
    services: WebServices,
    settings: WebSettings,
    accepting: crate::listener::Accepting,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    let metrics = services.metrics.clone();
    let app = router(services, settings).map_err(std::io::Error::other)?;
    let secure = accepting.tls.is_some();
    let accepted = crate::listener::incoming(tcp, accepting, metrics, stop.clone());
    let incoming = listener::WebIncoming::new(accepted, local);
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<listener::WebPeer>();
        let serving = axum::serve(incoming, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "the web listener failed");
        }
    });
    tracing::info!(%local, tls = secure, "serving the web face (lookup page, JSON API, tiles)");
    Ok(local)
}
