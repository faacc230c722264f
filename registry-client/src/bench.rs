//! The load generator behind `registry bench`, in the spirit of `pgbench` and
//! `redis-benchmark`: N concurrent clients run one workload against a running registry for a
//! while, and the report gives throughput and latency percentiles.
//!
//! The data comes with it: [`prepare`] adds a test operator and registers a fleet of meter keys
//! through the bulk path (durable, and safe to run again: a fleet already there is found, a
//! partly loaded one completed). Meter keys derive from a seed ([`load::meter_key`]), so later
//! runs can sign meter values with the keys an earlier run registered. Every answer is checked
//! (a check must say VALID, a record must be valid and billable), so a fast wrong answer counts
//! as an error, not as throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use registry_core::command::SignedCommand;
use registry_core::keys::P256KeyPair;
use registry_core::ocpi::Input;
use registry_core::time::Time;
use registry_proto::pb;
use serde::Serialize;

use crate::{
    AsOf, ClientError, KeySubmission, KeyTarget, Order, RegistryClient, View, command_bytes, load,
};

/// The operator every benchmark fleet belongs to.
pub const OPERATOR: &str = "DE*BEN";

/// When every fleet key becomes effective; checks ask about moments after it.
pub fn fleet_effective() -> Time {
    registry_core::time::parse("2026-01-01T00:00:00Z").unwrap_or_default()
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Signed registrations of new keys, each acknowledged once durable (and confirmed).
    Register,
    /// Validity of a random fleet key at a random time, by EVSE ID.
    Check,
    /// The batch validity RPC, `--batch` questions per call (default 1,000).
    CheckBatch,
    /// Signed meter values (OCMF) from fleet meters, `--batch` records per call (default 1).
    VerifyOcmf,
    /// 1 % registrations, 99 % checks.
    Mixed,
    /// The cheapest unary call (grpc.health.v1 Check): the cost of gRPC itself.
    Empty,
    /// `check` over the web face's JSON API (`--http URL`): the same questions as protobuf
    /// JSON in HTTP/1.1 POSTs.
    CheckHttp,
    /// GETs of random full tiles and entry bundles from the web face (`--http URL`).
    Tiles,
}

impl Workload {
    /// Questions or records per call: only the batch RPCs take more than one.
    fn batch(self, asked: Option<usize>) -> usize {
        match self {
            Workload::CheckBatch => asked.unwrap_or(1_000).max(1),
            Workload::VerifyOcmf => asked.unwrap_or(1).max(1),
            _ => 1,
        }
    }
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent clients (each with at most one call in flight).
    pub concurrency: usize,
    /// HTTP/2 connections the clients share.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Questions or records per call for check-batch and verify-ocmf; `None` for the default.
    pub batch: Option<usize>,
    /// How much of each validity answer the check workloads ask for.
    pub view: View,
    /// The web face's base URL, for check-http and tiles.
    pub http: Option<String>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub concurrency: usize,
    pub connections: usize,
    /// Questions or records per call.
    pub batch: usize,
    /// The validity answers' view (`full` or `basic`) of the check workloads.
    pub view: &'static str,
    /// Keys in the fleet.
    pub keys: u64,
    pub seconds: f64,
    /// Calls that succeeded with the expected answer.
    pub calls: u64,
    /// Calls per second.
    pub calls_per_sec: f64,
    /// Questions, records or registrations per second (calls × batch).
    pub items_per_sec: f64,
    /// Calls that failed or gave an unexpected answer.
    pub errors: u64,
    /// The first of those, for the report.
    pub first_error: Option<String>,
    pub latency: Latency,
    /// For write workloads: the writer's group commits during the run and their mean size.
    pub group_commits: Option<u64>,
    pub mean_group_commit: Option<f64>,
    pub largest_group_commit: Option<u64>,
    /// Per cent of the machine's CPU time the hypervisor gave to others during the run ("steal"
    /// in `/proc/stat`); `None` where that is not readable. A run with much steal measured a
    /// smaller machine: on the shared VMs these figures come from, it is what moves a figure
    /// by 2× between runs of the same code.
    pub cpu_steal_pct: Option<f64>,
}

