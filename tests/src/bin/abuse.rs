//! The abuse benchmark (`tests/faults/abuse.sh`): each attack of issue #26 runs against a
//! `registry-server` process while a legitimate client on another loopback address measures
//! lookups, registrations and health checks. It prints the server's peak RSS and open file
//! descriptors, its RSS after the attack, and the legitimate client's throughput and p99 during
//! each attack against the same figures without one. `--tls` adds TLS against plaintext lookups
//! at 64 clients over reused connections, and the TLS handshake rate.
//!
//! Attackers and the legitimate client share this machine's two cores with the server, so the
//! figures are a floor: a real attacker's CPU is not the registry's.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use registry_client::bench::{Fleet, OPERATOR, prepare};
use registry_client::{RegistryClient, TlsOptions, load};
use registry_core::keys::P256KeyPair;
use registry_proto::pb;
use registry_tests::raw;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(about = "Attacks a registry-server process and measures what a legitimate client gets")]
struct Args {
    /// The registry-server binary [default: next to this one]
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Seconds of each measurement
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Meter keys in the fleet the lookups ask about
    #[arg(long, default_value_t = 2_000)]
    keys: u64,
    /// Concurrent legitimate lookups
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Only these attacks (oversized, slow-streams, idle-connections, bad-signatures)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also compare TLS with plaintext lookups and measure the handshake rate
    #[arg(long)]
    tls: bool,
    /// One JSON object per line instead of a table
    #[arg(long)]
    json: bool,
}

const LEGIT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

fn attacker(n: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 10 + n))
}

/// A registry-server child process on a loopback port.
struct Spawned {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    admin: P256KeyPair,
    tls: Option<(TlsOptions, String)>,
}

