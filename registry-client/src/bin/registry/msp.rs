//! `registry msp`: what a mobility service provider asks — was a key valid at a moment, a key's
//! record, an identifier's history, and whether signed meter values may be billed — trusting the
//! server or (`--verify`) checking its evidence on this machine.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use registry_client::{KeyTarget, RegistryClient, render};
use registry_core::entry::Entry;
use registry_proto::pb;
use serde_json::json;

use crate::args::{AsOfArgs, KeyArg, VerifyArgs, parse_time, verified_json, verified_line};
use crate::output::{Report, Usage};

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SelectorArgs {
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
    /// The key the arguments name.
    pub fn selector(&self) -> KeyTarget {
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
#[group(required = true, multiple = false)]
pub struct HistorySelector {
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
    /// The identifier the arguments name.
    pub fn identifier(&self) -> pb::Identifier {
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
pub enum MspCommand {
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

/// Answers an MSP question.
pub async fn run(
    client: &RegistryClient,
    server: &str,
    command: MspCommand,
) -> anyhow::Result<Report> {
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
            let json = json!({
                "validity": render::message(&v),
                "basis": render::message(&r.basis),
                "verified": evidence.as_ref().map(verified_json),
            });
            let mut text = render::validity_text(&v);
            if let Some(b) = &r.basis {
                write!(
                    text,
                    "\n  basis      log size {}, head {}",
                    b.log_size,
                    hex::encode(&b.head_hash)
                )?;
            }
            if let Some(e) = &evidence {
                write!(text, "\n{}", verified_line(e))?;
            }
            let verdict = render::verdict(v.verdict);
            Ok(Report::new(text, json).no_if(v.verdict != pb::Verdict::Valid as i32, || {
                format!("the verdict is {verdict}")
            }))
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
            let json = json!({
                "entries": render::message(&entries),
                "verified": evidence.as_ref().map(verified_json),
            });
            let mut lines = Vec::new();
            if decoded.is_empty() {
                lines.push("no entries".to_string());
            }
            for e in &decoded {
                lines.push(render::entry_text(e));
            }
            if let Some(e) = &evidence {
                lines.push(format!("{}; no entry is left out", verified_line(e)));
            }
            Ok(Report::new(lines.join("\n"), json))
        }
        MspCommand::VerifyOcmf { file, ocpi, as_of, verify } => {
            let inputs = meter_value_inputs(file.as_deref(), ocpi)?;
            let as_of = as_of.as_of()?;
            let (r, evidence) = match verify.verifier(client, server).await? {
                Some(mut v) => v.meter_values(client, &inputs, as_of).await?,
                None => (client.validate_meter_values(&inputs, as_of, false).await?, None),
            };
            let bad = r.results.iter().filter(|v| !(v.valid && v.billable)).count();
            let json = json!({
                "results": render::message(&r.results),
                "all_valid_and_billable": bad == 0,
                "basis": render::message(&r.basis),
                "verified": evidence.as_ref().map(verified_json),
            });
            let mut lines: Vec<String> = r.results.iter().map(render::meter_value_text).collect();
            if let Some(e) = &evidence {
                lines.push(format!(
                    "{}; the signatures were verified on this machine against the keys it proves",
                    verified_line(e)
                ));
            }
            Ok(Report::new(lines.join("\n"), json).no_if(bad > 0, || {
                format!("{bad} of {} records are not valid and billable", r.results.len())
            }))
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
            let json = json!({
                "key": render::message(&k),
                "basis": render::message(&r.basis),
                "verified": evidence.as_ref().map(verified_json),
            });
            // A key record has many fields; people read it as the indented JSON.
            let mut text = serde_json::to_string_pretty(&json)?;
            if let Some(e) = &evidence {
                write!(text, "\n{}", verified_line(e))?;
            }
            Ok(Report::new(text, json))
        }
    }
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
            .map_err(|e| Usage(format!("OCPI signed_data: {e}")).into());
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
        return Err(Usage("no OCMF records in the input".into()).into());
    }
    Ok(inputs)
}
