//! `registry`: the command-line tool for operators (CPOs), MSPs, administrators and auditors.
//!
//! One module per user: [`admin`], [`cpo`], [`msp`], [`audit`], [`verify`] (offline) and
//! [`bench`]. Each handler returns an [`output::Report`] that holds both its text and its JSON
//! form; `main` prints it once and turns its answer into the exit status ([`output::Exit`]).
//! Every subcommand takes `--server URL` (default `http://127.0.0.1:50051`, or
//! `REGISTRY_SERVER`). Times are RFC 3339.

mod admin;
mod args;
mod audit;
mod bench;
mod cpo;
mod msp;
mod output;
mod submit;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use registry_client::{RegistryClient, TlsOptions, keyfile};
use serde_json::json;

use crate::admin::AdminCommand;
use crate::audit::AuditCommand;
use crate::bench::BenchArgs;
use crate::cpo::{CpoCommand, CpoRequest};
use crate::msp::MspCommand;
use crate::output::{EXIT_HELP, Exit, Printer, Report};
use crate::verify::VerifyCommand;

/// mimalloc instead of glibc's malloc: `registry bench` builds and parses thousands of small
/// messages per second and shares the machine with the server it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "registry", version, about = "Client for the meter key registry", after_help = EXIT_HELP)]
struct Cli {
    /// Registry server URL
    #[arg(long, global = true, env = "REGISTRY_SERVER", default_value = registry_client::DEFAULT_SERVER)]
    server: String,
    /// CA certificates (PEM) an https:// server's certificate must chain to [default: the
    /// system's roots]
    #[arg(long, global = true, env = "REGISTRY_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for registries that require mTLS for commands
    #[arg(
        long,
        global = true,
        env = "REGISTRY_CLIENT_CERT",
        value_name = "PATH",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(
        long,
        global = true,
        env = "REGISTRY_CLIENT_KEY",
        value_name = "PATH",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Machine-readable output: one JSON object per line
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a P-256 key pair for signing commands (PKCS#8 PEM, mode 0600; public key next to it)
    Keygen {
        /// Where to write the private key
        #[arg(long)]
        out: PathBuf,
    },
    /// Registry administrator commands
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Charge point operator commands
    #[command(subcommand)]
    Cpo(CpoCommand),
    /// Mobility service provider lookups
    #[command(subcommand)]
    Msp(MspCommand),
    /// Audit reads: checkpoints and entries
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Offline checks that need only the registry's public key
    #[command(subcommand)]
    Verify(VerifyCommand),
    /// Load generator: run a workload against a running registry and report throughput and
    /// latency percentiles (like pgbench); prepares its own test fleet
    Bench(BenchArgs),
}

impl Cli {
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: self.ca_cert.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

/// Runs a subcommand; what it found comes back as a report.
async fn run(cli: Cli, printer: Printer) -> anyhow::Result<Report> {
    // Offline first: these need no server.
    match &cli.command {
        Command::Keygen { out } => return keygen(out),
        Command::Verify(v) => return verify::run(v),
        Command::Audit(AuditCommand::Verify { dir, registry_key, since_checkpoint }) => {
            return audit::verify_archive(dir, registry_key, since_checkpoint.as_deref());
        }
        Command::Bench(args) => {
            return bench::run(&cli.server, &cli.tls(), printer.json, args).await;
        }
        _ => {}
    }
    // A tile server needs no gRPC connection either.
    if let Command::Audit(a) = &cli.command
        && a.tiles().is_some()
    {
        let ca_cert = cli.ca_cert.clone();
        if let Command::Audit(a) = cli.command {
            return audit::run_tiles(ca_cert.as_deref(), printer, a).await;
        }
    }
    let client =
        RegistryClient::connect_with(&cli.server, &cli.tls()).await.map_err(|e| match e {
            // A URL or TLS options that cannot work are bad usage, not a registry that did not answer.
            registry_client::ClientError::Input(why) => anyhow::Error::new(output::Usage(why)),
            other => other.into(),
        })?;
    match cli.command {
        Command::Admin(a) => submit::submit(&client, a.submission()?).await,
        Command::Cpo(c) => match c.request()? {
            CpoRequest::Submit(s) => submit::submit(&client, *s).await,
            CpoRequest::Receipt { fingerprint, out } => {
                submit::fetch_receipt(&client, &fingerprint, &out).await
            }
        },
        Command::Msp(m) => msp::run(&client, &cli.server, m).await,
        Command::Audit(a) => audit::run(&client, printer, a).await,
        Command::Keygen { .. } | Command::Verify(_) | Command::Bench(_) => {
            unreachable!("answered offline above")
        }
    }
}

/// A new command-signing key pair, written to files.
fn keygen(out: &std::path::Path) -> anyhow::Result<Report> {
    let key = keyfile::generate(out)?;
    let public = keyfile::public_path(out);
    Ok(Report::new(
        format!(
            "{}key ID {}\nprivate key: {} (keep it secret), public key: {}",
            key.public_key_pem(),
            key.fingerprint_hex(),
            out.display(),
            public.display()
        ),
        json!({
            "private_key_file": out.display().to_string(),
            "public_key_file": public.display().to_string(),
            "key_id": key.fingerprint_hex(),
            "public_key_pem": key.public_key_pem(),
        }),
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            return printer.failure(&anyhow::anyhow!("cannot start the async runtime: {e}")).into();
        }
    };
    let exit: Exit = match runtime.block_on(run(cli, printer)) {
        Ok(report) => printer.report(report),
        Err(e) => printer.failure(&e),
    };
    exit.into()
}
