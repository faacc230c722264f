//! `registry cpo`: what a charge point operator signs over a key's life — registration,
//! deactivation, relocation, replacement, rotation, release and takeover — and its receipt.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use registry_client::{KeySubmission, Order, keyfile};
use registry_core::meter_key::Curve;
use registry_proto::pb;

use crate::args::{KeyArg, SignerArg, opt_time, signer};
use crate::output::Usage;
use crate::submit::Submission;

#[derive(Debug, Args)]
pub struct NewKeyArgs {
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
    /// The key as the client submits it.
    pub fn to_new_key(&self) -> anyhow::Result<KeySubmission> {
        Ok(KeySubmission {
            public_key: keyfile::public_key_arg(&self.public_key)?,
            curve: self
                .curve
                .as_deref()
                .map(|c| Curve::from_name(c).ok_or_else(|| Usage(format!("unknown curve {c:?}"))))
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

#[derive(Debug, Args)]
pub struct ReceiptArg {
    /// Save the confirmation receipt (registration + confirmation + signed checkpoint + proofs)
    #[arg(long, value_name = "FILE")]
    receipt: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeactivateReason {
    Decommissioned,
    Compromised,
    Other,
}

#[derive(Debug, Subcommand)]
pub enum CpoCommand {
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

/// What a `cpo` subcommand asks for: an order to sign, or the receipt of a confirmed key.
pub enum CpoRequest {
    /// Sign and submit.
    Submit(Box<Submission>),
    /// Fetch the receipt of this key into this file.
    Receipt {
        /// The key.
        fingerprint: String,
        /// Where to write it.
        out: PathBuf,
    },
}

impl CpoCommand {
    /// What the subcommand asks for.
    pub fn request(self) -> anyhow::Result<CpoRequest> {
        let mut receipt_path: Option<PathBuf> = None;
        let (name, signer, order) = match self {
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
                return Ok(CpoRequest::Receipt { fingerprint: key.fingerprint, out });
            }
        };
        Ok(CpoRequest::Submit(Box::new(Submission { name, signer, order, receipt: receipt_path })))
    }
}