/// The machine's CPU time counters: (steal, total) in clock ticks, from the first line of
/// `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub steal: u64,
    pub total: u64,
}

impl CpuTimes {
    /// The counters now; `None` where `/proc/stat` is missing or not in the expected form.
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Parses `/proc/stat` (see proc(5)): "cpu user nice system idle iowait irq softirq steal
    /// guest guest_nice". Guest time is already counted in user and nice, so the total is the
    /// first eight fields.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?;
        let mut fields = line.split_ascii_whitespace();
        (fields.next()? == "cpu").then_some(())?;
        let ticks: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
        (ticks.len() == 8).then(|| Self { steal: ticks[7], total: ticks.iter().sum() })
    }

    /// Per cent of the time between `self` and `later` that was stolen.
    pub fn steal_pct_until(&self, later: &CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|t| *t > 0)?;
        let steal = later.steal.checked_sub(self.steal)?;
        Some(100.0 * steal as f64 / total as f64)
    }
}

/// The test fleet: its operator's key and size.
pub struct Fleet {
    pub operator: P256KeyPair,
    /// The registry's checkpoint origin, which the fleet's commands are signed for.
    pub registry: String,
    pub keys: u64,
    pub seed: u64,
}

impl Fleet {
    /// The operator key of fleet `seed`.
    pub fn operator_key(seed: u64) -> P256KeyPair {
        load::meter_key(seed ^ 0x6f70_6572_6174_6f72, u64::MAX)
    }
}

/// Makes sure fleet `seed` exists with at least `keys` meter keys: adds the operator (signed by
/// `admin`, which is needed only the first time) and bulk-registers what is missing.
/// `progress` gets (keys done, keys to do).
pub async fn prepare(
    client: &RegistryClient,
    admin: Option<&P256KeyPair>,
    keys: u64,
    seed: u64,
    progress: impl Fn(u64, u64),
) -> Result<Fleet, ClientError> {
    let operator = Fleet::operator_key(seed);
    match client.operator(OPERATOR).await {
        Ok(found) => {
            let ours = operator.fingerprint_hex();
            let known = found.keys.iter().any(|k| k.key_id == ours && k.revoked_position == 0);
            if !known {
                return Err(ClientError::Input(format!(
                    "operator {OPERATOR} exists with other keys: it belongs to another fleet \
                     (another --seed) or to somebody else"
                )));
            }
        }
        Err(e) if e.code() == Some(tonic::Code::NotFound) => {
            let admin = admin.ok_or_else(|| {
                ClientError::Input(format!(
                    "the bench operator {OPERATOR} does not exist yet: pass --admin-key with an \
                     administrator's private key to add it"
                ))
            })?;
            client
                .submit(
                    admin,
                    &Order::AddOperator {
                        operator_id: OPERATOR.into(),
                        name: "Benchmark fleet".into(),
                        public_keys: vec![operator.public_key_pem()],
                    },
                )
                .await?;
        }
        Err(e) => return Err(e),
    }
    let registry = client.origin().await?;
    let fleet = Fleet { operator, registry, keys, seed };
    if keys == 0 || fleet_key_present(client, keys - 1).await? {
        return Ok(fleet);
    }
    // Load in steps that bound memory; keys a previous run registered are refused as
    // duplicates and count as present.
    const STEP: u64 = 100_000;
    let mut first = 0;
    while first < keys {
        let end = (first + STEP).min(keys);
        if !fleet_key_present(client, end - 1).await? {
            let commands: Vec<SignedCommand> = load::registrations_of(
                &fleet.operator,
                &fleet.registry,
                OPERATOR,
                first..end,
                fleet_effective(),
                |i| load::meter_key(seed, i),
            )
            .into_iter()
            .map(|(_, c)| c)
            .collect();
            let (_, refusal) = load::submit_all(client, commands, 2, |_| {}).await?;
            if let Some(why) = refusal.filter(|w| !w.contains("already")) {
                return Err(ClientError::Input(format!("loading the fleet: {why}")));
            }
        }
        first = end;
        progress(first, keys);
    }
    Ok(fleet)
}