impl Spawned {
    async fn start(bin: &Path, tls: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let admin = P256KeyPair::generate();
        let admin_file = dir.path().join("admin.pub.pem");
        std::fs::write(&admin_file, admin.public_key_pem())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(bin);
        command
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-key")
            .arg(&admin_file)
            .arg("--log-level")
            .arg("warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let tls = if tls {
            let ca = registry_tests::pki::TestCa::new(dir.path(), "bench");
            let cert = ca.server(dir.path(), "server");
            command.arg("--tls-cert").arg(&cert.cert).arg("--tls-key").arg(&cert.key);
            let options = TlsOptions { ca_cert: Some(ca.cert.clone()), ..Default::default() };
            Some((options, format!("https://localhost:{port}")))
        } else {
            None
        };
        let child = command.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let spawned = Self { child, addr, _dir: dir, admin, tls };
        let deadline = Instant::now() + Duration::from_secs(60);
        while spawned.client().await.is_err() {
            if Instant::now() > deadline {
                bail!("the server did not answer within a minute");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(spawned)
    }

    fn url(&self) -> String {
        match &self.tls {
            Some((_, url)) => url.clone(),
            None => format!("http://{}", self.addr),
        }
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let tls = self.tls.as_ref().map(|(o, _)| o.clone()).unwrap_or_default();
        Ok(registry_client::connect::endpoint(&self.url(), &tls)?.local_address(Some(LEGIT)))
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(self.endpoint()?.connect().await?)
    }

    async fn client(&self) -> anyhow::Result<RegistryClient> {
        let client = RegistryClient::from_channel(self.channel().await?);
        client.registry_info().await?;
        Ok(client)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's resident memory and open file descriptors, sampled every 50 ms.
struct Sampler {
    pid: u32,
    peak_rss: Arc<AtomicU64>,
    peak_fds: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let (peak_rss, peak_fds, stop) = (
            Arc::<AtomicU64>::default(),
            Arc::<AtomicU64>::default(),
            Arc::<AtomicBool>::default(),
        );
        let (r, f, s) = (Arc::clone(&peak_rss), Arc::clone(&peak_fds), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                r.fetch_max(rss_kib(pid), Ordering::Relaxed);
                f.fetch_max(fds(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { pid, peak_rss, peak_fds, stop }
    }

    fn reset(&self) {
        self.peak_rss.store(rss_kib(self.pid), Ordering::Relaxed);
        self.peak_fds.store(fds(self.pid), Ordering::Relaxed);
    }

    fn peaks(&self) -> (f64, u64) {
        (
            self.peak_rss.load(Ordering::Relaxed) as f64 / 1024.0,
            self.peak_fds.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the legitimate client got in one measurement.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Figures {
    lookups_per_sec: f64,
    lookup_p50_ms: f64,
    lookup_p99_ms: f64,
    lookup_errors: u64,
    registrations: u64,
    registration_p50_ms: f64,
    registration_p99_ms: f64,
    registration_errors: u64,
    health_max_ms: f64,
    health_failures: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Lookups from `clients` tasks over four connections, one registration at a time, and a health
/// check every 100 ms on a connection of its own, for `seconds`.
async fn measure(
    server: &Spawned,
    fleet: &Fleet,
    clients: usize,
    seconds: f64,
    registrations: bool,
    next_key: &AtomicU64,
) -> anyhow::Result<Figures> {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(server.channel().await?);
    }
    let mut lookups = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut client =
            pb::lookup_service_client::LookupServiceClient::new(channels[c % 4].clone());
        let (seed, keys) = (fleet.seed, fleet.keys);
        lookups.spawn(async move {
            let (mut latencies, mut errors, mut i) = (Vec::new(), 0u64, c as u64);
            while Instant::now() < until {
                i = (i * 6364136223846793005 + 1442695040888963407) % keys.max(1);
                let fingerprint = load::meter_key(seed, i).fingerprint_hex();
                let request = pb::CheckValidityRequest {
                    key: Some(pb::KeySelector {
                        selector: Some(pb::key_selector::Selector::Fingerprint(fingerprint)),
                        manufacturer: String::new(),
                    }),
                    at: Some(registry_core::time::to_timestamp(&chrono::Utc::now())),
                    ..Default::default()
                };
                let started = Instant::now();
                match client.check_validity(request).await {
                    Ok(_) => latencies.push(millis(started)),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let registering = registrations.then(|| {
        let channel = channels[0].clone();
        let (operator, registry) = (fleet.operator.clone(), fleet.registry.clone());
        let first = next_key.fetch_add(100_000, Ordering::Relaxed);
        tokio::spawn(async move {
            let client = RegistryClient::from_channel(channel);
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut i = first;
            while Instant::now() < until {
                let (_, command) = load::registrations_of(
                    &operator,
                    &registry,
                    OPERATOR,
                    i..i + 1,
                    registry_client::bench::fleet_effective(),
                    |n| load::meter_key(0xab05e, n),
                )
                .remove(0);
                i += 1;
                let started = Instant::now();
                match client.submit_signed(command).await {
                    Ok(_) => latencies.push(millis(started)),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        })
    });
    let health_channel = server.channel().await?;
    let health = tokio::spawn(async move {
        let mut health = tonic_health::pb::health_client::HealthClient::new(health_channel);
        let (mut worst, mut failures) = (0f64, 0u64);
        while Instant::now() < until {
            let started = Instant::now();
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            match tokio::time::timeout(Duration::from_secs(2), health.check(request)).await {
                Ok(Ok(_)) => worst = worst.max(millis(started)),
                _ => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (worst, failures)
    });
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(done) = lookups.join_next().await {
        let (latencies, e) = done?;
        all.extend(latencies);
        errors += e;
    }
    all.sort_by(f64::total_cmp);
    let mut figures = Figures {
        lookups_per_sec: all.len() as f64 / seconds,
        lookup_p50_ms: percentile(&all, 0.5),
        lookup_p99_ms: percentile(&all, 0.99),
        lookup_errors: errors,
        ..Figures::default()
    };
    if let Some(registering) = registering {
        let (mut latencies, errors) = registering.await?;
        latencies.sort_by(f64::total_cmp);
        figures.registrations = latencies.len() as u64;
        figures.registration_p50_ms = percentile(&latencies, 0.5);
        figures.registration_p99_ms = percentile(&latencies, 0.99);
        figures.registration_errors = errors;
    }
    (figures.health_max_ms, figures.health_failures) = health.await?;
    Ok(figures)
}

const BATCH: &str = "/keyregistry.v1.LookupService/CheckValidityBatch";

/// `workers` connections from `from`, each sending `bodies` in turn to `path` as fast as the
/// answers come back. The bodies are encoded once: what is measured is the registry's cost.
async fn flood(
    addr: SocketAddr,
    from: IpAddr,
    path: &'static str,
    bodies: Vec<Bytes>,
    workers: usize,
    stop: Arc<AtomicBool>,
) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (stop, bodies) = (stop.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                let Ok(client) = raw::h2_from(from, addr).await else { continue };
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut client) = client.clone().ready().await else { break };
                    let Ok((response, mut send)) =
                        client.send_request(raw::grpc_request(addr, path), false)
                    else {
                        break;
                    };
                    n += 1;
                    let _ = send.send_data(bodies[n % bodies.len()].clone(), true);
                    if let Ok(Ok(response)) =
                        tokio::time::timeout(Duration::from_secs(10), response).await
                    {
                        // Read the answer to its end, as a client would.
                        let mut body = response.into_body();
                        while let Some(Ok(_)) = body.data().await {}
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Batches of empty questions: 32 MB (16 million of them, refused by the length prefix) and
/// 4 MiB (two million, refused by count), sent whole, from three connections.
async fn oversized(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let empties = |bytes: usize| raw::framed(&[0x0a, 0x00].repeat(bytes / 2));
    flood(addr, attacker(1), BATCH, vec![empties(32 << 20), empties(4 << 20)], 3, stop).await
}

/// 3,000 streams on one connection and one on each of 2,000 more, each announcing 1 MiB and
/// sending one byte, held until the attack ends.
async fn slow_streams(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let mut held = Vec::new();
    let announce = |send: &mut h2::SendStream<Bytes>| {
        let _ = send.send_data(raw::announcing(1 << 20), false);
    };
    if let Ok(client) = raw::h2_from(attacker(2), addr).await {
        for _ in 0..3_000 {
            let Ok(Ok(mut ready)) =
                tokio::time::timeout(Duration::from_millis(200), client.clone().ready()).await
            else {
                break;
            };
            if let Ok((response, mut send)) =
                ready.send_request(raw::grpc_request(addr, BATCH), false)
            {
                announce(&mut send);
                held.push((response, send));
            }
        }
    }
    let mut connections = Vec::new();
    for _ in 0..2_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(Ok(client)) =
            tokio::time::timeout(Duration::from_millis(500), raw::h2_from(attacker(2), addr)).await
        else {
            continue;
        };
        if let Ok(Ok(mut ready)) =
            tokio::time::timeout(Duration::from_millis(200), client.clone().ready()).await
            && let Ok((response, mut send)) =
                ready.send_request(raw::grpc_request(addr, BATCH), false)
        {
            announce(&mut send);
            held.push((response, send));
        }
        connections.push(client);
    }
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
}

/// 5,000 TCP connections that send nothing, reopened as the registry closes them.
async fn idle_connections(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let mut tasks = Vec::new();
    for _ in 0..5_000 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut tcp) = raw::tcp_from(attacker(3), addr).await {
                    let mut sink = [0u8; 256];
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::io::AsyncReadExt::read(&mut tcp, &mut sink),
                        )
                        .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ => {}
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Four connections sending bulk calls of 1,000 commands that name the fleet operator's key and
/// are signed with another.
async fn bad_signatures(addr: SocketAddr, fleet: &Fleet, stop: Arc<AtomicBool>) {
    let effective = registry_client::bench::fleet_effective();
    let named =
        load::registrations_of(&fleet.operator, &fleet.registry, OPERATOR, 0..1, effective, |n| {
            load::meter_key(1, n)
        });
    let key_id = named[0].1.signer_key_id;
    let stranger = P256KeyPair::generate();
    let forged =
        load::registrations_of(&stranger, &fleet.registry, OPERATOR, 0..1_000, effective, |n| {
            load::meter_key(0xbad, n)
        });
    let request = pb::SubmitCommandsRequest {
        commands: forged
            .iter()
            .map(|(_, c)| {
                let mut c = pb::SignedCommand::from(c);
                c.signer_key_id = key_id.to_vec();
                c
            })
            .collect(),
    };
    let body = raw::framed(&prost::Message::encode_to_vec(&request));
    flood(addr, attacker(4), "/keyregistry.v1.CommandService/SubmitCommands", vec![body], 4, stop)
        .await
}

#[derive(Debug, serde::Serialize)]
struct Row {
    attack: String,
    idle_rss_mib: f64,
    peak_rss_mib: f64,
    rss_after_mib: f64,
    peak_fds: u64,
    #[serde(flatten)]
    figures: Figures,
}

fn print(rows: &[Row], json: bool) {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        return;
    }
    let base = &rows[0].figures;
    println!(
        "{:<17} {:>8} {:>8} {:>8} {:>6} {:>10} {:>6} {:>9} {:>6} {:>9} {:>9} {:>8}",
        "attack",
        "idle MiB",
        "peak MiB",
        "after",
        "fds",
        "lookups/s",
        "of base",
        "p99 ms",
        "× base",
        "reg p50",
        "reg p99",
        "health"
    );
    for r in rows {
        let f = &r.figures;
        println!(
            "{:<17} {:>8.0} {:>8.0} {:>8.0} {:>6} {:>10.0} {:>5.0}% {:>9.2} {:>6.2} {:>9.1} {:>9.1} {:>6.1}ms",
            r.attack,
            r.idle_rss_mib,
            r.peak_rss_mib,
            r.rss_after_mib,
            r.peak_fds,
            f.lookups_per_sec,
            100.0 * f.lookups_per_sec / base.lookups_per_sec,
            f.lookup_p99_ms,
            f.lookup_p99_ms / base.lookup_p99_ms,
            f.registration_p50_ms,
            f.registration_p99_ms,
            f.health_max_ms,
        );
        if f.lookup_errors + f.registration_errors + f.health_failures > 0 {
            println!(
                "{:<17} errors: {} lookups, {} registrations, {} health checks",
                "", f.lookup_errors, f.registration_errors, f.health_failures
            );
        }
    }
}

async fn attacks(args: &Args, bin: &Path) -> anyhow::Result<()> {
    let server = Spawned::start(bin, false).await?;
    let client = server.client().await?;
    eprintln!("preparing a fleet of {} keys", args.keys);
    let fleet = prepare(&client, Some(&server.admin), args.keys, 7, |_, _| {}).await?;
    // The fleet's loading leaves garbage the allocator returns over the next seconds.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sampler = Sampler::start(server.pid());
    // Registrations during the measurements use indices far past the fleet's.
    let next_key = AtomicU64::new(1 << 32);
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut rows = Vec::new();
    for name in ["none", "oversized", "slow-streams", "idle-connections", "bad-signatures"] {
        if name != "none" && !wanted(name) {
            continue;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = rss_kib(server.pid()) as f64 / 1024.0;
        sampler.reset();
        eprintln!("measuring with attack: {name}");
        let stop = Arc::new(AtomicBool::new(false));
        let attack = {
            let (addr, stop) = (server.addr, stop.clone());
            match name {
                "oversized" => Some(tokio::spawn(oversized(addr, stop))),
                "slow-streams" => Some(tokio::spawn(slow_streams(addr, stop))),
                "idle-connections" => Some(tokio::spawn(idle_connections(addr, stop))),
                _ => None,
            }
        };
        let flood =
            (name == "bad-signatures").then(|| bad_signatures(server.addr, &fleet, stop.clone()));
        // Let the attack build up before measuring.
        let measured = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let figures =
                measure(&server, &fleet, args.clients, args.seconds, true, &next_key).await;
            stop.store(true, Ordering::Relaxed);
            figures
        };
        let figures = match flood {
            Some(flood) => {
                let (figures, ()) = tokio::join!(measured, flood);
                figures?
            }
            None => measured.await?,
        };
        if let Some(attack) = attack {
            let _ = tokio::time::timeout(Duration::from_secs(30), attack).await;
        }
        let (peak_rss, peak_fds) = sampler.peaks();
        // The registry lets go: connections close, allocator pages return.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = rss_kib(server.pid()) as f64 / 1024.0;
        rows.push(Row {
            attack: name.into(),
            idle_rss_mib: idle,
            peak_rss_mib: peak_rss,
            rss_after_mib: after,
            peak_fds,
            figures,
        });
    }
    print(&rows, args.json);
    Ok(())
}

/// Lookups at `clients` over reused connections, plaintext and TLS, and the TLS handshake rate.
async fn tls_against_plaintext(args: &Args, bin: &Path) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for tls in [false, true] {
        let server = Spawned::start(bin, tls).await?;
        let client = server.client().await?;
        let fleet = prepare(&client, Some(&server.admin), args.keys, 7, |_, _| {}).await?;
        let figures =
            measure(&server, &fleet, args.clients, args.seconds, false, &AtomicU64::new(0)).await?;
        let handshakes = if tls {
            let until = Instant::now() + Duration::from_secs(3);
            let done = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (endpoint, done) = (server.endpoint()?, done.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < until {
                        if endpoint.connect().await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            Some(done.load(Ordering::Relaxed) as f64 / 3.0)
        } else {
            None
        };
        results.push((tls, figures, handshakes));
    }
    let (plain, tls) = (&results[0].1, &results[1].1);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "plaintext": plain, "tls": tls,
                "tls_cost_ratio": plain.lookups_per_sec / tls.lookups_per_sec,
                "tls_handshakes_per_sec": results[1].2,
            })
        );
    } else {
        println!(
            "\nlookups at {} clients over reused connections: plaintext {:.0}/s (p99 {:.2} ms), TLS {:.0}/s (p99 {:.2} ms): a TLS lookup costs {:.2} × a plaintext one; {:.0} TLS handshakes/s",
            args.clients,
            plain.lookups_per_sec,
            plain.lookup_p99_ms,
            tls.lookups_per_sec,
            tls.lookup_p99_ms,
            plain.lookups_per_sec / tls.lookups_per_sec,
            results[1].2.unwrap_or_default()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("registry-server"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p registry-server) or pass --server-bin",
            bin.display()
        );
    }
    attacks(&args, &bin).await?;
    if args.tls {
        tls_against_plaintext(&args, &bin).await?;
    }
    Ok(())
}
