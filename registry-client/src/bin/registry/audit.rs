//! `registry audit`: what a regulator or auditor reads — the registry's identity, its signed
//! checkpoints and entries — and the archive they keep: export, follow, and verify offline.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use registry_client::{RegistryClient, render};
use registry_core::entry::Entry;
use serde_json::json;

use crate::output::{Printer, Report, Usage};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The registry's identity: origin, public key, key ID
    Info,
    /// The latest signed checkpoint
    Checkpoint,
    /// Entries by position, decoded
    Entries {
        /// First position
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Position after the last one (default: the end of the log)
        #[arg(long)]
        to: Option<u64>,
    },
    /// Export the log into an archive (C2SP tlog-tiles layout plus a JSON Lines view); resumes
    /// an existing archive after checking the registry's new checkpoint is consistent with it
    Export {
        /// The archive directory
        #[arg(long)]
        out: PathBuf,
        /// Re-fetch from this position (at most the archive's size; default: its size)
        #[arg(long)]
        from: Option<u64>,
        #[command(flatten)]
        tiles: TileSource,
    },
    /// Verify an archive offline: hash chain, Merkle and map roots against the signed
    /// checkpoint, every signature against the keys in force, every event against the rules
    Verify {
        /// The archive directory
        dir: PathBuf,
        /// The registry's public key (PEM)
        #[arg(long, value_name = "PUB.pem")]
        registry_key: PathBuf,
        /// An earlier signed checkpoint the archive must be consistent with
        #[arg(long, value_name = "FILE")]
        since_checkpoint: Option<PathBuf>,
    },
    /// Keep an archive current from the live log, checking every new checkpoint against the
    /// previous one with a consistency proof (a mirror that detects a forked or rewritten log)
    Follow {
        /// The archive directory
        #[arg(long)]
        out: PathBuf,
        /// Stop once the archive holds this many entries (default: follow until stopped)
        #[arg(long)]
        until_size: Option<u64>,
        #[command(flatten)]
        tiles: TileSource,
        /// With --tiles: seconds between two looks at the tile server's checkpoint
        #[arg(long, default_value_t = 5)]
        poll_secs: u64,
    },
}

/// Reading the log from a tile server instead of the registry's gRPC API.
#[derive(Debug, clap::Args)]
pub struct TileSource {
    /// Read the log as C2SP tlog-tiles from this URL (the registry's web face, a CDN, or a
    /// static copy of an export) instead of --server; needs --registry-key
    #[arg(long, value_name = "URL", requires = "registry_key")]
    pub tiles: Option<String>,
    /// With --tiles: the registry's public key (PEM) its checkpoints must verify with
    #[arg(long, value_name = "PUB.pem")]
    pub registry_key: Option<PathBuf>,
}

impl AuditCommand {
    /// The tile server an export or follow reads, if it was given one.
    pub fn tiles(&self) -> Option<&TileSource> {
        match self {
            AuditCommand::Export { tiles, .. } | AuditCommand::Follow { tiles, .. } => {
                tiles.tiles.as_ref().map(|_| tiles)
            }
            _ => None,
        }
    }
}

