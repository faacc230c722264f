//! What an operator watches: Prometheus metrics on their own HTTP listener, and an optional
//! structured line per request.
//!
//! The gRPC metrics carry the names and labels of the grpc-ecosystem Prometheus interceptors
//! (`grpc_server_started_total`, `grpc_server_handled_total`, `grpc_server_handling_seconds`),
//! so existing dashboards work. The registry's own figures (`registry_*`: log size, newest
//! entry, group commits, refusals by limit, disk) are read when scraped, so a scrape always
//! shows the state of that moment and nothing polls in between.

mod layer;
mod listener;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub(crate) use self::layer::request_id;
pub use self::layer::{REQUEST_ID, TelemetryLayer};
pub use self::listener::serve_metrics;

/// A gRPC method, as the grpc-ecosystem interceptors label it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `unary`, `server_stream` or `bidi_stream`.
    pub grpc_type: &'static str,
    /// The fully qualified service, e.g. `keyregistry.v1.LookupService`.
    pub grpc_service: String,
    /// The method, e.g. `CheckValidity`.
    pub grpc_method: String,
}

/// A gRPC method and the status code it answered with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// As in [`MethodLabels`].
    pub grpc_type: &'static str,
    /// As in [`MethodLabels`].
    pub grpc_service: String,
    /// As in [`MethodLabels`].
    pub grpc_method: String,
    /// The status code's name as Go spells it (`OK`, `InvalidArgument`, ...).
    pub grpc_code: &'static str,
}

/// Which limit refused something.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `connections`, `calls`, `request_bytes`, `message_size`, `signatures` or `client_certificate`.
    pub limit: &'static str,
}

/// What the registry looks like at a scrape, read from its parts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    /// Durable entries.
    pub log_size: u64,
    /// Recorded time of the newest entry (Unix seconds), if any.
    pub newest_entry_unix: Option<f64>,
    /// Group commits so far.
    pub group_commits: u64,
    /// Entries written by them.
    pub entries_written: u64,
    /// Most entries in one group commit.
    pub largest_group_commit: u64,
    /// Whether the writer takes commands.
    pub writer_up: bool,
    /// Free bytes on the data directory's file system.
    pub disk_free_bytes: Option<u64>,
    /// Size of that file system.
    pub disk_total_bytes: Option<u64>,
    /// Entries checked and recorded as such (a restart checks only those after).
    pub verified_size: Option<u64>,
    /// Seconds since the projection snapshot was last written, and its size in bytes.
    pub snapshot: Option<(f64, u64)>,
    /// Seconds the last projection snapshot took to cut, once one was cut since the start.
    pub snapshot_seconds: Option<f64>,
    /// Projection records written since the last snapshot, held in memory until the next.
    pub unsnapshotted_records: Option<u64>,
    /// On a replica, how it follows its primary.
    pub replica: Option<ReplicaFigures>,
}

/// How a replica follows its primary.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaFigures {
    /// Entries the primary has that the replica has not published.
    pub lag_entries: u64,
    /// Seconds since the oldest of them was recorded (0 when caught up).
    pub lag_seconds: f64,
    /// Whether a stream from the primary is open.
    pub connected: bool,
    /// Whether following stopped for good (the primary's log did not verify).
    pub stopped: bool,
}

/// A web face request's labels: the route (a fixed set: the JSON method, `tile`, `entries`,
/// `checkpoint`, ...) and the HTTP status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    code: u16,
}