async fn fleet_key_present(client: &RegistryClient, index: u64) -> Result<bool, ClientError> {
    let at = fleet_effective() + chrono::TimeDelta::seconds(1);
    let answer = client
        .check(&KeyTarget::Evse(load::evse_id(OPERATOR, index)), None, at, AsOf::Head)
        .await?;
    Ok(answer.validity.is_some_and(|v| v.verdict == pb::Verdict::Valid as i32))
}

/// One operation of a workload, prepared before the clock starts.
enum Op {
    Register(SignedCommand),
    Check {
        index: u64,
        at: Time,
    },
    CheckBatch(Vec<(KeyTarget, Time)>),
    VerifyOcmf(Vec<Input>),
    Empty,
    CheckHttp {
        index: u64,
        at: Time,
    },
    /// A tile path and the length its content must have (`None`: an entry bundle).
    Tile(String, Option<usize>),
}

/// Everything the clients draw from, generated before timing starts so that the client's own
/// key generation and signing do not compete with the server being measured.
struct Pool {
    registrations: Vec<SignedCommand>,
    next_registration: AtomicUsize,
    records: Vec<String>,
    keys: u64,
    batch: usize,
    /// The log's size (tiles).
    log_size: u64,
}

impl Pool {
    fn registration(&self) -> Option<SignedCommand> {
        let i = self.next_registration.fetch_add(1, Ordering::Relaxed);
        self.registrations.get(i).cloned()
    }

    fn random_moment(rng: &mut impl Rng) -> Time {
        // Any second of the fleet's first 300 days: all keys are valid from the start.
        fleet_effective() + chrono::TimeDelta::seconds(rng.random_range(1..300 * 86_400))
    }

    fn next(&self, workload: Workload, rng: &mut impl Rng) -> Option<Op> {
        Some(match workload {
            Workload::Register => Op::Register(self.registration()?),
            Workload::Mixed if rng.random_range(0..100) == 0 => Op::Register(self.registration()?),
            Workload::Check | Workload::Mixed => {
                Op::Check { index: rng.random_range(0..self.keys), at: Self::random_moment(rng) }
            }
            Workload::CheckHttp => Op::CheckHttp {
                index: rng.random_range(0..self.keys),
                at: Self::random_moment(rng),
            },
            Workload::Tiles => {
                let full = (self.log_size / registry_core::tiles::WIDTH).max(1);
                let n = rng.random_range(0..full);
                match rng.random_range(0..2) {
                    0 => Op::Tile(registry_core::tiles::tile_path(Some(0), n, 256), Some(256 * 32)),
                    _ => Op::Tile(registry_core::tiles::tile_path(None, n, 256), None),
                }
            }
            Workload::CheckBatch => Op::CheckBatch(
                (0..self.batch)
                    .map(|_| {
                        let i = rng.random_range(0..self.keys);
                        (KeyTarget::Evse(load::evse_id(OPERATOR, i)), Self::random_moment(rng))
                    })
                    .collect(),
            ),
            Workload::VerifyOcmf => Op::VerifyOcmf(
                (0..self.batch)
                    .map(|_| Input {
                        record: self.records[rng.random_range(0..self.records.len())].clone(),
                        claimed_key: None,
                        label: String::new(),
                    })
                    .collect(),
            ),
            Workload::Empty => Op::Empty,
        })
    }
}

/// Fresh registrations for write workloads: new random keys on EVSE IDs of this run only.
fn registrations(fleet: &Fleet, count: usize) -> Vec<SignedCommand> {
    let run: u32 = rand::rng().random();
    let signer = &fleet.operator;
    load::on_every_core(0..count as u64, |i| {
        let meter = P256KeyPair::generate();
        let action = Order::Register {
            key: KeySubmission {
                meter_serial: Some(format!("RUN{run:08X}-{i:09}")),
                ..KeySubmission::new(hex::encode(meter.public_key_der()))
            },
            evse_ids: vec![format!("{OPERATOR}*ER{run:08X}X{i}")],
            effective_at: Some(fleet_effective()),
        };
        SignedCommand::sign(command_bytes(&action), &fleet.registry, signer)
    })
}

/// Session records from fleet meters: one per meter for the first `count` meters.
fn records(fleet: &Fleet, count: u64) -> Vec<String> {
    load::on_every_core(0..count, |i| {
        let meter = load::meter_key(fleet.seed, i);
        let begin = fleet_effective() + chrono::TimeDelta::hours(1 + i as i64);
        load::ocmf_record(&meter, OPERATOR, i, begin, 45)
    })
}

