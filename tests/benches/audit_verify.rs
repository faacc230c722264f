//! How long a regulator waits for `registry audit verify` on a large export, next to the raw
//! SHA-256 and ECDSA speed of the same machine.
//!
//! Fills a registry (real server, real sled, real gRPC) with signed registrations through the
//! bulk path, each followed by its automatic confirmation, exports the log and verifies the
//! export offline exactly as `registry audit verify` does.
//!
//! `cargo bench -p registry-tests --bench audit_verify` (`AUDIT_BENCH_ENTRIES`, default
//! 1,000,000; `BENCH_DIR` for the disk used). With `AUDIT_BENCH_ARCHIVE=DIR` the export is kept
//! there, and a later run with the same setting only verifies it again.

use std::time::Instant;

use registry_client::archive::Archive;
use registry_client::{Order, RegistryClient, audit, load};
use registry_core::keys::P256KeyPair;
use registry_server::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kept = std::env::var_os("AUDIT_BENCH_ARCHIVE").map(std::path::PathBuf::from);
    if let Some(dir) = kept.as_ref().filter(|d| d.join("archive.json").is_file()) {
        let archive = Archive::new(dir);
        let pem = std::fs::read_to_string(dir.join("registry-key.pem"))?;
        let key = registry_core::keys::p256_spki_der_from_pem(&pem)?;
        let size = archive.manifest()?.map_or(0, |m| m.size);
        return ceilings(&archive, &key, size);
    }
    let entries = registry_tests::env_u64("AUDIT_BENCH_ENTRIES", 1_000_000);
    let base = std::env::var_os("BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b)?,
        None => tempfile::tempdir()?,
    };
    let admin = P256KeyPair::generate();
    let admin_file = dir.path().join("admin.pub.pem");
    std::fs::write(&admin_file, admin.public_key_pem())?;
    let config = Config {
        admin_keys: vec![admin_file],
        ..registry_tests::test_config(&dir.path().join("data"))
    };
    let server =
        registry_server::registry::start_registry(&config, registry_server::log::system_clock())
            .await?;
    let client = RegistryClient::connect(&format!("http://{}", server.local_addr())).await?;
    let operator = P256KeyPair::generate();
    client
        .submit(
            &admin,
            &Order::AddOperator {
                operator_id: "DE*BEN".into(),
                name: "Bench operator".into(),
                public_keys: vec![operator.public_key_pem()],
            },
        )
        .await?;

    // Two entries per registration (the command and its confirmation).
    let registrations = entries.saturating_sub(2) / 2;
    let origin = client.origin().await?;
    let effective = registry_core::time::parse("2026-01-01T00:00:00Z")?;
    let started = Instant::now();
    let mut signing = 0.0;
    let mut loading = 0.0;
    let step = 100_000;
    for first in (0..registrations).step_by(step as usize) {
        let t = Instant::now();
        let commands: Vec<_> = load::registrations(
            &operator,
            &origin,
            "DE*BEN",
            first..(first + step).min(registrations),
            effective,
        )
        .into_iter()
        .map(|(_, c)| c)
        .collect();
        signing += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (loaded, refusal) = load::submit_all(&client, commands, 4, |_| {}).await?;
        loading += t.elapsed().as_secs_f64();
        if let Some(why) = refusal {
            anyhow::bail!("{} registrations refused, e.g. {why}", loaded.refused);
        }
    }
    let size = server.reader().head().size;
    println!(
        "loaded {registrations} registrations = {size} entries in {:.1} s \
         (generating and signing {signing:.1} s, bulk submission {loading:.1} s: {:.0} entries/s)",
        started.elapsed().as_secs_f64(),
        (size as f64 - 2.0) / loading,
    );

    let archive = Archive::new(&kept.unwrap_or_else(|| dir.path().join("export")));
    let t = Instant::now();
    let exported =
        audit::export(&client, &archive, None, &indicatif::ProgressBar::hidden()).await?;
    let export_secs = t.elapsed().as_secs_f64();
    println!("export: {} entries in {export_secs:.1} s", exported.size);

    let info = client.registry_info().await?;
    server.shutdown();
    server.wait().await?;
    ceilings(&archive, &info.public_key_der, exported.size)
}

/// Verifies the archive, then measures the machine's raw SHA-256 and ECDSA speed on the same
/// entries for comparison.
fn ceilings(archive: &Archive, registry_key: &[u8], size: u64) -> anyhow::Result<()> {
    let verified = audit::verify(archive, registry_key, None, &indicatif::ProgressBar::hidden())
        .map_err(|f| anyhow::anyhow!("the untouched export must verify: {f}"))?;
    println!(
        "audit verify: {} entries, {} keys in {:.1} s ({:.0} entries/s)",
        verified.checkpoint.size,
        verified.keys,
        verified.seconds,
        verified.checkpoint.size as f64 / verified.seconds
    );

    // The ceilings: hashing every stored entry once, and verifying one signature per command.
    let stored: Vec<Vec<u8>> = archive.entries(size).collect::<Result<_, _>>()?;
    let commands = stored
        .iter()
        .filter(|e| registry_core::entry::Entry::decode(e).is_ok_and(|e| e.body.command.is_some()))
        .count();
    let bytes: u64 = stored.iter().map(|e| e.len() as u64).sum();
    let t = Instant::now();
    let mut acc = [0u8; 32];
    for e in &stored {
        acc[0] ^= registry_core::merkle::leaf_hash(e)[0];
    }
    let sha_secs = t.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    println!(
        "raw SHA-256 of the same entries (one core): {:.1} MB in {:.2} s = {:.0} MB/s",
        bytes as f64 / 1e6,
        sha_secs,
        bytes as f64 / 1e6 / sha_secs
    );
    let signer = P256KeyPair::generate();
    let sample = signer.sign_der(b"bench");
    let point = registry_core::keys::p256_point_of_spki(signer.public_key_der())
        .ok_or_else(|| anyhow::anyhow!("a P-256 key"))?
        .to_vec();
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        assert!(registry_core::keys::p256_verify_point(&point, b"bench", &sample));
    }
    let per_sec = n as f64 / t.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "raw ECDSA P-256 verification: {per_sec:.0}/s per core, so the {commands} command \
         signatures alone take {:.1} s on one core, {:.1} s on {cores}",
        commands as f64 / per_sec,
        commands as f64 / per_sec / cores as f64
    );
    println!(
        "audit verify ÷ (SHA-256 + signatures on {cores} cores): {:.2}",
        verified.seconds / (sha_secs + commands as f64 / per_sec / cores as f64)
    );
    Ok(())
}
