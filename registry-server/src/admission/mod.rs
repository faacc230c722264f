//! Admission control: what a call must get past before a service sees it, sized to the work
//! the registry really does, so that abuse costs the attacker more than the registry.
//!
//! Every call:
//! - marks its connection busy until its answer has been sent, streams included (the listener
//!   closes connections idle for too long, [`crate::listener`]);
//! - has its request body watched as it streams ([`frames`]): a message longer than its method's
//!   largest valid request, or with more list elements than the method takes, is refused with
//!   `RESOURCE_EXHAUSTED` before tonic buffers or decodes it.
//!
//! Every call except health checks, which a load balancer must get answered while the registry
//! sheds load:
//! - counts against the calls in progress, in total and per peer ([`crate::peers`]), until its
//!   answer has been sent; over either it is answered `UNAVAILABLE` at once (load shedding:
//!   clients back off and retry) instead of queueing without bound;
//! - reaches the command service only with a client certificate when mTLS is required for writes
//!   (`UNAUTHENTICATED` otherwise), and only while its peer's budget of failed signature checks
//!   ([`signatures`]) is not spent (`RESOURCE_EXHAUSTED` before the body is read);
//! - has each message larger than [`SMALL_MESSAGE`] count its announced length against the
//!   request bytes being received, in total and per peer, until the message has been read.
//!   Smaller messages are bounded by the call caps instead, so that slow senders of large
//!   messages can hold up batches but never lookups.

pub mod frames;
pub mod signatures;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tonic::{Code, Status};

use self::frames::{FrameScanner, MessageLimit, Oversized};
use self::signatures::SignatureBudget;
use crate::commands::MAX_BULK_COMMANDS;
use crate::lookup::MAX_BATCH;
use crate::peers::Peer;
use crate::peers::{Budget, PeerKey, Share, Short};
use crate::telemetry::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC path prefix of health checks, which are never shed.
const HEALTH: &str = "/grpc.health.v1.Health/";
/// The gRPC path prefix of the service that writes.
const COMMANDS: &str = "/keyregistry.v1.CommandService/";
/// The gRPC path prefix of replicas' progress reports, which decide when writes are
/// acknowledged: under mTLS they need a client certificate as commands do.
const REPLICATION: &str = "/keyregistry.v1.ReplicationService/";

/// Messages up to this size do not count against the request-bytes budget.
pub const SMALL_MESSAGE: usize = 64 * 1024;

/// The largest valid request of each method: what its length prefix may announce, and how many
/// top-level fields (list elements) it may hold. A few fields of room above the batch size cover
/// the call's other fields.
pub fn message_limit(path: &str) -> MessageLimit {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    const SMALL: MessageLimit = MessageLimit { max_bytes: 16 * KIB, max_fields: 64 };
    let batch = |max_bytes| MessageLimit { max_bytes, max_fields: MAX_BATCH + 16 };
    match path {
        // 10,000 questions of a fingerprint or a serial with its manufacturer and a time each.
        "/keyregistry.v1.LookupService/CheckValidityBatch" => batch(4 * MIB),
        // 10,000 signed meter values (an OCMF record is well under 1.5 KiB) or an OCPI object.
        "/keyregistry.v1.LookupService/ValidateSignedMeterValues" => batch(16 * MIB),
        // 10,000 signed commands; a registration with a sample meter value is about 1.5 KiB.
        "/keyregistry.v1.CommandService/SubmitCommands" => {
            MessageLimit { max_bytes: MAX_BULK_BYTES, max_fields: MAX_BULK_COMMANDS + 16 }
        }
        // One command: an 8 KiB key, a 16 KiB sample meter value, texts, signature.
        "/keyregistry.v1.CommandService/SubmitCommand" => {
            MessageLimit { max_bytes: 64 * KIB, max_fields: 16 }
        }
        _ => SMALL,
    }
}

/// The largest `SubmitCommands` request.
pub const MAX_BULK_BYTES: usize = 16 * 1024 * 1024;

/// The largest request any method takes: tonic's own limit for the registry's services, kept as
/// a backstop behind [`message_limit`].
pub const MAX_MESSAGE_BYTES: usize = MAX_BULK_BYTES;

/// The admission settings (see `Config` for each one's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls in progress, in total.
    pub calls: usize,
    /// Calls in progress from one peer (0: no cap).
    pub calls_per_peer: usize,
    /// Request bytes announced and not yet consumed, in total.
    pub request_bytes: usize,
    /// The same for one peer (0: no cap).
    pub request_bytes_per_peer: usize,
    /// Whether the command service needs a verified client certificate.
    pub writes_need_client_cert: bool,
}

/// The tower layer that puts [`Admission`] in front of the routes.
#[derive(Clone)]
pub struct AdmissionLayer {
    shared: Arc<Shared>,
}

struct Shared {
    calls: Budget,
    bytes: Budget,
    writes_need_client_cert: bool,
    signatures: Option<Arc<SignatureBudget>>,
    metrics: Arc<Metrics>,
}

