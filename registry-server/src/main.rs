//! `registry-server`: the meter key registry service.
//!
//! With no arguments it serves on 127.0.0.1:50051 from `./data`, creating the data directory
//! and the registry key on first start. See `registry-server --help` for the settings, which
//! may also come from a TOML file (`--config`) and `REGISTRY_*` environment variables.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use registry_server::config::{Config, LogFormat, Overrides};
use registry_server::log::system_clock;

/// mimalloc instead of glibc's malloc: lookups and command checks allocate many small, short-lived
/// values, and under batch lookups glibc's malloc and free took a quarter of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its index in mimalloc 3's option table (the `mimalloc`
/// crates name only the stable options), and its default in milliseconds.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;

/// Keeps freed memory in the allocator instead of handing it back to the kernel a second later. The
/// next allocation there faulted in a zeroed page: 7 % of a replica's samples while it copied a
/// million entries were the kernel clearing pages, and with this the copy took 9.6-13.3 % less CPU
/// (tests/bench/REPLICATION.md, "Eleventh session"). The cost is a resident set that stays at its
/// high-water mark, which is what a service is sized for. `MIMALLOC_PURGE_DELAY` still decides when
/// set; an option that does not read as `purge_delay`'s default (another mimalloc) is left alone.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc's option calls are "not thread safe": this runs first in `main`,
    // before any other thread exists.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "registry-server",
    version,
    about = "The public key registry for calibrated EV charging meters"
)]
struct Cli {
    /// TOML configuration file (settings below override it)
    #[arg(long, value_name = "FILE", env = "REGISTRY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Subcommand>,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Serve the registry (the default).
    Serve,
    /// Drop the projections and derive them again from the log (the server must be stopped).
    Rebuild,
    /// Ask the running server's gRPC health service, as a container health check does: exit
    /// status 0 when it is SERVING, 1 otherwise. It connects to the configured listen address
    /// (an unspecified address means this machine).
    Health {
        /// CA certificates (PEM) to check the server's certificate with, when it serves TLS
        #[arg(long, value_name = "PATH")]
        ca_cert: Option<PathBuf>,
        /// The name in the server's certificate, when it serves TLS
        #[arg(long, default_value = "localhost")]
        tls_name: String,
    },
    /// Make a new data directory from an audit archive (`registry audit export`), checking every
    /// entry on the way: the recovery from a damaged or lost data directory (deploy/README.md,
    /// "Backup and restore"). The new directory is `--data-dir`.
    Restore {
        /// The archive directory
        #[arg(long, value_name = "DIR")]
        from_archive: PathBuf,
        /// The registry's private key (PKCS#8 PEM), kept apart from the archive
        #[arg(long, value_name = "FILE")]
        registry_key: PathBuf,
    },
    /// Make this (stopped) read replica the primary, when the primary is lost for good: gives
    /// it the registry's private key; start it without --follow afterwards (deploy/README.md,
    /// "Promoting a replica").
    Promote {
        /// The registry's private key (PKCS#8 PEM)
        #[arg(long, value_name = "FILE")]
        registry_key: PathBuf,
    },
    /// Report where the (stopped) registry's bytes go: the memory each structure takes as the
    /// server loads it, the live data by kind of record, and the files on disk.
    Usage {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Measure what this disk gives a bare sled loop (batch insert + flush + fsync): the ceiling
    /// for durable appends, like PostgreSQL's pg_test_fsync. Writes a scratch database in DIR.
    StorageCeiling {
        /// Directory to create the scratch database in (removed afterwards)
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Entries per group commit
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// sled keys written per entry (the first holds the entry)
        #[arg(long, default_value_t = 1)]
        keys_per_entry: usize,
        /// Bytes per entry
        #[arg(long, default_value_t = 600)]
        entry_bytes: usize,
        /// How long to run
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Log lines go to stdout, as a service's do, except for subcommands whose stdout is their
/// report (`usage`), which keep it for that.
fn init_tracing(config: &Config, to_stderr: bool) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log filter {:?}", config.log_level))?;
    let writer =
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || -> Box<dyn std::io::Write> {
            if to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) }
        });
    let ansi = !to_stderr && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C. The handlers are installed when this is called, not when it is
/// first polled: a signal that arrives between "listening" and the first poll must already stop
/// the server gracefully instead of killing it with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = wait(interrupt, "SIGINT") => tracing::info!("interrupted"),
            () = wait(terminate, "SIGTERM") => tracing::info!("terminated"),
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    let server = registry_server::registry::start_registry(&config, system_clock()).await?;
    let stop = server.stop_token();
    tokio::spawn(async move {
        signal.await;
        stop.cancel();
    });
    server.wait().await?;
    Ok(())
}

async fn health(config: &Config, ca_cert: Option<&Path>, tls_name: &str) -> anyhow::Result<()> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let endpoint = match (&config.tls_cert, ca_cert) {
        (None, _) => Endpoint::from_shared(format!("http://{addr}"))?,
        (Some(_), Some(ca)) => {
            let pem = std::fs::read(ca).with_context(|| format!("CA file {}", ca.display()))?;
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name(tls_name);
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?
        }
        (Some(_), None) => anyhow::bail!(
            "the server serves TLS: pass --ca-cert (and --tls-name) so that it can be checked"
        ),
    };
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot reach the server at {addr}"))?;
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(request)
        .await
        .context("the health check failed")?
        .into_inner()
        .status();
    anyhow::ensure!(status == ServingStatus::Serving, "the server is {status:?}");
    println!("SERVING");
    Ok(())
}