/// The registry's metrics. Cheap to share; every handle counts into the same registry.
pub struct Metrics {
    registry: Registry,
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<MethodLabels, Histogram>,
    refused: Family<LimitLabels, Counter>,
    http: Family<HttpLabels, Histogram>,
    log_size: Gauge,
    newest_entry: Gauge<f64, std::sync::atomic::AtomicU64>,
    entry_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    group_commits: Counter,
    entries_written: Counter,
    largest_group_commit: Gauge,
    writer_up: Gauge,
    disk_free: Gauge,
    disk_total: Gauge,
    unverified: Gauge,
    snapshot_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    snapshot_bytes: Gauge,
    snapshot_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    unsnapshotted: Gauge,
    replica_lag_entries: Gauge,
    replica_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    replica_connected: Gauge,
    replica_stopped: Gauge,
    live: Box<dyn Fn() -> Live + Send + Sync>,
    /// One scrape at a time: the counters are brought up to the live figures by difference.
    scraping: std::sync::Mutex<()>,
}

impl Metrics {
    /// Metrics whose registry figures come from `live` at each scrape, with the writer's
    /// histograms; a `replica`'s have the replication figures too.
    pub fn new(
        live: impl Fn() -> Live + Send + Sync + 'static,
        writer: &crate::log::WriterStats,
        replica: bool,
    ) -> Arc<Self> {
        let mut registry = Registry::default();
        registry.register(
            "registry_group_commit_entries",
            "Entries per group commit",
            writer.group_commit_entries.clone(),
        );
        registry.register(
            "registry_sync_seconds",
            "Seconds each sync (fsync) of a group commit took",
            writer.sync_seconds.clone(),
        );
        let handling = Family::<MethodLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        let http = Family::<HttpLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        let m = Metrics {
            started: Family::default(),
            handled: Family::default(),
            handling,
            refused: Family::default(),
            http,
            log_size: Gauge::default(),
            newest_entry: Gauge::default(),
            entry_age: Gauge::default(),
            group_commits: Counter::default(),
            entries_written: Counter::default(),
            largest_group_commit: Gauge::default(),
            writer_up: Gauge::default(),
            disk_free: Gauge::default(),
            disk_total: Gauge::default(),
            unverified: Gauge::default(),
            snapshot_age: Gauge::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_seconds: Gauge::default(),
            unsnapshotted: Gauge::default(),
            replica_lag_entries: Gauge::default(),
            replica_lag_seconds: Gauge::default(),
            replica_connected: Gauge::default(),
            replica_stopped: Gauge::default(),
            live: Box::new(live),
            scraping: std::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            m.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            m.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
            m.handling.clone(),
        );
        registry.register(
            "http_server_request_duration_seconds",
            "Seconds the web face (JSON API, tiles) took to answer, by route and status code; \
             its count is the number of requests",
            m.http.clone(),
        );
        registry.register(
            "registry_refused",
            "Connections, calls and messages refused by an admission limit, by limit",
            m.refused.clone(),
        );
        registry.register("registry_log_size", "Durable entries in the log", m.log_size.clone());
        registry.register(
            "registry_newest_entry_timestamp_seconds",
            "Recorded time of the newest entry, which the newest signed checkpoint covers",
            m.newest_entry.clone(),
        );
        registry.register(
            "registry_newest_entry_age_seconds",
            "Seconds since the newest entry was recorded (grows on a registry without writes)",
            m.entry_age.clone(),
        );
        registry.register(
            "registry_group_commits",
            "Group commits that wrote at least one entry",
            m.group_commits.clone(),
        );
        registry.register(
            "registry_entries_written",
            "Entries written by group commits since the start",
            m.entries_written.clone(),
        );
        registry.register(
            "registry_largest_group_commit_entries",
            "Most entries in one group commit since the start",
            m.largest_group_commit.clone(),
        );
        registry.register(
            "registry_writer_up",
            "1 while the log writer takes commands; 0 once it stopped (restart to recover)",
            m.writer_up.clone(),
        );
        registry.register(
            "registry_data_dir_free_bytes",
            "Free bytes on the data directory's file system",
            m.disk_free.clone(),
        );
        registry.register(
            "registry_data_dir_size_bytes",
            "Size of the data directory's file system",
            m.disk_total.clone(),
        );
        registry.register(
            "registry_unverified_entries",
            "Durable entries the background check has not read back yet (a restart checks them)",
            m.unverified.clone(),
        );
        registry.register(
            "registry_snapshot_age_seconds",
            "Seconds since the projection snapshot was last written (a restart after a crash \
             replays the log since then)",
            m.snapshot_age.clone(),
        );
        registry.register(
            "registry_snapshot_bytes",
            "Size of the projection snapshot file",
            m.snapshot_bytes.clone(),
        );
        registry.register(
            "registry_snapshot_duration_seconds",
            "Seconds the last projection snapshot took to cut (build, write, fsync)",
            m.snapshot_seconds.clone(),
        );
        registry.register(
            "registry_snapshot_pending_records",
            "Projection records written since the last snapshot, held in memory until the next \
             cut (one starts when the unfrozen ones reach a quarter of the snapshot's records, \
             at least snapshot_min_records)",
            m.unsnapshotted.clone(),
        );
        if replica {
            registry.register(
                "registry_replica_lag_entries",
                "Entries the primary has shown that this replica has not yet verified and published",
                m.replica_lag_entries.clone(),
            );
            registry.register(
                "registry_replica_lag_seconds",
                "Seconds since the oldest entry this replica has seen on the primary but not yet \
                 published was recorded; 0 when caught up",
                m.replica_lag_seconds.clone(),
            );
            registry.register(
                "registry_replica_connected",
                "1 while this replica has a stream from its primary open",
                m.replica_connected.clone(),
            );
            registry.register(
                "registry_replica_stopped",
                "1 once this replica stopped following because the primary showed a log or \
                 checkpoint it cannot accept (see its log); it serves what it verified",
                m.replica_stopped.clone(),
            );
        }
        let info = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("rustc", option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("").to_string()),
        ]);
        registry.register("registry_build", "The server's version", info);
        Arc::new(Metrics { registry, ..m })
    }

    /// Counts and times one request of the web face.
    pub fn http_request(&self, route: &'static str, status: u16, seconds: f64) {
        self.http.get_or_create(&HttpLabels { route, code: status }).observe(seconds);
    }

    /// Counts something a limit refused.
    pub fn refused(&self, limit: &'static str) {
        self.refused.get_or_create(&LimitLabels { limit }).inc();
    }

    /// The exposition in the Prometheus text format, with the registry's figures of this moment.
    pub fn render(&self) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        let live = (self.live)();
        self.log_size.set(live.log_size as i64);
        if let Some(t) = live.newest_entry_unix {
            self.newest_entry.set(t);
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            self.entry_age.set((now - t).max(0.0));
        }
        let (written, commits) = (self.entries_written.get(), self.group_commits.get());
        self.entries_written.inc_by(live.entries_written.saturating_sub(written));
        self.group_commits.inc_by(live.group_commits.saturating_sub(commits));
        self.largest_group_commit.set(live.largest_group_commit as i64);
        self.writer_up.set(i64::from(live.writer_up));
        if let Some(free) = live.disk_free_bytes {
            self.disk_free.set(free as i64);
        }
        if let Some(total) = live.disk_total_bytes {
            self.disk_total.set(total as i64);
        }
        if let Some(verified) = live.verified_size {
            self.unverified.set(live.log_size.saturating_sub(verified) as i64);
        }
        if let Some((age, bytes)) = live.snapshot {
            self.snapshot_age.set(age);
            self.snapshot_bytes.set(bytes as i64);
        }
        if let Some(seconds) = live.snapshot_seconds {
            self.snapshot_seconds.set(seconds);
        }
        if let Some(records) = live.unsnapshotted_records {
            self.unsnapshotted.set(records as i64);
        }
        if let Some(r) = live.replica {
            self.replica_lag_entries.set(r.lag_entries as i64);
            self.replica_lag_seconds.set(r.lag_seconds);
            self.replica_connected.set(i64::from(r.connected));
            self.replica_stopped.set(i64::from(r.stopped));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The name Go (and so the grpc-ecosystem interceptors) gives a status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
