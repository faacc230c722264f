//! Arguments and helpers several subcommands share: who signs, which key, as known when, and
//! whether to check the answer's evidence instead of trusting it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use registry_client::verify::Verifier;
use registry_client::{AsOf, RegistryClient, keyfile};
use registry_core::time::{self, Time};
use serde_json::{Value, json};

use crate::output::Usage;

#[derive(Debug, Args)]
pub struct SignerArg {
    /// Private key (PKCS#8 PEM) that signs the command
    #[arg(long, value_name = "KEY.pem")]
    pub signer: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeyArg {
    /// Fingerprint of the meter key (64 hex digits)
    #[arg(long = "key-fingerprint", value_name = "FP")]
    pub fingerprint: String,
}

#[derive(Debug, Args)]
pub struct AsOfArgs {
    /// Answer as known when the log had this many entries
    #[arg(long, conflicts_with = "as_of_time")]
    as_of_size: Option<u64>,
    /// Answer as known at this recorded time (RFC 3339)
    #[arg(long)]
    as_of_time: Option<String>,
}

impl AsOfArgs {
    /// The basis the arguments name.
    pub fn as_of(&self) -> anyhow::Result<AsOf> {
        Ok(match (self.as_of_size, &self.as_of_time) {
            (Some(n), _) => AsOf::Size(n),
            (None, Some(t)) => AsOf::RecordedAt(parse_time(t)?),
            (None, None) => AsOf::Head,
        })
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
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
    /// The verifier that checks answers, when `--verify` asks for one.
    pub async fn verifier(
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

/// What a verified answer proves, for people.
pub fn verified_line(e: &registry_core::proof::Evidence) -> String {
    format!(
        "verified: follows from entries proven in the registry's signed checkpoint of size {} (consistent with the last checkpoint seen)",
        e.size()
    )
}

/// What a verified answer proves, for programs.
pub fn verified_json(e: &registry_core::proof::Evidence) -> Value {
    json!({"checkpoint_size": e.size(), "root_hash": hex::encode(e.checkpoint.root)})
}

/// An RFC 3339 time, or `now`.
pub fn parse_time(s: &str) -> anyhow::Result<Time> {
    if s == "now" {
        return Ok(chrono::Utc::now());
    }
    time::parse(s).map_err(|_| {
        Usage(format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-21T10:00:00Z)")).into()
    })
}

/// An optional time argument.
pub fn opt_time(s: &Option<String>) -> anyhow::Result<Option<Time>> {
    s.as_deref().map(parse_time).transpose()
}

/// The signing key a `--signer` file holds.
pub fn signer(s: &SignerArg) -> anyhow::Result<registry_core::keys::P256KeyPair> {
    Ok(keyfile::load_signer(&s.signer)?)
}
