//! The tower layer that counts and times every call, and writes the request log.
//!
//! It sits outside admission control, so calls the limits refuse are counted with their codes
//! too. A call ends when its answer's last frame has been sent (streams included) or the client
//! went away (`Canceled`). Every answer carries an `x-request-id` header: the client's own, when
//! it sent a well-formed one, or a new UUIDv7; the request log line names the same ID, so a
//! client's complaint can be found in the server's log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tonic::{Code, Status};

use super::{HandledLabels, MethodLabels, Metrics, code_name};
use crate::peers::Peer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The header that carries a call's request ID.
pub const REQUEST_ID: &str = "x-request-id";

/// Counts, times and (when `log_requests`) logs every call.
#[derive(Clone)]
pub struct TelemetryLayer {
    metrics: Arc<Metrics>,
    log_requests: bool,
}

impl TelemetryLayer {
    /// The layer over `metrics`.
    pub fn new(metrics: Arc<Metrics>, log_requests: bool) -> Self {
        Self { metrics, log_requests }
    }
}

impl<S> tower::Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry { inner, layer: self.clone() }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    layer: TelemetryLayer,
}

/// The streaming methods; every other one is unary.
fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("keyregistry.v1.AuditService", "GetEntries" | "WatchEntries") => "server_stream",
        ("grpc.health.v1.Health", "Watch") => "server_stream",
        (s, "ServerReflectionInfo") if s.starts_with("grpc.reflection.") => "bidi_stream",
        _ => "unary",
    }
}

/// A client's request ID is kept if it is short and plain; anything else is replaced.
pub(crate) fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

impl<S> tower::Service<http::Request<Body>> for Telemetry<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let method = MethodLabels {
            grpc_type: grpc_type(service, method),
            grpc_service: service.into(),
            grpc_method: method.into(),
        };
        let peer = request.extensions().get::<Peer>().map(|p| p.addr);
        let id = request_id(request.headers());
        self.layer.metrics.started.get_or_create(&method).inc();
        let call = Call { layer: self.layer.clone(), method, peer, id: id.clone(), started };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = match answer.await {
                Ok(response) => response,
                Err(e) => {
                    let status = Status::from_error(e.into());
                    call.end(status.code());
                    return Err(Box::new(status) as BoxError);
                }
            };
            if let Ok(value) = http::HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            // A refusal comes as headers only; an answer's status comes in its trailers.
            let early = Status::from_header_map(response.headers()).map(|s| s.code());
            Ok(response.map(|body| Body::new(Observed { body, call: Some(call), code: early })))
        })
    }
}

/// What is known of a call until it ends.
struct Call {
    layer: TelemetryLayer,
    method: MethodLabels,
    peer: Option<std::net::SocketAddr>,
    id: String,
    started: Instant,
}

impl Call {
    fn end(self, code: Code) {
        let seconds = self.started.elapsed().as_secs_f64();
        let m = &self.layer.metrics;
        let handled = HandledLabels {
            grpc_type: self.method.grpc_type,
            grpc_service: self.method.grpc_service.clone(),
            grpc_method: self.method.grpc_method.clone(),
            grpc_code: code_name(code),
        };
        m.handled.get_or_create(&handled).inc();
        m.handling.get_or_create(&self.method).observe(seconds);
        if self.layer.log_requests {
            tracing::info!(
                target: "registry::request",
                method = %format_args!("/{}/{}", self.method.grpc_service, self.method.grpc_method),
                peer = %self.peer.map(|p| p.to_string()).unwrap_or_default(),
                code = code_name(code),
                duration_ms = seconds * 1e3,
                request_id = %self.id,
                "request"
            );
        }
    }
}

/// A response body that ends its call when its last frame has gone, or when it is dropped.
struct Observed {
    body: Body,
    call: Option<Call>,
    code: Option<Code>,
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(Status::from_header_map) {
                    self.code = Some(status.code());
                }
            }
            Poll::Ready(Some(Err(status))) => self.code = Some(status.code()),
            Poll::Ready(None) => {
                let code = self.code.unwrap_or(Code::Ok);
                if let Some(call) = self.call.take() {
                    call.end(code);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            // Gone before its end: the status it had, or the client cancelled.
            call.end(self.code.unwrap_or(Code::Cancelled));
        }
    }
}
