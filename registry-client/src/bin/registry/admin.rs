//! `registry admin`: what a registry administrator signs — administrator and operator keys,
//! confirmation or rejection of pending registrations, forced takeovers.

use clap::Subcommand;
use registry_client::{Order, keyfile};

use crate::args::{KeyArg, SignerArg, opt_time, signer};
use crate::submit::Submission;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
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

impl AdminCommand {
    /// The order to sign, with the key that signs it.
    pub fn submission(self) -> anyhow::Result<Submission> {
        let (name, signer, order) = match self {
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
        };
        Ok(Submission { name, signer, order, receipt: None })
    }
}