impl AdmissionLayer {
    /// The layer for these limits, refusing command calls of peers whose `signatures` budget is
    /// spent.
    pub fn new(
        limits: Limits,
        signatures: Option<Arc<SignatureBudget>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                calls: Budget::new(limits.calls.max(1), limits.calls_per_peer),
                bytes: Budget::new(
                    limits.request_bytes.max(MAX_MESSAGE_BYTES),
                    limits.request_bytes_per_peer,
                ),
                writes_need_client_cert: limits.writes_need_client_cert,
                signatures,
                metrics,
            }),
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission { inner, shared: self.shared.clone() }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Admission<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let health = path.starts_with(HEALTH);
        let peer = request.extensions().get::<Peer>().cloned();
        let key = peer.as_ref().map(|p| p.key);
        let s = &self.shared;
        let mut call = None;
        if !health {
            if let Some((limit, refusal)) = s.refusal(path, peer.as_ref()) {
                s.metrics.refused(limit);
                return refuse(refusal);
            }
            call = match key.map(|k| s.calls.take(k, 1)) {
                Some(Ok(share)) => Some(share),
                Some(Err(short)) => {
                    s.metrics.refused("calls");
                    return refuse(shed(short));
                }
                None => None,
            };
        }
        let busy = peer.as_ref().map(|p| p.activity.begin());
        let scanner = FrameScanner::new(message_limit(path));
        let (bytes, metrics) = (s.bytes.clone(), s.metrics.clone());
        let peer = if health { None } else { key };
        let request = request
            .map(|body| Body::new(Watched { body, scanner, bytes, peer, held: None, metrics }));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await.map_err(Into::into)?;
            Ok(response.map(|body| Body::new(Holding { body, _held: (call, busy) })))
        })
    }
}

impl Shared {
    /// Why a call is refused before anything of it is read: mTLS for writes, a spent signature
    /// budget; with the name of the limit, for the metrics.
    fn refusal(&self, path: &str, peer: Option<&Peer>) -> Option<(&'static str, Status)> {
        let replication = path.starts_with(REPLICATION);
        if !path.starts_with(COMMANDS) && !replication {
            return None;
        }
        if self.writes_need_client_cert && !peer.is_some_and(|p| p.client_certificate) {
            return Some((
                "client_certificate",
                Status::unauthenticated(
                    "commands and replicas' reports need a client certificate from the \
                     registry's client CA (mTLS); reads do not",
                ),
            ));
        }
        if replication {
            return None;
        }
        match (&self.signatures, peer) {
            (Some(budget), Some(peer)) if !budget.open(peer.key) => {
                Some(("signatures", Status::resource_exhausted(crate::commands::BUDGET_SPENT)))
            }
            _ => None,
        }
    }
}

fn refuse(status: Status) -> Answer {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

/// The answer to a call over the calls-in-progress limits.
fn shed(short: Short) -> Status {
    match short {
        Short::Total(n) => Status::unavailable(format!(
            "the registry is at its limit of {n} calls in progress; retry with backoff"
        )),
        Short::Peer(n) => Status::unavailable(format!(
            "this client address has {n} calls in progress, the most one peer may have; retry \
             with backoff"
        )),
    }
}

/// A request body whose messages are checked as they stream in.
struct Watched {
    body: Body,
    scanner: FrameScanner,
    bytes: Budget,
    peer: Option<PeerKey>,
    /// The byte share of the latest large message announced, held until the next is announced or
    /// the body is dropped (tonic reads ahead, so this bounds what is buffered, not what is
    /// decoded).
    held: Option<Share>,
    metrics: Arc<Metrics>,
}

/// Why a message was refused as it streamed in.
enum Refused {
    Oversized(Oversized),
    Busy { short: Short, len: usize },
}

impl From<Oversized> for Refused {
    fn from(e: Oversized) -> Self {
        Refused::Oversized(e)
    }
}

impl From<Refused> for Status {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Oversized(Oversized::Groups) => {
                Status::new(Code::InvalidArgument, Oversized::Groups.to_string())
            }
            Refused::Oversized(e) => Status::new(Code::ResourceExhausted, e.to_string()),
            Refused::Busy { short: Short::Total(max), len } => Status::new(
                Code::ResourceExhausted,
                format!(
                    "the registry is receiving {max} request bytes at once, all it buffers; this \
                     message announces {len}; retry with backoff"
                ),
            ),
            Refused::Busy { short: Short::Peer(max), len } => Status::new(
                Code::ResourceExhausted,
                format!(
                    "this client address is sending {max} request bytes at once, the most one \
                     peer may; this message announces {len}; retry with backoff"
                ),
            ),
        }
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let (bytes, peer, held) = (&this.bytes, this.peer, &mut this.held);
            let mut announced = |len: usize| -> Result<(), Refused> {
                *held = None;
                if let Some(peer) = peer.filter(|_| len > SMALL_MESSAGE) {
                    *held =
                        Some(bytes.take(peer, len).map_err(|short| Refused::Busy { short, len })?);
                }
                Ok(())
            };
            if let Err(refused) = this.scanner.feed(data, &mut announced) {
                this.metrics.refused(match refused {
                    Refused::Busy { .. } => "request_bytes",
                    Refused::Oversized(_) => "message_size",
                });
                return Poll::Ready(Some(Err(refused.into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps the call's shares until the answer has been sent.
struct Holding<T> {
    body: Body,
    _held: T,
}

impl<T: Unpin> HttpBody for Holding<T> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