/// Runs `workload` against `url` with `settings` on fleet `fleet`.
pub async fn run(
    url: &str,
    tls: &crate::TlsOptions,
    fleet: &Fleet,
    workload: Workload,
    settings: &Settings,
) -> Result<Report, ClientError> {
    let batch = workload.batch(settings.batch);
    if fleet.keys == 0 && !matches!(workload, Workload::Register | Workload::Empty) {
        return Err(ClientError::Input(format!("{workload:?} needs a fleet: --keys > 0")));
    }
    let secs = settings.duration.as_secs_f64();
    // Enough registrations for the run at well above the target rate; a run that uses them all
    // ends early and says so through its duration.
    let registrations = match workload {
        Workload::Register => registrations(fleet, ((secs * 12_000.0) as usize).max(1_000)),
        Workload::Mixed => registrations(fleet, ((secs * 1_000.0) as usize).max(100)),
        _ => Vec::new(),
    };
    let records = match workload {
        Workload::VerifyOcmf => records(fleet, fleet.keys.min(4_096)),
        _ => Vec::new(),
    };
    let web = match workload {
        Workload::CheckHttp | Workload::Tiles => Some(Web::new(settings.http.as_deref())?),
        _ => None,
    };
    let log_size = match (&web, workload) {
        (Some(web), Workload::Tiles) => web.log_size().await?,
        _ => 0,
    };
    if workload == Workload::Tiles && log_size < registry_core::tiles::WIDTH {
        return Err(ClientError::Input("tiles needs a log of at least 256 entries".into()));
    }
    let pool = Arc::new(Pool {
        registrations,
        next_registration: AtomicUsize::new(0),
        records,
        keys: fleet.keys,
        batch,
        log_size,
    });
    let connections = settings.connections.clamp(1, settings.concurrency.max(1));
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = crate::connect::endpoint(url, tls)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect { url: url.to_string(), source })?;
        clients.push((RegistryClient::from_channel(channel.clone()), channel));
    }
    let before = clients[0].0.registry_info().await?.writer;
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let cpu_before = CpuTimes::now();
    let started = Instant::now();
    let deadline = started + settings.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..settings.concurrency.max(1) {
        let (client, channel) = clients[c % connections].clone();
        let view = settings.view;
        let (pool, errors, first_error) = (pool.clone(), errors.clone(), first_error.clone());
        let web = web.clone();
        tasks.spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            let mut calls = 0u64;
            while Instant::now() < deadline {
                let Some(op) = pool.next(workload, &mut rng) else { break };
                let t = Instant::now();
                let outcome = match (op, &web) {
                    (Op::CheckHttp { index, at }, Some(web)) => web.check(index, at, view).await,
                    (Op::Tile(path, len), Some(web)) => web.tile(&path, len).await,
                    (op, _) => execute(&client, &mut health, op, view).await,
                };
                let micros = t.elapsed().as_micros() as u64;
                match outcome {
                    Ok(()) => {
                        calls += 1;
                        histogram.saturating_record(micros.max(1));
                    }
                    Err(why) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(why);
                        }
                    }
                }
            }
            (calls, histogram)
        });
    }
    let mut calls = 0;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    while let Some(done) = tasks.join_next().await {
        let (n, h) = done.map_err(|e| ClientError::Input(format!("a client task failed: {e}")))?;
        calls += n;
        histogram.add(h).map_err(|e| ClientError::Input(format!("merging latencies: {e}")))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_steal_pct = cpu_before.zip(CpuTimes::now()).and_then(|(b, a)| b.steal_pct_until(&a));
    let after = clients[0].0.registry_info().await?.writer;
    let writes = matches!(workload, Workload::Register | Workload::Mixed);
    let commits = before.zip(after).filter(|_| writes).map(|(b, a)| {
        (a.group_commits - b.group_commits, a.entries - b.entries, a.largest_group_commit)
    });
    let first_error = first_error.lock().ok().and_then(|f| f.clone());
    Ok(Report {
        workload,
        concurrency: settings.concurrency,
        connections,
        batch,
        view: match settings.view {
            View::Full => "full",
            View::Basic => "basic",
        },
        keys: fleet.keys,
        seconds,
        calls,
        calls_per_sec: calls as f64 / seconds,
        items_per_sec: (calls * batch as u64) as f64 / seconds,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        },
        group_commits: commits.map(|c| c.0),
        mean_group_commit: commits.map(|c| c.1 as f64 / c.0.max(1) as f64),
        largest_group_commit: commits.map(|c| c.2),
        cpu_steal_pct,
    })
}