/// An export or follow from a tile server (no gRPC connection).
pub async fn run_tiles(
    ca_cert: Option<&Path>,
    printer: Printer,
    command: AuditCommand,
) -> anyhow::Result<Report> {
    let source = command.tiles().context("a tile server")?;
    let url = source.tiles.clone().unwrap_or_default();
    let key_file = source.registry_key.clone().context("--registry-key")?;
    let pem = std::fs::read_to_string(&key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let key = registry_core::keys::p256_spki_der_from_pem(&pem)
        .map_err(|e| Usage(format!("{}: {e}", key_file.display())))?;
    let poll = match &command {
        AuditCommand::Follow { poll_secs, .. } => {
            std::time::Duration::from_secs((*poll_secs).max(1))
        }
        _ => std::time::Duration::from_secs(5),
    };
    let tiles = registry_client::tiles::TileClient::new(&url, ca_cert)
        .map_err(|e| Usage(e.to_string()))?
        .polling(poll);
    run_from(registry_client::audit::Source::Tiles(&tiles, &key), printer, command).await
}

/// Answers an audit question that needs the server.
pub async fn run(
    client: &RegistryClient,
    printer: Printer,
    command: AuditCommand,
) -> anyhow::Result<Report> {
    match command {
        AuditCommand::Info => {
            let i = client.registry_info().await?;
            Ok(Report::new(
                format!(
                    "origin      {}\nkey ID      {}\nfingerprint {}\n{}",
                    i.origin,
                    i.key_id,
                    i.fingerprint,
                    i.public_key_pem.trim_end()
                ),
                json!({
                    "origin": i.origin, "key_id": i.key_id, "fingerprint": i.fingerprint,
                    "public_key_pem": i.public_key_pem,
                }),
            ))
        }
        AuditCommand::Checkpoint => {
            let info = client.registry_info().await?;
            let c = client.checkpoint(0).await?;
            let verifier =
                registry_core::note::NoteVerifier::new(&info.origin, &info.public_key_der)?;
            let cp = registry_core::checkpoint::Checkpoint::open(&c.checkpoint, &verifier)
                .context("the checkpoint's signature does not verify with the registry's key")?;
            Ok(Report::new(
                c.checkpoint.trim_end(),
                json!({
                    "origin": cp.origin, "tree_size": cp.size, "root_hash": hex::encode(cp.root),
                    "checkpoint": c.checkpoint,
                }),
            ))
        }
        AuditCommand::Export { .. } | AuditCommand::Follow { .. } => {
            run_from(registry_client::audit::Source::Registry(client), printer, command).await
        }
        AuditCommand::Verify { dir, registry_key, since_checkpoint } => {
            verify_archive(&dir, &registry_key, since_checkpoint.as_deref())
        }
        AuditCommand::Entries { from, to } => {
            if to.is_some_and(|t| t < from) {
                return Err(Usage("--to must not be below --from".into()).into());
            }
            let entries = client.entries(from, to.unwrap_or(0)).await?;
            let decoded = entries
                .iter()
                .map(|e| {
                    Entry::decode(&e.entry)
                        .with_context(|| format!("entry {} does not decode", e.position))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Report::new(
                decoded.iter().map(render::entry_text).collect::<Vec<_>>().join("\n"),
                json!({"entries": entries.iter().map(|e| render::entry_message(&e.entry)).collect::<Vec<_>>()}),
            ))
        }
    }
}

/// An export or a follow from `source`.
async fn run_from(
    source: registry_client::audit::Source<'_>,
    printer: Printer,
    command: AuditCommand,
) -> anyhow::Result<Report> {
    match command {
        AuditCommand::Export { out, from, .. } => {
            let archive = registry_client::archive::Archive::new(&out);
            let bar = registry_client::audit::progress(0, "exporting");
            let done = registry_client::audit::export(source, &archive, from, &bar).await?;
            Ok(Report::new(
                format!(
                    "archive {} holds {} entries ({} fetched, consistent with the {} archived before)",
                    out.display(),
                    done.size,
                    done.fetched,
                    done.previous_size
                ),
                json!({
                    "archive": out.display().to_string(), "size": done.size,
                    "fetched": done.fetched, "previous_size": done.previous_size,
                }),
            ))
        }
        AuditCommand::Follow { out, until_size, .. } => {
            let archive = registry_client::archive::Archive::new(&out);
            let size = registry_client::audit::follow(source, &archive, until_size, |cp| {
                printer.event(
                    &format!(
                        "checkpoint {} verified and consistent; archive holds {} entries",
                        hex::encode(cp.root),
                        cp.size
                    ),
                    &json!({"checkpoint_size": cp.size, "root_hash": hex::encode(cp.root)}),
                );
            })
            .await?;
            Ok(Report::new(format!("stopped at {size} entries"), json!({"stopped_at_size": size})))
        }
        _ => Err(anyhow::anyhow!("only an export or a follow reads from a log source")),
    }
}

/// Verifies an archive offline: it needs the registry's public key, not the server.
pub fn verify_archive(
    dir: &Path,
    registry_key: &Path,
    since: Option<&Path>,
) -> anyhow::Result<Report> {
    let pem = std::fs::read_to_string(registry_key)
        .with_context(|| format!("reading {}", registry_key.display()))?;
    let key = registry_core::keys::p256_spki_der_from_pem(&pem)?;
    let since =
        since.map(std::fs::read_to_string).transpose().context("reading --since-checkpoint")?;
    let archive = registry_client::archive::Archive::new(dir);
    let bar = registry_client::audit::progress(0, "verifying");
    Ok(match registry_client::audit::verify(&archive, &key, since.as_deref(), &bar) {
        Ok(v) => {
            for w in &v.warnings {
                eprintln!("warning: {w}");
            }
            Report::new(
                format!(
                    "archive verified: {} entries, root {}, {} keys, {} operators ({:.2} s)",
                    v.checkpoint.size,
                    hex::encode(v.checkpoint.root),
                    v.keys,
                    v.operators,
                    v.seconds
                ),
                json!({
                    "valid": true,
                    "tree_size": v.checkpoint.size,
                    "root_hash": hex::encode(v.checkpoint.root),
                    "keys": v.keys,
                    "operators": v.operators,
                    "seconds": v.seconds,
                    "warnings": v.warnings,
                }),
            )
        }
        Err(f) => Report::no(
            format!("the archive does not verify: {f}"),
            json!({"valid": false, "first_bad_position": f.position, "reason": f.reason}),
        ),
    })
}
