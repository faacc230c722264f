//! Signing and submitting what `admin` and `cpo` subcommands order, and saying what the registry
//! appended.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use registry_client::{Order, RegistryClient, receipt_file, render};
use registry_core::entry::Entry;
use registry_core::keys::P256KeyPair;
use registry_proto::pb;
use serde_json::json;

use crate::output::Report;

/// An order, the key that signs it, and where to save the receipt of a registration.
pub struct Submission {
    /// The subcommand's name, for the report.
    pub name: &'static str,
    /// The signing key.
    pub signer: P256KeyPair,
    /// What to do.
    pub order: Order,
    /// Where to save the confirmation receipt, if asked.
    pub receipt: Option<PathBuf>,
}

/// Signs and submits; the report shows the entry (and the confirmation) the registry appended.
pub async fn submit(client: &RegistryClient, s: Submission) -> anyhow::Result<Report> {
    let response = client.submit(&s.signer, &s.order).await?;
    let mut report = submitted(s.name, &response)?;
    if let Some(path) = s.receipt {
        let receipt = response.receipt.as_ref().context(
            "no receipt: the registration is not confirmed yet (manual confirmation policy); fetch it later with `registry cpo receipt`",
        )?;
        let receipt = registry_core::receipt::Receipt::try_from(receipt)?;
        write_receipt(&path, &receipt)?;
        write!(report.0, "\nreceipt written to {}", path.display())?;
        report.1["receipt_file"] = json!(path.display().to_string());
    }
    Ok(Report::new(report.0, report.1))
}

/// Fetches the receipt of a confirmed key into a file.
pub async fn fetch_receipt(
    client: &RegistryClient,
    fingerprint: &str,
    out: &Path,
) -> anyhow::Result<Report> {
    let receipt = client.receipt(fingerprint).await?;
    write_receipt(out, &receipt)?;
    Ok(Report::new(
        format!("receipt written to {}", out.display()),
        json!({"receipt_file": out.display().to_string()}),
    ))
}

fn write_receipt(path: &Path, receipt: &registry_core::receipt::Receipt) -> anyhow::Result<()> {
    std::fs::write(path, receipt_file::to_json(receipt))
        .with_context(|| format!("writing {}", path.display()))
}

/// The outcome of a command, as text and as JSON.
fn submitted(
    action: &str,
    r: &pb::SubmitCommandResponse,
) -> anyhow::Result<(String, serde_json::Value)> {
    let entry =
        Entry::decode(&r.entry).context("the server returned an entry that does not decode")?;
    let confirmation = (!r.confirmation_entry.is_empty())
        .then(|| Entry::decode(&r.confirmation_entry))
        .transpose()
        .context("the server returned a confirmation that does not decode")?;
    let json = json!({
        "command": action,
        "position": r.position,
        "duplicate": r.duplicate,
        "entry": render::entry_message(&r.entry),
        "confirmation_position": confirmation.as_ref().map(|_| r.confirmation_position),
        "confirmation": confirmation.as_ref().map(|_| render::entry_message(&r.confirmation_entry)),
    });
    let again = if r.duplicate { " (already in the log: this is the original result)" } else { "" };
    let mut text = format!("{action}: entry {}{again}", r.position);
    for e in &entry.body.events {
        write!(text, "\n  {}", render::event_line(e))?;
    }
    if let Some(c) = &confirmation {
        write!(text, "\nconfirmed by the registry in entry {}", c.header.position)?;
    }
    Ok((text, json))
}