/// One call and the check of its answer; `Err` says what went wrong.
async fn execute(
    client: &RegistryClient,
    health: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    op: Op,
    view: View,
) -> Result<(), String> {
    match op {
        Op::Register(command) => {
            client.submit_signed(command).await.map_err(|e| e.to_string())?;
        }
        Op::Check { index, at } => {
            let evse = KeyTarget::Evse(load::evse_id(OPERATOR, index));
            let answer = client
                .check_view(&evse, None, at, AsOf::Head, view)
                .await
                .map_err(|e| e.to_string())?;
            expect_valid(answer.validity.as_ref())?;
        }
        Op::CheckBatch(queries) => {
            let answer =
                client.check_batch(&queries, AsOf::Head, view).await.map_err(|e| e.to_string())?;
            if answer.results.len() != queries.len() {
                return Err(format!(
                    "{} answers to {} questions",
                    answer.results.len(),
                    queries.len()
                ));
            }
            answer.results.iter().try_for_each(|v| expect_valid(Some(v)))?;
        }
        Op::VerifyOcmf(inputs) => {
            let answer = client
                .validate_meter_values(&inputs, AsOf::Head, false)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(bad) = answer.results.iter().find(|v| !(v.valid && v.billable)) {
                return Err(format!("a fleet record did not validate: {bad:?}"));
            }
        }
        Op::Empty => {
            health
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .map_err(|e| e.to_string())?;
        }
        Op::CheckHttp { .. } | Op::Tile(..) => return Err("the web face needs --http".into()),
    }
    Ok(())
}

/// The web face, for the check-http and tiles workloads: one HTTP/1.1 connection pool.
#[derive(Clone)]
struct Web {
    base: String,
    http: reqwest::Client,
}

impl Web {
    fn new(url: Option<&str>) -> Result<Self, ClientError> {
        let url = url.ok_or_else(|| ClientError::Input("this workload needs --http URL".into()))?;
        let base = url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| ClientError::Input(format!("--http: {e}")))?;
        Ok(Self { base, http })
    }

    async fn log_size(&self) -> Result<u64, ClientError> {
        let url = format!("{}/checkpoint", self.base);
        let failed = |reason: String| ClientError::Http { url: url.clone(), reason };
        let text = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| failed(e.to_string()))?
            .text()
            .await
            .map_err(|e| failed(e.to_string()))?;
        text.lines().nth(1).and_then(|l| l.parse().ok()).ok_or_else(|| failed("no size".into()))
    }

    async fn check(&self, index: u64, at: Time, view: View) -> Result<(), String> {
        let request = pb::CheckValidityRequest {
            key: Some(KeyTarget::Evse(load::evse_id(OPERATOR, index)).to_pb(None)),
            at: Some(registry_core::time::to_timestamp(&at)),
            as_of: None,
            prove: false,
            view: pb::ValidityView::from(view) as i32,
        };
        let response = self
            .http
            .post(format!("{}/keyregistry.v1.LookupService/CheckValidity", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&request).map_err(|e| e.to_string())?)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let answer: pb::CheckValidityResponse =
            serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        expect_valid(answer.validity.as_ref())
    }

    async fn tile(&self, path: &str, len: Option<usize>) -> Result<(), String> {
        let response = self
            .http
            .get(format!("{}/{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        match (status.is_success(), len) {
            (false, _) => Err(format!("HTTP {status} for {path}")),
            (true, Some(len)) if body.len() != len => {
                Err(format!("{path}: {} bytes, not {len}", body.len()))
            }
            (true, None) if registry_core::tiles::decode_bundle(&body, 256).1.is_some() => {
                Err(format!("{path}: not a full entry bundle"))
            }
            _ => Ok(()),
        }
    }
}

