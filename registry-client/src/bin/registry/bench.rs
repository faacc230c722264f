//! `registry bench`: a load generator that prepares its own fleet and reports throughput and
//! latency percentiles (like pgbench), or (`crypto`) this machine's raw signature speed.

use std::path::PathBuf;

use registry_client::{RegistryClient, bench, keyfile, render};
use serde_json::json;

use crate::output::Report;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to run: register, check, check-batch, verify-ocmf, mixed or empty against the server;
    /// check-http or tiles against its web face (--http);
    /// prepare (only load the fleet, timing the bulk load); crypto (this machine's raw ECDSA and
    /// SHA-256 speed, no server)
    #[arg(value_parser = bench_workload)]
    workload: BenchWorkload,
    /// Concurrent clients, each with one call in flight
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the clients share
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds to run
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Meter keys in the test fleet (registered first if missing)
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Questions or records per call (check-batch: 1,000; verify-ocmf: 1)
    #[arg(long)]
    batch: Option<usize>,
    /// How much of each validity answer check, check-batch and mixed ask for: full, or basic
    /// (without the key material and the binding)
    #[arg(long, value_enum, default_value_t = BenchView::Full)]
    view: BenchView,
    /// The fleet's seed: the same seed finds the same fleet again
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// An administrator's private key, to add the bench operator the first time
    #[arg(long, value_name = "PEM")]
    admin_key: Option<PathBuf>,
    /// The web face's URL (http://HOST:PORT), for check-http and tiles
    #[arg(long, value_name = "URL")]
    http: Option<String>,
}

/// `--view` of `registry bench`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchView {
    Full,
    Basic,
}

/// A server workload, or one of the two that are not.
#[derive(Debug, Clone, Copy)]
enum BenchWorkload {
    Run(bench::Workload),
    Prepare,
    Crypto,
}

fn bench_workload(s: &str) -> Result<BenchWorkload, String> {
    match s {
        "prepare" => Ok(BenchWorkload::Prepare),
        "crypto" => Ok(BenchWorkload::Crypto),
        _ => <bench::Workload as clap::ValueEnum>::from_str(s, true)
            .map(BenchWorkload::Run)
            .map_err(|_| {
                "one of register, check, check-batch, verify-ocmf, mixed, empty, check-http, tiles, prepare, crypto"
                    .to_string()
            }),
    }
}

/// Runs a workload.
pub async fn run(
    server: &str,
    tls: &registry_client::TlsOptions,
    quiet: bool,
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    use bench::Workload;
    let duration = std::time::Duration::from_secs_f64(args.duration.max(0.01));
    let workload = match args.workload {
        BenchWorkload::Crypto => {
            let c = bench::crypto_ceilings(duration);
            return Ok(Report::new(
                format!(
                    "ECDSA P-256 verify, one core: ring {:.0}/s, p256 {:.0}/s; sign: p256 {:.0}/s, checkpoints (ring) {:.0}/s; SHA-256 {:.0} MB/s",
                    c.p256_verify_ring_per_sec,
                    c.p256_verify_rustcrypto_per_sec,
                    c.p256_sign_per_sec,
                    c.checkpoint_sign_per_sec,
                    c.sha256_bytes_per_sec / 1e6
                ),
                serde_json::to_value(c)?,
            ));
        }
        BenchWorkload::Prepare => None,
        BenchWorkload::Run(w) => Some(w),
    };
    let client = RegistryClient::connect_with(server, tls).await?;
    let admin = args.admin_key.as_deref().map(keyfile::load_signer).transpose()?;
    let keys = match workload {
        Some(Workload::Empty) => 0,
        _ => args.keys,
    };
    let started = std::time::Instant::now();
    let bar = if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(keys).with_message("loading the fleet")
    };
    let fleet =
        bench::prepare(&client, admin.as_ref(), keys, args.seed, |done, _| bar.set_position(done))
            .await?;
    bar.finish_and_clear();
    let Some(workload) = workload else {
        let seconds = started.elapsed().as_secs_f64();
        return Ok(Report::new(
            format!("fleet of {keys} keys ready in {seconds:.1} s"),
            json!({"workload": "prepare", "keys": keys, "seconds": seconds}),
        ));
    };
    let settings = bench::Settings {
        concurrency: args.concurrency.max(1),
        connections: args.connections.max(1),
        duration,
        batch: args.batch,
        view: match args.view {
            BenchView::Full => registry_client::View::Full,
            BenchView::Basic => registry_client::View::Basic,
        },
        http: args.http.clone(),
    };
    let report = bench::run(server, tls, &fleet, workload, &settings).await?;
    if report.calls == 0 {
        anyhow::bail!(
            "no call succeeded: {}",
            report.first_error.as_deref().unwrap_or("the run was too short")
        );
    }
    Ok(Report::new(render::bench_report(&report), serde_json::to_value(&report)?))
}
