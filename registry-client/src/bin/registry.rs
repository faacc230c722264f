//! `registry`: the command-line tool for operators (CPOs), MSPs, administrators and auditors.
//!
//! Human-readable output by default, `--json` for scripts; exit status 0 on success, 1 when the
//! server refuses or a check fails, 2 for bad usage. Every subcommand takes `--server URL`
//! (default `http://127.0.0.1:50051`, or `REGISTRY_SERVER`). Times are RFC 3339.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use registry_client::verify::Verifier;
use registry_client::{
    AsOf, ClientError, KeySubmission, KeyTarget, Order, RegistryClient, keyfile, receipt_file,
    render,
};
use registry_core::entry::Entry;
use registry_core::meter_key::Curve;
use registry_core::time::{self, Time};
use registry_proto::pb;
use serde_json::json;

/// mimalloc instead of glibc's malloc: `registry bench` builds and parses thousands of small
/// messages per second and shares the machine with the server it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "registry", version, about = "Client for the meter key registry")]
struct Cli {
    /// Registry server URL
    #[arg(long, global = true, env = "REGISTRY_SERVER", default_value = registry_client::DEFAULT_SERVER)]
    server: String,
    /// Machine-readable JSON output
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

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// What to run: register, check, check-batch, verify-ocmf, mixed or empty against the server;
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
    Run(registry_client::bench::Workload),
    Prepare,
    Crypto,
}

fn bench_workload(s: &str) -> Result<BenchWorkload, String> {
    match s {
        "prepare" => Ok(BenchWorkload::Prepare),
        "crypto" => Ok(BenchWorkload::Crypto),
        _ => <registry_client::bench::Workload as clap::ValueEnum>::from_str(s, true)
            .map(BenchWorkload::Run)
            .map_err(|_| {
                "one of register, check, check-batch, verify-ocmf, mixed, empty, prepare, crypto"
                    .to_string()
            }),
    }
}

#[derive(Debug, Subcommand)]
enum VerifyCommand {
    /// Check a confirmation receipt and say what it proves
    Receipt {
        /// The receipt file
        file: PathBuf,
        /// The registry's public key (PEM)
        #[arg(long, value_name = "PUB.pem")]
        registry_key: PathBuf,
    },
}

#[derive(Debug, Args)]
struct SignerArg {
    /// Private key (PKCS#8 PEM) that signs the command
    #[arg(long, value_name = "KEY.pem")]
    signer: PathBuf,
}

#[derive(Debug, Args)]
struct KeyArg {
    /// Fingerprint of the meter key (64 hex digits)
    #[arg(long = "key-fingerprint", value_name = "FP")]
    fingerprint: String,
}

#[derive(Debug, Args)]
struct NewKeyArgs {
    /// The meter's public key in any accepted encoding, inline or @FILE
    #[arg(long = "public-key", value_name = "KEY")]
    public_key: String,
    /// The key's curve when the encoding does not say (e.g. secp256r1)
    #[arg(long)]
    curve: Option<String>,
    /// Meter serial number
    #[arg(long)]
    meter_serial: Option<String>,
    /// Gateway / signing module serial number
    #[arg(long)]
    gateway_serial: Option<String>,
    /// Manufacturer of the signing unit
    #[arg(long)]
    manufacturer: Option<String>,
    /// Model of the signing unit
    #[arg(long)]
    model: Option<String>,
    /// A signed meter value (OCMF) from the unit, proving possession of the key: inline or @FILE
    #[arg(long = "sample-ocmf", value_name = "OCMF")]
    sample_ocmf: Option<String>,
}

