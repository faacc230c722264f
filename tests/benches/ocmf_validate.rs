//! How many signed meter values an MSP can check per second, through the library and through
//! the server, next to the raw ECDSA P-256 verification rate of the backends on the same machine.
//!
//! Registers `OCMF_BENCH_METERS` test meters (default 2,000) on a real server (real sled, real
//! gRPC), signs one session record per meter and sample (begin and end reading, EVSE ID), and
//! validates them:
//! - library: parse + signature only, then the full validation against the registry state
//!   replayed from the log (what an auditor or an offline MSP does), on one core;
//! - server: batch calls of 500 records, two in flight; then single-record calls, 64 in flight.
//!
//! `cargo bench -p registry-tests --bench ocmf_validate`.

use std::sync::Arc;
use std::time::Instant;

use registry_client::{AsOf, load};
use registry_core::ocmf::Record;
use registry_core::ocpi::Input;
use registry_core::signed_values;

const OPERATOR: &str = "DE*BEN";
const BATCH: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let meters = registry_tests::env_u64("OCMF_BENCH_METERS", 2_000);
    let samples = registry_tests::env_u64("OCMF_BENCH_RECORDS", 20_000) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let f = registry_tests::Fixture::start().await;
    let (server, client) = (&f.registry.server, &f.client);
    let operator = f.operator(OPERATOR).await;
    let effective = registry_core::time::parse("2026-01-01T00:00:00Z")?;
    let registered = load::registrations(&operator, &f.origin(), OPERATOR, 0..meters, effective);
    let (keys, commands): (Vec<_>, Vec<_>) = registered.into_iter().unzip();
    let (loaded, refusal) = load::submit_all(client, commands, 2, |_| {}).await?;
    if let Some(why) = refusal {
        anyhow::bail!("{} registrations refused, e.g. {why}", loaded.refused);
    }

    let t = Instant::now();
    let records: Vec<String> = (0..samples)
        .map(|i| {
            let m = i as u64 % meters;
            let begin = effective + chrono::TimeDelta::minutes(60 + i as i64);
            load::ocmf_record(&keys[m as usize], OPERATOR, m, begin, 45)
        })
        .collect();
    println!(
        "{meters} meters registered; {samples} session records signed in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let inputs: Vec<Input> = records
        .iter()
        .map(|r| Input { record: r.clone(), claimed_key: None, label: String::new() })
        .collect();

    // Library, one core: parse alone, then parse + verify with the right key.
    let t = Instant::now();
    for r in &records {
        std::hint::black_box(Record::parse(r).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let parse = samples as f64 / t.elapsed().as_secs_f64();
    println!("library, parse only, one core:                {parse:>8.0} records/s");
    let spki: Vec<&[u8]> =
        (0..samples).map(|i| keys[i % meters as usize].public_key_der()).collect();
    let t = Instant::now();
    for (r, k) in records.iter().zip(&spki) {
        let record = Record::parse(r).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(record.verify(k)?, "a generated record must verify");
    }
    let parse_verify = samples as f64 / t.elapsed().as_secs_f64();
    println!("library, parse + signature, one core:         {parse_verify:>8.0} records/s");

    // Library, one core: the whole validation against the state replayed from the log.
    let size = server.reader().head().size;
    let stored: Vec<Vec<u8>> =
        client.entries(0, size).await?.into_iter().map(|e| e.entry).collect();
    let mut replay = registry_core::replay::Replayer::new();
    replay.push_all(&stored).map_err(|e| anyhow::anyhow!("replay: {e}"))?;
    let state = replay.state();
    let t = Instant::now();
    for r in &records {
        let v = signed_values::validate(r, None, state, size)?;
        anyhow::ensure!(v.valid() && v.billable(), "a generated record must validate: {v:?}");
    }
    let library = samples as f64 / t.elapsed().as_secs_f64();
    println!("library, full validation, one core:           {library:>8.0} records/s");

    // Server, batches.
    let t = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let chunks: Vec<Vec<Input>> = inputs.chunks(BATCH).map(<[Input]>::to_vec).collect();
    let chunks = Arc::new(std::sync::Mutex::new(chunks.into_iter()));
    for _ in 0..2 {
        let client = client.clone();
        let chunks = chunks.clone();
        calls.spawn(async move {
            let mut done = 0usize;
            loop {
                let Some(chunk) = chunks.lock().ok().and_then(|mut c| c.next()) else {
                    return anyhow::Ok(done);
                };
                let answer = client.validate_meter_values(&chunk, AsOf::Head, false).await?;
                anyhow::ensure!(answer.results.iter().all(|v| v.valid && v.billable));
                done += answer.results.len();
            }
        });
    }
    let mut done = 0;
    while let Some(r) = calls.join_next().await {
        done += r??;
    }
    let batched = done as f64 / t.elapsed().as_secs_f64();
    println!("server, batches of {BATCH}, 2 in flight:        {batched:>8.0} records/s");

    // Server, one record per call.
    let single_n = samples.min(10_000);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let inputs = Arc::new(inputs);
    let t = Instant::now();
    for _ in 0..64 {
        let (client, next, inputs) = (client.clone(), next.clone(), inputs.clone());
        calls.spawn(async move {
            let mut done = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= single_n {
                    return anyhow::Ok(done);
                }
                let answer =
                    client.validate_meter_values(&inputs[i..=i], AsOf::Head, false).await?;
                anyhow::ensure!(answer.results.iter().all(|v| v.valid && v.billable));
                done += 1;
            }
        });
    }
    let mut done = 0;
    while let Some(r) = calls.join_next().await {
        done += r??;
    }
    let single = done as f64 / t.elapsed().as_secs_f64();
    println!("server, one record per call, 64 in flight:    {single:>8.0} records/s");
    drop(f);

    // The ceilings, as `registry bench crypto` measures them (600-byte messages, like a record).
    let crypto = registry_client::bench::crypto_ceilings(std::time::Duration::from_secs(4));
    let (ring, rust_crypto) =
        (crypto.p256_verify_ring_per_sec, crypto.p256_verify_rustcrypto_per_sec);
    println!("raw ECDSA P-256 verify, ring 0.17, one core:  {ring:>8.0} /s");
    println!("raw ECDSA P-256 verify, p256 0.14, one core:  {rust_crypto:>8.0} /s");
    let openssl = openssl_verify_rate();
    match openssl {
        Some(rate) => println!("openssl speed ecdsap256 verify, one core:     {rate:>8.0} /s"),
        None => println!("openssl speed ecdsap256: openssl not found on this machine"),
    }
    println!(
        "ratios: library full validation ÷ ring = {:.2}; server batches ÷ (ring × {cores} cores) \
         = {:.2}; server batches ÷ (openssl × {cores} cores) = {}",
        library / ring,
        batched / (ring * cores as f64),
        openssl.map_or("n/a".into(), |o| format!("{:.2}", batched / (o * cores as f64)))
    );
    Ok(())
}

/// Verifications per second from `openssl speed -seconds 3 ecdsap256`, if openssl is installed.
fn openssl_verify_rate() -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "3", "ecdsap256"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "256 bits ecdsa (nistp256)   0.0000s   0.0001s  28595.2  10812.8": the last is verify/s.
    text.lines()
        .find(|l| l.contains("ecdsa (nistp256)"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}