fn rebuild(config: &Config) -> anyhow::Result<()> {
    let store = registry_server::server::open_store(config)
        .context("opening the log (is the server still running?)")?;
    let started = std::time::Instant::now();
    let entries = registry_server::projection::rebuild(store.as_ref())?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        entries,
        seconds = secs,
        per_second = (entries as f64 / secs.max(1e-9)) as u64,
        "projections rebuilt"
    );
    Ok(())
}

fn usage(config: &Config, json: bool) -> anyhow::Result<()> {
    let usage = registry_server::usage::measure(config)
        .context("measuring the data directory (is the server still running?)")?;
    if json {
        println!("{}", serde_json::to_string(&usage)?);
    } else {
        print!("{}", registry_server::usage::render(&usage));
    }
    Ok(())
}

fn restore(
    config: &Config,
    archive: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let r = registry_server::restore::restore(archive, config, key)?;
    println!(
        "restored {} entries of {} into {} (root {}, {:.1} s); start the registry on it",
        r.size,
        r.origin,
        config.data_dir.display(),
        hex::encode(r.root),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn promote(config: &Config, key: &std::path::Path) -> anyhow::Result<()> {
    let p = registry_server::replica::promote(config, key)?;
    println!(
        "promoted {}: it holds {} entries (root {}); start registry-server on it without \
         --follow, then point the other replicas at it",
        config.data_dir.display(),
        p.size,
        hex::encode(p.root)
    );
    Ok(())
}

fn storage_ceiling(
    dir: &std::path::Path,
    batch: usize,
    keys_per_entry: usize,
    entry_bytes: usize,
    seconds: f64,
    json: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let scratch = tempfile::Builder::new()
        .prefix("storage-ceiling")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch directory in {}", dir.display()))?;
    let c = registry_server::store::ceiling::bare_sled(
        scratch.path(),
        batch,
        keys_per_entry.max(1),
        entry_bytes,
        std::time::Duration::from_secs_f64(seconds.max(0.01)),
    )?;
    if json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        println!(
            "bare sled: {:.0} durable entries/s ({:.0} commits/s of {} entries, {} keys per entry, \
             {} bytes)",
            c.entries_per_sec, c.commits_per_sec, c.batch, c.keys_per_entry, c.entry_bytes
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("registry-server: {e}");
            return ExitCode::from(2);
        }
    };
    let report_on_stdout = matches!(cli.command, Some(Subcommand::Usage { .. }));
    if let Err(e) = init_tracing(&config, report_on_stdout) {
        eprintln!("registry-server: {e:#}");
        return ExitCode::from(2);
    }
    log_panics();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("registry-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Subcommand::Serve) {
        Subcommand::Serve => runtime.block_on(serve(config)),
        Subcommand::Rebuild => rebuild(&config),
        Subcommand::Health { ca_cert, tls_name } => {
            runtime.block_on(health(&config, ca_cert.as_deref(), &tls_name))
        }
        Subcommand::Restore { from_archive, registry_key } => {
            restore(&config, &from_archive, &registry_key)
        }
        Subcommand::Promote { registry_key } => promote(&config, &registry_key),
        Subcommand::Usage { json } => usage(&config, json),
        Subcommand::StorageCeiling { dir, batch, keys_per_entry, entry_bytes, seconds, json } => {
            storage_ceiling(&dir, batch, keys_per_entry, entry_bytes, seconds, json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = describe(&e);
            tracing::error!(error = %message, "registry-server failed");
            eprintln!("registry-server: {message}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error with its causes, each said once: our errors already quote their source's text,
/// so a cause whose text the message holds is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

/// The exit status the README documents ("Exit status") for an error.
fn exit_code(e: &anyhow::Error) -> u8 {
    use registry_server::server::ServerError;
    use registry_server::store::StoreError;
    if let Some(e) = e.downcast_ref::<ServerError>() {
        return e.exit_code();
    }
    match e.downcast_ref::<StoreError>() {
        Some(StoreError::Corrupt(_)) => 3,
        Some(_) => 4,
        None => 1,
    }
}

/// Panics end up in the log as one error line, not a backtrace on stderr (set RUST_BACKTRACE to
/// get one). Damage found in the store is reported as an error before it can panic (see
/// `store::sled`); a panic that still happens is a bug, and says where.
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if registry_server::store::sled::panic_is_contained() {
            tracing::debug!(panic = %info, "sled panicked on damaged data; reported as an error");
            return;
        }
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(%thread, panic = %info, "internal error (a bug; please report it)");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If a new mimalloc renumbered its options, `keep_freed_memory` would quietly do nothing.
    #[test]
    fn the_option_kept_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reading an option; nothing in this test binary sets one.
            let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(
                value, MI_PURGE_DELAY_DEFAULT,
                "option {MI_OPTION_PURGE_DELAY} is not purge_delay"
            );
        }
    }
}