impl NewKeyArgs {
    fn to_new_key(&self) -> anyhow::Result<KeySubmission> {
        Ok(KeySubmission {
            public_key: keyfile::public_key_arg(&self.public_key)?,
            curve: self
                .curve
                .as_deref()
                .map(|c| Curve::from_name(c).with_context(|| format!("unknown curve {c:?}")))
                .transpose()?,
            meter_serial: self.meter_serial.clone(),
            gateway_serial: self.gateway_serial.clone(),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            sample_signed_meter_value: self
                .sample_ocmf
                .as_deref()
                .map(keyfile::public_key_arg)
                .transpose()?,
        })
    }
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Add an operator with one or more command-signing keys
    AddOperator {
        #[command(flatten)]
        signer: SignerArg,
        /// Operator ID, e.g. DE*ABC
        #[arg(long)]
        operator: String,
        /// Display name
        #[arg(long)]
        name: String,
        /// The operator's public key (PEM file or inline), repeatable
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
    /// Add a command-signing key to an operator
    AddOperatorKey {
        #[command(flatten)]
        signer: SignerArg,
        #[arg(long)]
        operator: String,
        /// The new public key (PEM file or inline)
        #[arg(long)]
        key: String,
    },
    /// Revoke an operator's command-signing key
    RevokeOperatorKey {
        #[command(flatten)]
        signer: SignerArg,
        #[arg(long)]
        operator: String,
        /// Fingerprint of the key to revoke
        #[arg(long = "key-id")]
        key_id: String,
    },
    /// Add an administrator key
    AddAdmin {
        #[command(flatten)]
        signer: SignerArg,
        /// The new administrator's public key (PEM file or inline)
        #[arg(long)]
        key: String,
        /// Who holds it
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke an administrator key
    RevokeAdmin {
        #[command(flatten)]
        signer: SignerArg,
        /// Fingerprint of the key to revoke
        #[arg(long = "key-id")]
        key_id: String,
    },
    /// Confirm a pending registration (manual confirmation policy)
    Confirm {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Reject a pending registration
    Reject {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        /// Why
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Move a key to another operator without a release
    ForceTakeover {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        /// The new operator
        #[arg(long)]
        operator: String,
        /// The new EVSE IDs, repeatable
        #[arg(long = "evse", required = true)]
        evse: Vec<String>,
        /// When it happened (RFC 3339; default: now)
        #[arg(long)]
        effective_at: Option<String>,
    },
}

#[derive(Debug, Args)]
struct ReceiptArg {
    /// Save the confirmation receipt (registration + confirmation + signed checkpoint + proofs)
    #[arg(long, value_name = "FILE")]
    receipt: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DeactivateReason {
    Decommissioned,
    Compromised,
    Other,
}

#[derive(Debug, Subcommand)]
enum CpoCommand {
    /// Register the key of a newly commissioned signing unit
    Register {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        new_key: NewKeyArgs,
        /// EVSE ID the key serves, repeatable
        #[arg(long = "evse", required = true)]
        evse: Vec<String>,
        /// Commissioning time (RFC 3339; default: now)
        #[arg(long)]
        effective_at: Option<String>,
        #[command(flatten)]
        receipt: ReceiptArg,
    },
    /// End a key's validity
    Deactivate {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        #[arg(long, value_enum, default_value = "decommissioned")]
        reason: DeactivateReason,
        #[arg(long, default_value = "")]
        comment: String,
        /// When it happened (RFC 3339; default: now)
        #[arg(long)]
        effective_at: Option<String>,
    },
    /// Move a key to other EVSE IDs of the same operator
    Relocate {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        #[arg(long = "evse", required = true)]
        evse: Vec<String>,
        #[arg(long)]
        effective_at: Option<String>,
    },
    /// Replace the meter or signing module: the new key continues the binding
    Replace {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        new_key: NewKeyArgs,
        #[arg(long)]
        effective_at: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        receipt: ReceiptArg,
    },
    /// A firmware update regenerated the unit's key
    Rotate {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        new_key: NewKeyArgs,
        #[arg(long)]
        effective_at: Option<String>,
        #[command(flatten)]
        receipt: ReceiptArg,
    },
    /// Fetch the confirmation receipt of a confirmed key
    Receipt {
        #[command(flatten)]
        key: KeyArg,
        /// Where to write it
        #[arg(long)]
        out: PathBuf,
    },
    /// Allow another operator to take a key over
    Release {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        /// The operator that may take it over
        #[arg(long = "to-operator")]
        to_operator: String,
    },
    /// Take over a key released to you
    TakeOver {
        #[command(flatten)]
        signer: SignerArg,
        #[command(flatten)]
        key: KeyArg,
        #[arg(long = "evse", required = true)]
        evse: Vec<String>,
        #[arg(long)]
        effective_at: Option<String>,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct SelectorArgs {
    /// Key fingerprint
    #[arg(long = "key-fingerprint")]
    fingerprint: Option<String>,
    /// Meter serial
    #[arg(long)]
    meter_serial: Option<String>,
    /// Gateway serial
    #[arg(long)]
    gateway_serial: Option<String>,
    /// EVSE ID
    #[arg(long)]
    evse: Option<String>,
}

impl SelectorArgs {
    fn selector(&self) -> KeyTarget {
        match (&self.fingerprint, &self.meter_serial, &self.gateway_serial, &self.evse) {
            (Some(f), ..) => KeyTarget::Fingerprint(f.clone()),
            (_, Some(m), ..) => KeyTarget::MeterSerial(m.clone()),
            (_, _, Some(g), _) => KeyTarget::GatewaySerial(g.clone()),
            (_, _, _, Some(e)) => KeyTarget::Evse(e.clone()),
            _ => unreachable!("clap requires one selector"),
        }
    }
}

#[derive(Debug, Args)]
struct AsOfArgs {
    /// Answer as known when the log had this many entries
    #[arg(long, conflicts_with = "as_of_time")]
    as_of_size: Option<u64>,
    /// Answer as known at this recorded time (RFC 3339)
    #[arg(long)]
    as_of_time: Option<String>,
}

impl AsOfArgs {
    fn as_of(&self) -> anyhow::Result<AsOf> {
        Ok(match (self.as_of_size, &self.as_of_time) {
            (Some(n), _) => AsOf::Size(n),
            (None, Some(t)) => AsOf::RecordedAt(parse_time(t)?),
            (None, None) => AsOf::Head,
        })
    }
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Check the answer against the evidence the server attaches, instead of trusting it
    #[arg(long)]
    verify: bool,
    /// The registry's public key (PEM); default: the one remembered, else pinned on first use
    #[arg(long, value_name = "PUB.pem", requires = "verify")]
    registry_key: Option<PathBuf>,
    /// Where to remember the registry key and the last checkpoint seen
    #[arg(long, value_name = "FILE", requires = "verify")]
    state: Option<PathBuf>,
}

impl VerifyArgs {
    async fn verifier(
        &self,
        client: &RegistryClient,
        server: &str,
    ) -> anyhow::Result<Option<Verifier>> {
        if !self.verify {
            return Ok(None);
        }
        let key = self
            .registry_key
            .as_ref()
            .map(std::fs::read_to_string)
            .transpose()
            .context("reading --registry-key")?;
        let state = self
            .state
            .clone()
            .unwrap_or_else(|| registry_client::verify::default_state_path(server));
        let v = Verifier::new(client, key.as_deref(), &state).await?;
        if let Some(n) = &v.notice {
            eprintln!("registry: {n}");
        }
        Ok(Some(v))
    }
}

fn verified_line(e: &registry_core::proof::Evidence) -> String {
    format!(
        "verified: follows from entries proven in the registry's signed checkpoint of size {} (consistent with the last checkpoint seen)",
        e.size()
    )
}

#[derive(Debug, Subcommand)]
enum MspCommand {
    /// Was the key valid at a moment?
    Check {
        #[command(flatten)]
        selector: SelectorArgs,
        /// Only keys of this manufacturer (with a serial)
        #[arg(long)]
        manufacturer: Option<String>,
        /// The moment (RFC 3339)
        #[arg(long)]
        at: String,
        #[command(flatten)]
        as_of: AsOfArgs,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// Every entry about a key, meter, gateway, EVSE or operator, newest first
    History {
        #[command(flatten)]
        selector: HistorySelector,
        #[command(flatten)]
        as_of: AsOfArgs,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// A key's full record
    Key {
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        as_of: AsOfArgs,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// Validate signed meter values (OCMF) against the registry: exit status 0 only when every
    /// record is valid and billable
    VerifyOcmf {
        /// One OCMF record per line (blank lines and lines starting with # are skipped), or with
        /// --ocpi an OCPI signed_data object (or a CDR holding one); - or nothing reads stdin
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The input is OCPI 2.2.1 JSON
        #[arg(long)]
        ocpi: bool,
        #[command(flatten)]
        as_of: AsOfArgs,
        #[command(flatten)]
        verify: VerifyArgs,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct HistorySelector {
    #[arg(long = "key-fingerprint")]
    fingerprint: Option<String>,
    #[arg(long)]
    meter_serial: Option<String>,
    #[arg(long)]
    gateway_serial: Option<String>,
    #[arg(long)]
    evse: Option<String>,
    /// Operator ID
    #[arg(long)]
    operator: Option<String>,
}

impl HistorySelector {
    fn identifier(&self) -> pb::Identifier {
        let (kind, value) = match (
            &self.fingerprint,
            &self.meter_serial,
            &self.gateway_serial,
            &self.evse,
            &self.operator,
        ) {
            (Some(v), ..) => (pb::IdentifierKind::Key, v),
            (_, Some(v), ..) => (pb::IdentifierKind::MeterSerial, v),
            (_, _, Some(v), ..) => (pb::IdentifierKind::GatewaySerial, v),
            (_, _, _, Some(v), _) => (pb::IdentifierKind::Evse, v),
            (_, _, _, _, Some(v)) => (pb::IdentifierKind::Operator, v),
            _ => unreachable!("clap requires one selector"),
        };
        pb::Identifier { kind: kind as i32, value: value.clone() }
    }
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
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
    },
}

fn parse_time(s: &str) -> anyhow::Result<Time> {
    if s == "now" {
        return Ok(chrono::Utc::now());
    }
    time::parse(s)
        .map_err(|_| anyhow::anyhow!("{s:?} is not an RFC 3339 time (e.g. 2026-11-21T10:00:00Z)"))
}

fn opt_time(s: &Option<String>) -> anyhow::Result<Option<Time>> {
    s.as_deref().map(parse_time).transpose()
}

fn signer(s: &SignerArg) -> anyhow::Result<registry_core::keys::P256KeyPair> {
    Ok(keyfile::load_signer(&s.signer)?)
}

/// Prints the outcome of a command.
fn print_submitted(json: bool, action: &str, r: &pb::SubmitCommandResponse) -> anyhow::Result<()> {
    let entry =
        Entry::decode(&r.entry).context("the server returned an entry that does not decode")?;
    let confirmation = (!r.confirmation_entry.is_empty())
        .then(|| Entry::decode(&r.confirmation_entry))
        .transpose()
        .context("the server returned a confirmation that does not decode")?;
    if json {
        let out = json!({
            "command": action,
            "position": r.position,
            "duplicate": r.duplicate,
            "entry": render::entry(&entry),
            "confirmation_position": confirmation.as_ref().map(|_| r.confirmation_position),
            "confirmation": confirmation.as_ref().map(render::entry),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let again =
            if r.duplicate { " (already in the log: this is the original result)" } else { "" };
        println!("{action}: entry {}{again}", r.position);
        for e in &entry.body.events {
            println!("  {}", render::event_line(e));
        }
        if let Some(c) = &confirmation {
            println!("confirmed by the registry in entry {}", c.header.position);
        }
    }
    Ok(())
}

async fn bench(server: &str, json: bool, args: &BenchArgs) -> anyhow::Result<()> {
    use registry_client::bench::{self, Workload};
    let duration = std::time::Duration::from_secs_f64(args.duration.max(0.01));
    let workload = match args.workload {
        BenchWorkload::Crypto => {
            let c = bench::crypto_ceilings(duration);
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!(
                    "ECDSA P-256 verify, one core: ring {:.0}/s, p256 {:.0}/s; sign: p256 {:.0}/s, checkpoints (ring) {:.0}/s; SHA-256 {:.0} MB/s",
                    c.p256_verify_ring_per_sec,
                    c.p256_verify_rustcrypto_per_sec,
                    c.p256_sign_per_sec,
                    c.checkpoint_sign_per_sec,
                    c.sha256_bytes_per_sec / 1e6
                );
            }
            return Ok(());
        }
        BenchWorkload::Prepare => None,
        BenchWorkload::Run(w) => Some(w),
    };
    let client = RegistryClient::connect(server).await?;
    let admin = args.admin_key.as_deref().map(keyfile::load_signer).transpose()?;
    let keys = match workload {
        Some(Workload::Empty) => 0,
        _ => args.keys,
    };
    let started = std::time::Instant::now();
    let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
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
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "workload": "prepare", "keys": keys, "seconds": seconds,
                }))?
            );
        } else {
            println!("fleet of {keys} keys ready in {seconds:.1} s");
        }
        return Ok(());
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
    };
    let report = bench::run(server, &fleet, workload, &settings).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        render::bench_report(&report);
    }
    if report.calls == 0 {
        anyhow::bail!(
            "no call succeeded: {}",
            report.first_error.as_deref().unwrap_or("the run was too short")
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    if let Command::Keygen { out } = &cli.command {
        let key = keyfile::generate(out)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "private_key_file": out.display().to_string(),
                    "public_key_file": keyfile::public_path(out).display().to_string(),
                    "key_id": key.fingerprint_hex(),
                    "public_key_pem": key.public_key_pem(),
                }))?
            );
        } else {
            print!("{}", key.public_key_pem());
            println!("key ID {}", key.fingerprint_hex());
            println!(
                "private key: {} (keep it secret), public key: {}",
                out.display(),
                keyfile::public_path(out).display()
            );
        }
        return Ok(());
    }
    if let Command::Verify(VerifyCommand::Receipt { file, registry_key }) = &cli.command {
        return verify_receipt(json, file, registry_key);
    }
    if let Command::Audit(AuditCommand::Verify { dir, registry_key, since_checkpoint }) =
        &cli.command
    {
        return verify_archive(json, dir, registry_key, since_checkpoint.as_deref());
    }
    if let Command::Bench(args) = &cli.command {
        return bench(&cli.server, json, args).await;
    }
    let client = RegistryClient::connect(&cli.server).await?;
    let mut receipt_path: Option<PathBuf> = None;
    let (name, signer, action) = match cli.command {
        Command::Keygen { .. } => unreachable!("handled above"),
        Command::Admin(a) => match a {
            AdminCommand::AddOperator { signer: s, operator, name, keys } => (
                "add-operator",
                signer(&s)?,
                Order::AddOperator {
                    operator_id: operator,
                    name,
                    public_keys: keys
                        .iter()
                        .map(|k| keyfile::public_key_from_file_or_text(k))
                        .collect::<Result<_, _>>()?,
                },
            ),
            AdminCommand::AddOperatorKey { signer: s, operator, key } => (
                "add-operator-key",
                signer(&s)?,
                Order::AddOperatorKey {
                    operator_id: operator,
                    public_key: keyfile::public_key_from_file_or_text(&key)?,
                },
            ),
            AdminCommand::RevokeOperatorKey { signer: s, operator, key_id } => (
                "revoke-operator-key",
                signer(&s)?,
                Order::RevokeOperatorKey { operator_id: operator, key_id },
            ),
            AdminCommand::AddAdmin { signer: s, key, label } => (
                "add-admin",
                signer(&s)?,
                Order::AddAdminKey {
                    public_key: keyfile::public_key_from_file_or_text(&key)?,
                    label,
                },
            ),
            AdminCommand::RevokeAdmin { signer: s, key_id } => {
                ("revoke-admin", signer(&s)?, Order::RevokeAdminKey { key_id })
            }
            AdminCommand::Confirm { signer: s, key } => {
                ("confirm", signer(&s)?, Order::Confirm { fingerprint: key.fingerprint })
            }
            AdminCommand::Reject { signer: s, key, reason } => {
                ("reject", signer(&s)?, Order::Reject { fingerprint: key.fingerprint, reason })
            }
            AdminCommand::ForceTakeover { signer: s, key, operator, evse, effective_at } => (
                "force-takeover",
                signer(&s)?,
                Order::ForceTakeOver {
                    fingerprint: key.fingerprint,
                    operator_id: operator,
                    evse_ids: evse,
                    effective_at: opt_time(&effective_at)?,
                },
            ),
        },
        Command::Cpo(c) => match c {
            CpoCommand::Register { signer: s, new_key, evse, effective_at, receipt } => (
                {
                    receipt_path = receipt.receipt;
                    "register"
                },
                signer(&s)?,
                Order::Register {
                    key: new_key.to_new_key()?,
                    evse_ids: evse,
                    effective_at: opt_time(&effective_at)?,
                },
            ),
            CpoCommand::Deactivate { signer: s, key, reason, comment, effective_at } => (
                "deactivate",
                signer(&s)?,
                Order::Deactivate {
                    fingerprint: key.fingerprint,
                    reason: match reason {
                        DeactivateReason::Decommissioned => pb::EndReason::Decommissioned,
                        DeactivateReason::Compromised => pb::EndReason::Compromised,
                        DeactivateReason::Other => pb::EndReason::Other,
                    },
                    comment,
                    effective_at: opt_time(&effective_at)?,
                },
            ),
            CpoCommand::Relocate { signer: s, key, evse, effective_at } => (
                "relocate",
                signer(&s)?,
                Order::Relocate {
                    fingerprint: key.fingerprint,
                    evse_ids: evse,
                    effective_at: opt_time(&effective_at)?,
                },
            ),
            CpoCommand::Replace { signer: s, key, new_key, effective_at, comment, receipt } => (
                {
                    receipt_path = receipt.receipt;
                    "replace"
                },
                signer(&s)?,
                Order::Replace {
                    fingerprint: key.fingerprint,
                    new_key: new_key.to_new_key()?,
                    effective_at: opt_time(&effective_at)?,
                    comment,
                },
            ),
            CpoCommand::Rotate { signer: s, key, new_key, effective_at, receipt } => (
                {
                    receipt_path = receipt.receipt;
                    "rotate"
                },
                signer(&s)?,
                Order::Rotate {
                    fingerprint: key.fingerprint,
                    new_key: new_key.to_new_key()?,
                    effective_at: opt_time(&effective_at)?,
                },
            ),
            CpoCommand::Release { signer: s, key, to_operator } => (
                "release",
                signer(&s)?,
                Order::Release { fingerprint: key.fingerprint, to_operator_id: to_operator },
            ),
            CpoCommand::TakeOver { signer: s, key, evse, effective_at } => (
                "take-over",
                signer(&s)?,
                Order::TakeOver {
                    fingerprint: key.fingerprint,
                    evse_ids: evse,
                    effective_at: opt_time(&effective_at)?,
                },
            ),
            CpoCommand::Receipt { key, out } => {
                let receipt = client.receipt(&key.fingerprint).await?;
                std::fs::write(&out, receipt_file::to_json(&receipt))
                    .with_context(|| format!("writing {}", out.display()))?;
                if json {
                    println!("{}", json!({"receipt_file": out.display().to_string()}));
                } else {
                    println!("receipt written to {}", out.display());
                }
                return Ok(());
            }
        },
        Command::Msp(m) => return msp(&client, &cli.server, json, m).await,
        Command::Audit(a) => return audit(&client, json, a).await,
        Command::Verify(_) | Command::Bench(_) => unreachable!("handled above"),
    };
    let response = client.submit(&signer, &action).await?;
    print_submitted(json, name, &response)?;
    if let Some(path) = receipt_path {
        let receipt = response.receipt.as_ref().context(
            "no receipt: the registration is not confirmed yet (manual confirmation policy); fetch it later with `registry cpo receipt`",
        )?;
        let receipt = registry_core::receipt::Receipt::from_pb(receipt)?;
        std::fs::write(&path, receipt_file::to_json(&receipt))
            .with_context(|| format!("writing {}", path.display()))?;
        if !json {
            println!("receipt written to {}", path.display());
        }
    }
    Ok(())
}

/// An error whose JSON form is already on stdout.
#[derive(Debug)]
struct AlreadyReported(anyhow::Error);

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for AlreadyReported {}

/// Verifies an archive offline.
fn verify_archive(
    json: bool,
    dir: &std::path::Path,
    registry_key: &std::path::Path,
    since: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(registry_key)
        .with_context(|| format!("reading {}", registry_key.display()))?;
    let key = registry_core::keys::p256_spki_der_from_pem(&pem)?;
    let since =
        since.map(std::fs::read_to_string).transpose().context("reading --since-checkpoint")?;
    let archive = registry_client::archive::Archive::new(dir);
    let bar = registry_client::audit::progress(0, "verifying");
    match registry_client::audit::verify(&archive, &key, since.as_deref(), &bar) {
        Ok(v) => {
            for w in &v.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                let out = json!({
                    "valid": true,
                    "tree_size": v.checkpoint.size,
                    "root_hash": hex::encode(v.checkpoint.root),
                    "keys": v.keys,
                    "operators": v.operators,
                    "seconds": v.seconds,
                    "warnings": v.warnings,
                });
                println!("{out}");
            } else {
                println!(
                    "archive verified: {} entries, root {}, {} keys, {} operators ({:.2} s)",
                    v.checkpoint.size,
                    hex::encode(v.checkpoint.root),
                    v.keys,
                    v.operators,
                    v.seconds
                );
            }
            Ok(())
        }
        Err(f) => {
            if json {
                println!(
                    "{}",
                    json!({"valid": false, "first_bad_position": f.position, "reason": f.reason})
                );
            }
            Err(AlreadyReported(anyhow::anyhow!("the archive does not verify: {f}")).into())
        }
    }
}

/// Checks a receipt offline and says what it proves.
fn verify_receipt(
    json: bool,
    file: &std::path::Path,
    registry_key: &std::path::Path,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let receipt = receipt_file::from_json(&text).map_err(anyhow::Error::msg)?;
    let pem = std::fs::read_to_string(registry_key)
        .with_context(|| format!("reading {}", registry_key.display()))?;
    let key = registry_core::keys::p256_spki_der_from_pem(&pem)?;
    let proven =
        receipt.verify(&key).map_err(|e| anyhow::anyhow!("the receipt does not verify: {e}"))?;
    let r = &proven.registration;
    if json {
        let out = json!({
            "valid": true,
            "fingerprint": r.fingerprint,
            "curve": r.curve.name(),
            "operator_id": r.operator_id.to_string(),
            "evse_ids": r.evse_ids.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "meter_serial": r.meter_serial,
            "gateway_serial": r.gateway_serial,
            "effective_at": time::format(&r.effective_at),
            "registration_position": proven.registration_position,
            "confirmation_position": proven.confirmation_position,
            "published_in_tree_size": proven.published_in_tree_size,
            "checkpoint": {"origin": proven.checkpoint.origin, "tree_size": proven.checkpoint.size, "root_hash": hex::encode(proven.checkpoint.root)},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "receipt verified with the registry key {}",
            registry_core::keys::fingerprint_hex(&key)
        );
        println!("  key          {} ({})", r.fingerprint, r.curve);
        println!("  operator     {}", r.operator_id);
        println!(
            "  EVSE IDs     {}",
            r.evse_ids.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
        );
        println!("  effective    {}", time::format(&r.effective_at));
        println!(
            "  registered   entry {}, published in tree size {}",
            proven.registration_position, proven.published_in_tree_size
        );
        println!("  confirmed    entry {}", proven.confirmation_position);
        println!(
            "  checkpoint   {} size {} root {}",
            proven.checkpoint.origin,
            proven.checkpoint.size,
            hex::encode(proven.checkpoint.root)
        );
    }
    Ok(())
}

async fn msp(
    client: &RegistryClient,
    server: &str,
    json: bool,
    command: MspCommand,
) -> anyhow::Result<()> {
    match command {
        MspCommand::Check { selector, manufacturer, at, as_of, verify } => {
            let (key, at, as_of) = (selector.selector(), parse_time(&at)?, as_of.as_of()?);
            let (r, evidence) = match verify.verifier(client, server).await? {
                Some(mut v) => {
                    let (r, e) = v.check(client, &key, manufacturer.as_deref(), at, as_of).await?;
                    (r, Some(e))
                }
                None => (client.check(&key, manufacturer.as_deref(), at, as_of).await?, None),
            };
            let v = r.validity.context("the server sent no verdict")?;
            if json {
                let out = json!({
                    "validity": render::validity(&v),
                    "basis": render::basis(&r.basis),
                    "verified": evidence.as_ref().map(verified_json),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}", render::validity_text(&v));
                if let Some(b) = &r.basis {
                    println!(
                        "  basis      log size {}, head {}",
                        b.log_size,
                        hex::encode(&b.head_hash)
                    );
                }
                if let Some(e) = &evidence {
                    println!("{}", verified_line(e));
                }
            }
        }
        MspCommand::History { selector, as_of, verify } => {
            let as_of = as_of.as_of()?;
            let (entries, evidence) = match verify.verifier(client, server).await? {
                Some(mut v) => {
                    let (entries, e) = v.history(client, selector.identifier(), as_of).await?;
                    (entries, Some(e))
                }
                None => (client.history(selector.identifier(), as_of).await?, None),
            };
            let decoded = entries
                .iter()
                .map(|h| {
                    Entry::decode(&h.entry)
                        .with_context(|| format!("entry {} does not decode", h.position))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if json {
                let out = json!({
                    "entries": decoded.iter().map(render::entry).collect::<Vec<_>>(),
                    "verified": evidence.as_ref().map(verified_json),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                if decoded.is_empty() {
                    println!("no entries");
                }
                for e in decoded {
                    println!(
                        "entry {} at {}",
                        e.header.position,
                        time::format(&e.header.recorded_at)
                    );
                    for ev in &e.body.events {
                        println!("  {}", render::event_line(ev));
                    }
                }
                if let Some(e) = &evidence {
                    println!("{}; no entry is left out", verified_line(e));
                }
            }
        }
        MspCommand::VerifyOcmf { file, ocpi, as_of, verify } => {
            let inputs = meter_value_inputs(file.as_deref(), ocpi)?;
            let as_of = as_of.as_of()?;
            let (r, evidence) = match verify.verifier(client, server).await? {
                Some(mut v) => v.meter_values(client, &inputs, as_of).await?,
                None => (client.validate_meter_values(&inputs, as_of, false).await?, None),
            };
            let all_good = r.results.iter().all(|v| v.valid && v.billable);
            if json {
                let out = json!({
                    "results": r.results.iter().map(render::meter_value).collect::<Vec<_>>(),
                    "all_valid_and_billable": all_good,
                    "basis": render::basis(&r.basis),
                    "verified": evidence.as_ref().map(verified_json),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for v in &r.results {
                    println!("{}", render::meter_value_text(v));
                }
                if let Some(e) = &evidence {
                    println!(
                        "{}; the signatures were verified on this machine against the keys it proves",
                        verified_line(e)
                    );
                }
            }
            if !all_good {
                let bad = r.results.iter().filter(|v| !(v.valid && v.billable)).count();
                return Err(AlreadyReported(anyhow::anyhow!(
                    "{bad} of {} records are not valid and billable",
                    r.results.len()
                ))
                .into());
            }
        }
        MspCommand::Key { key, as_of, verify } => {
            let as_of = as_of.as_of()?;
            let (r, evidence) = match verify.verifier(client, server).await? {
                Some(mut v) => {
                    let (r, e) = v.key(client, &key.fingerprint, as_of).await?;
                    (r, Some(e))
                }
                None => (client.key(&key.fingerprint, as_of).await?, None),
            };
            let k = r.key.context("the server sent no key")?;
            let out = json!({
                "key": render::key_record(&k),
                "basis": render::basis(&r.basis),
                "verified": evidence.as_ref().map(verified_json),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            if !json && let Some(e) = &evidence {
                eprintln!("{}", verified_line(e));
            }
        }
    }
    Ok(())
}

/// The records to validate: lines of OCMF, or the signed values of OCPI `signed_data` (given
/// alone or inside a CDR).
fn meter_value_inputs(
    file: Option<&std::path::Path>,
    ocpi: bool,
) -> anyhow::Result<Vec<registry_core::ocpi::Input>> {
    use std::io::Read as _;
    let text = match file.filter(|f| f.as_os_str() != "-") {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
            s
        }
    };
    if ocpi {
        let value: serde_json::Value =
            serde_json::from_str(&text).context("the input is not JSON")?;
        let signed_data = value.get("signed_data").cloned().unwrap_or(value);
        return registry_core::ocpi::signed_data(&signed_data.to_string())
            .map_err(|e| anyhow::anyhow!("OCPI signed_data: {e}"));
    }
    let inputs: Vec<_> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| registry_core::ocpi::Input {
            record: l.trim().to_string(),
            claimed_key: None,
            label: format!("line {}", i + 1),
        })
        .collect();
    if inputs.is_empty() {
        bail!("no OCMF records in the input");
    }
    Ok(inputs)
}

fn verified_json(e: &registry_core::proof::Evidence) -> serde_json::Value {
    json!({"checkpoint_size": e.size(), "root_hash": hex::encode(e.checkpoint.root)})
}

async fn audit(client: &RegistryClient, json: bool, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Info => {
            let i = client.registry_info().await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "origin": i.origin, "key_id": i.key_id, "fingerprint": i.fingerprint, "public_key_pem": i.public_key_pem,
                    }))?
                );
            } else {
                println!(
                    "origin      {}\nkey ID      {}\nfingerprint {}\n{}",
                    i.origin,
                    i.key_id,
                    i.fingerprint,
                    i.public_key_pem.trim_end()
                );
            }
        }
        AuditCommand::Checkpoint => {
            let info = client.registry_info().await?;
            let c = client.checkpoint(0).await?;
            let verifier =
                registry_core::note::NoteVerifier::new(&info.origin, &info.public_key_der)?;
            let cp = registry_core::checkpoint::Checkpoint::open(&c.checkpoint, &verifier)
                .context("the checkpoint's signature does not verify with the registry's key")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "origin": cp.origin, "tree_size": cp.size, "root_hash": hex::encode(cp.root), "checkpoint": c.checkpoint,
                    }))?
                );
            } else {
                print!("{}", c.checkpoint);
            }
        }
        AuditCommand::Export { out, from } => {
            let archive = registry_client::archive::Archive::new(&out);
            let bar = registry_client::audit::progress(0, "exporting");
            let done = registry_client::audit::export(client, &archive, from, &bar).await?;
            if json {
                println!(
                    "{}",
                    json!({"archive": out.display().to_string(), "size": done.size, "fetched": done.fetched, "previous_size": done.previous_size})
                );
            } else {
                println!(
                    "archive {} holds {} entries ({} fetched, consistent with the {} archived before)",
                    out.display(),
                    done.size,
                    done.fetched,
                    done.previous_size
                );
            }
        }
        AuditCommand::Verify { .. } => unreachable!("verified offline before connecting"),
        AuditCommand::Follow { out, until_size } => {
            let archive = registry_client::archive::Archive::new(&out);
            let size = registry_client::audit::follow(client, &archive, until_size, |cp| {
                if json {
                    println!(
                        "{}",
                        json!({"checkpoint_size": cp.size, "root_hash": hex::encode(cp.root)})
                    );
                } else {
                    println!(
                        "checkpoint {} verified and consistent; archive holds {} entries",
                        hex::encode(cp.root),
                        cp.size
                    );
                }
            })
            .await?;
            if !json {
                println!("stopped at {size} entries");
            }
        }
        AuditCommand::Entries { from, to } => {
            if to.is_some_and(|t| t < from) {
                bail!("--to must not be below --from");
            }
            let entries = client.entries(from, to.unwrap_or(0)).await?;
            for e in entries {
                let decoded = Entry::decode(&e.entry)
                    .with_context(|| format!("entry {} does not decode", e.position))?;
                if json {
                    println!("{}", serde_json::to_string(&render::entry(&decoded))?);
                } else {
                    println!(
                        "entry {} at {}",
                        e.position,
                        time::format(&decoded.header.recorded_at)
                    );
                    for ev in &decoded.body.events {
                        println!("  {}", render::event_line(ev));
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("registry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let client = e.downcast_ref::<ClientError>();
            if json && e.downcast_ref::<AlreadyReported>().is_none() {
                let out = json!({
                    "error": format!("{e:#}"),
                    "code": client.and_then(ClientError::code).map(registry_client::code_name),
                    "violations": client.map(|c| c.violations().iter().map(|v| json!({"field": v.field, "description": v.description})).collect::<Vec<_>>()),
                });
                println!("{out}");
            }
            eprintln!("registry: {e:#}");
            if let Some(c) = client {
                for v in c.violations() {
                    eprintln!("  field {}: {}", v.field, v.description);
                }
            }
            ExitCode::FAILURE
        }
    }
}
