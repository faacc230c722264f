//! `faults`: the long-run fault campaigns of `registry_tests::faults` from the command line
//! (see tests/faults/README.md). Prints a summary, and the whole report as JSON with `--json`;
//! exits 1 when a campaign found what it must never find.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use registry_tests::faults::{self, KillOptions, Outcome, TamperOptions};

#[derive(Debug, Parser)]
#[command(name = "faults", about = "Fault campaigns against the registry-server binary")]
enum Cli {
    /// SIGKILL at random moments under concurrent writers.
    Kill {
        /// Kill cycles.
        #[arg(long, default_value_t = 20)]
        cycles: u64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Longest run before a kill, in milliseconds.
        #[arg(long, default_value_t = 1500)]
        longest_run_ms: u64,
        /// Working directory (kept afterwards; a temporary one if not given).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Single-bit flips across a stopped registry's data directory.
    Tamper {
        /// Flips, each on a fresh copy.
        #[arg(long, default_value_t = 50)]
        flips: u64,
        /// Registrations in the registry that is damaged.
        #[arg(long, default_value_t = 2000)]
        registrations: u64,
        /// Working directory (a temporary one if not given).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn work_dir(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => Ok((d, None)),
        None => {
            let t = tempfile::tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let bad = match Cli::parse() {
        Cli::Kill { cycles, writers, longest_run_ms, dir, json } => {
            let (dir, _keep) = work_dir(dir)?;
            let options = KillOptions {
                cycles,
                writers,
                longest_run: Duration::from_millis(longest_run_ms),
                dir,
            };
            let started = std::time::Instant::now();
            let r = faults::kill_campaign(&options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            println!(
                "kill campaign: {} kills ({} during start-up), {} acknowledged registrations, \
                 {} lost, {} failed starts, {} entries, export verified: {} ({:.0} s)",
                r.cycles,
                r.kills_during_start_up,
                r.acknowledged,
                r.lost.len(),
                r.failed_starts.len(),
                r.entries,
                r.export_verified,
                started.elapsed().as_secs_f64()
            );
            for line in r.lost.iter().chain(&r.failed_starts).take(20) {
                println!("  {line}");
            }
            for f in &r.leftover_files {
                println!("  left behind: {f}");
            }
            !r.lost.is_empty()
                || !r.failed_starts.is_empty()
                || !r.export_verified
                || !r.leftover_files.is_empty()
        }
        Cli::Tamper { flips, registrations, dir, json } => {
            let (dir, _keep) = work_dir(dir)?;
            let started = std::time::Instant::now();
            let r = faults::tamper_campaign(&TamperOptions { flips, registrations, dir }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            let (refused, harmless, silent, panicked) = r.counts();
            println!(
                "tamper campaign: {} flips: {refused} refused with a message, {harmless} \
                 harmless, {silent} silently different, {panicked} panics ({:.0} s)",
                r.flips.len(),
                started.elapsed().as_secs_f64()
            );
            let mut by_file = std::collections::BTreeMap::<String, [usize; 4]>::new();
            for f in &r.flips {
                let top = f.file.clone();
                let i = match f.outcome {
                    Outcome::Refused { .. } => 0,
                    Outcome::Harmless => 1,
                    Outcome::SilentlyDifferent(_) => 2,
                    Outcome::Panicked(_) => 3,
                };
                by_file.entry(top).or_default()[i] += 1;
            }
            for (file, [r, h, s, p]) in by_file {
                println!(
                    "  {file:<24} refused {r:>5}  harmless {h:>5}  silent {s:>3}  panics {p:>3}"
                );
            }
            for f in r.flips.iter().filter(|f| {
                matches!(f.outcome, Outcome::SilentlyDifferent(_) | Outcome::Panicked(_))
            }) {
                println!("  {} byte {} bit {}: {:?}", f.file, f.offset, f.bit, f.outcome);
            }
            silent + panicked > 0
        }
    };
    Ok(if bad { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS })
}