fn expect_valid(v: Option<&pb::Validity>) -> Result<(), String> {
    match v {
        Some(v) if v.verdict == pb::Verdict::Valid as i32 => Ok(()),
        other => Err(format!(
            "expected VALID for a fleet key, got {:?}",
            other.map(|v| pb::Verdict::try_from(v.verdict).unwrap_or(pb::Verdict::Unspecified))
        )),
    }
}

/// Raw crypto speed on this machine, one core: the ceilings for signature checks and hashing.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CryptoCeilings {
    /// ECDSA P-256 verifications per second with `ring` (the registry's verification backend).
    pub p256_verify_ring_per_sec: f64,
    /// The same with the pure-Rust `p256` crate.
    pub p256_verify_rustcrypto_per_sec: f64,
    /// ECDSA P-256 signatures per second with `p256` (deterministic, what commands are signed
    /// with).
    pub p256_sign_per_sec: f64,
    /// Signed checkpoint notes per second (`ring`, what the registry signs each group commit's
    /// checkpoint with).
    pub checkpoint_sign_per_sec: f64,
    /// SHA-256 over 4 KiB buffers, bytes per second.
    pub sha256_bytes_per_sec: f64,
}

/// Measures [`CryptoCeilings`] for about `duration` in all.
pub fn crypto_ceilings(duration: Duration) -> CryptoCeilings {
    use p256::ecdsa::signature::Verifier;
    use sha2::Digest;
    let each = duration / 5;
    let key = P256KeyPair::generate();
    let message = [0x42u8; 600];
    let der = key.sign_der(&message);
    let point = key.verifying_key().to_sec1_point(false).as_bytes().to_vec();
    let rate = |f: &mut dyn FnMut() -> bool| {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < each || n == 0 {
            for _ in 0..16 {
                assert!(f(), "a ceiling measurement must check real work");
            }
            n += 16;
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let ring = rate(&mut || registry_core::keys::p256_verify_point(&point, &message, &der));
    let signature = p256::ecdsa::DerSignature::try_from(der.as_slice());
    let rust_crypto = rate(&mut || {
        signature.as_ref().is_ok_and(|s| key.verifying_key().verify(&message, s).is_ok())
    });
    let sign = rate(&mut || !key.sign_der(&message).is_empty());
    let notes = registry_core::note::NoteSigner::new("bench.example/log", key.clone())
        .expect("a valid key name");
    let text = "bench.example/log\n1000000\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    let checkpoint_sign = rate(&mut || notes.sign(text).is_ok());
    let block = vec![0x5au8; 4096];
    let hashes = rate(&mut || {
        std::hint::black_box(sha2::Sha256::digest(&block));
        true
    });
    CryptoCeilings {
        p256_verify_ring_per_sec: ring,
        p256_verify_rustcrypto_per_sec: rust_crypto,
        p256_sign_per_sec: sign,
        checkpoint_sign_per_sec: checkpoint_sign,
        sha256_bytes_per_sec: hashes * block.len() as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "cpu  1211580 0 252239 5495208 20666 0 19894 120706 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";

    #[test]
    fn steal_is_the_share_of_all_cpu_time_between_two_readings() {
        let before = CpuTimes::parse(STAT).expect("a cpu line");
        assert_eq!(before.steal, 120_706);
        assert_eq!(before.total, 1_211_580 + 252_239 + 5_495_208 + 20_666 + 19_894 + 120_706);
        let later = CpuTimes { steal: before.steal + 30, total: before.total + 100 };
        assert_eq!(before.steal_pct_until(&later), Some(30.0));
        // No time passed, or the counters went backwards: no figure rather than a wrong one.
        assert_eq!(before.steal_pct_until(&before), None);
        assert_eq!(later.steal_pct_until(&before), None);
    }

    #[test]
    fn a_stat_file_of_another_shape_gives_no_figure() {
        assert_eq!(CpuTimes::parse(""), None);
        assert_eq!(CpuTimes::parse("intr 1 2 3 4 5 6 7 8"), None);
        assert_eq!(CpuTimes::parse("cpu 1 2 3"), None);
        assert_eq!(CpuTimes::parse("cpu 1 2 3 4 5 6 7 x"), None);
    }
}
