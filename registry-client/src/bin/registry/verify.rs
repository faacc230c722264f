//! `registry verify`: offline checks that need only the registry's public key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use registry_client::receipt_file;
use registry_core::time;
use serde_json::json;

use crate::output::Report;

#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// Check a confirmation receipt and say what it proves
    Receipt {
        /// The receipt file
        file: PathBuf,
        /// The registry's public key (PEM)
        #[arg(long, value_name = "PUB.pem")]
        registry_key: PathBuf,
    },
}

/// Runs an offline check.
pub fn run(command: &VerifyCommand) -> anyhow::Result<Report> {
    match command {
        VerifyCommand::Receipt { file, registry_key } => receipt(file, registry_key),
    }
}

/// Checks a receipt and says what it proves.
fn receipt(file: &Path, registry_key: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let pem = std::fs::read_to_string(registry_key)
        .with_context(|| format!("reading {}", registry_key.display()))?;
    let key = registry_core::keys::p256_spki_der_from_pem(&pem)?;
    let proven = match receipt_file::from_json(&text)
        .map_err(|e| e.to_string())
        .and_then(|r| r.verify(&key).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("the receipt does not verify: {e}");
            return Ok(Report::no(reason, json!({"valid": false, "reason": e})));
        }
    };
    let r = &proven.registration;
    let evse_ids: Vec<String> = r.evse_ids.iter().map(|e| e.to_string()).collect();
    let json = json!({
        "valid": true,
        "fingerprint": r.fingerprint,
        "curve": r.curve.name(),
        "operator_id": r.operator_id.to_string(),
        "evse_ids": evse_ids,
        "meter_serial": r.meter_serial,
        "gateway_serial": r.gateway_serial,
        "effective_at": time::format(&r.effective_at),
        "registration_position": proven.registration_position,
        "confirmation_position": proven.confirmation_position,
        "published_in_tree_size": proven.published_in_tree_size,
        "checkpoint": {
            "origin": proven.checkpoint.origin,
            "tree_size": proven.checkpoint.size,
            "root_hash": hex::encode(proven.checkpoint.root),
        },
    });
    let text = [
        format!(
            "receipt verified with the registry key {}",
            registry_core::keys::fingerprint_hex(&key)
        ),
        format!("  key          {} ({})", r.fingerprint, r.curve),
        format!("  operator     {}", r.operator_id),
        format!("  EVSE IDs     {}", evse_ids.join(", ")),
        format!("  effective    {}", time::format(&r.effective_at)),
        format!(
            "  registered   entry {}, published in tree size {}",
            proven.registration_position, proven.published_in_tree_size
        ),
        format!("  confirmed    entry {}", proven.confirmation_position),
        format!(
            "  checkpoint   {} size {} root {}",
            proven.checkpoint.origin,
            proven.checkpoint.size,
            hex::encode(proven.checkpoint.root)
        ),
    ];
    Ok(Report::new(text.join("\n"), json))
}
