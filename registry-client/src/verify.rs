//! Verified reads: answers the client checks instead of trusting the server.
//!
//! A [`Verifier`] holds the registry's public key (given, remembered from an earlier run, or
//! pinned on first use) and the last checkpoint it accepted from that registry, in a small state
//! file. Every verified read asks for evidence, checks it with `registry_core::proof`,
//! re-derives the answer with the same rules the server runs and refuses any difference; and
//! before accepting a checkpoint it demands a consistency proof from the last one, so a server
//! that rewrote or forked its history is caught.

use std::path::{Path, PathBuf};

use registry_core::checkpoint::Checkpoint;
use registry_core::event::Identifier;
use registry_core::merkle;
use registry_core::note::NoteVerifier;
use registry_core::ocpi::Input;
use registry_core::proof::Evidence;
use registry_core::signed_values;
use registry_core::time::Time;
use registry_core::validity;
use registry_proto::pb;
use serde::{Deserialize, Serialize};

use crate::{AsOf, ClientError, KeyTarget, RegistryClient, Result};

fn refuse(what: impl std::fmt::Display) -> ClientError {
    ClientError::Verification(what.to_string())
}

/// What the client remembers about a registry between runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Remembered {
    /// The checkpoint origin.
    pub origin: String,
    /// The registry's public key (PEM).
    pub public_key_pem: String,
    /// The last checkpoint accepted (signed note text).
    pub checkpoint: Option<String>,
}

/// The default state file for a server URL: `$XDG_STATE_HOME/keyregistry/<host_port>.json`
/// (or `~/.local/state/...`).
pub fn default_state_path(server: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    let name: String = server
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    base.join("keyregistry").join(format!("{name}.json"))
}

/// Checks answers from one registry. See the module documentation.
pub struct Verifier {
    state_path: PathBuf,
    remembered: Remembered,
    note: NoteVerifier,
    public_key_der: Vec<u8>,
    last: Option<Checkpoint>,
    /// What happened to the trust anchor, for the user.
    pub notice: Option<String>,
}

impl Verifier {
    /// Sets up verification for `client`. `registry_key` (PEM) pins the key explicitly;
    /// otherwise the key remembered in the state file is used; otherwise the server's key is
    /// pinned on first use (and `notice` says so).
    pub async fn new(
        client: &RegistryClient,
        registry_key: Option<&str>,
        state_path: &Path,
    ) -> Result<Self> {
        let remembered: Option<Remembered> = match std::fs::read_to_string(state_path) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| {
                ClientError::Input(format!("state file {}: {e}", state_path.display()))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ClientError::Input(format!(
                    "state file {}: {e}",
                    state_path.display()
                )));
            }
        };
        let info = client.registry_info().await?;
        let pinned = match (registry_key, &remembered) {
            (Some(pem), _) => registry_core::keys::p256_spki_der_from_pem(pem)
                .map_err(|e| ClientError::Input(format!("registry key: {e}")))?,
            (None, Some(r)) => registry_core::keys::p256_spki_der_from_pem(&r.public_key_pem)
                .map_err(|e| {
                    ClientError::Input(format!("state file {}: {e}", state_path.display()))
                })?,
            (None, None) => info.public_key_der.clone(),
        };
        let notice = (registry_key.is_none() && remembered.is_none()).then(|| {
            format!(
                "pinned the registry key {} on first use (saved in {})",
                registry_core::keys::fingerprint_hex(&pinned),
                state_path.display()
            )
        });
        if let Some(r) = &remembered
            && registry_key.is_some()
            && registry_core::keys::p256_spki_der_from_pem(&r.public_key_pem).ok().as_deref()
                != Some(pinned.as_slice())
        {
            return Err(refuse(format!(
                "the state file {} remembers another registry key; remove it to start over",
                state_path.display()
            )));
        }
        let origin = remembered.as_ref().map(|r| r.origin.clone()).unwrap_or(info.origin);
        let note = NoteVerifier::new(&origin, &pinned)
            .map_err(|e| refuse(format!("registry key: {e}")))?;
        let last = match remembered.as_ref().and_then(|r| r.checkpoint.as_deref()) {
            Some(c) => Some(
                Checkpoint::open(c, &note)
                    .map_err(|e| refuse(format!("the remembered checkpoint: {e}")))?,
            ),
            None => None,
        };
        let remembered = Remembered {
            origin,
            public_key_pem: registry_core::keys::p256_spki_pem(&pinned)
                .map_err(|e| refuse(e.to_string()))?,
            checkpoint: remembered.and_then(|r| r.checkpoint),
        };
        Ok(Self {
            state_path: state_path.to_path_buf(),
            remembered,
            note,
            public_key_der: pinned,
            last,
            notice,
        })
    }

    /// The pinned registry key (DER SubjectPublicKeyInfo).
    pub fn registry_key(&self) -> &[u8] {
        &self.public_key_der
    }

    /// The last accepted checkpoint.
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.last.as_ref()
    }

    /// Accepts a verified checkpoint if it is consistent with the last one, and remembers the
    /// newer of the two.
    pub async fn accept(
        &mut self,
        client: &RegistryClient,
        note: &str,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        if let Some(last) = &self.last {
            let (old, new) =
                if last.size <= checkpoint.size { (last, checkpoint) } else { (checkpoint, last) };
            if old.size > 0 {
                let proof = client
                    .audit()
                    .get_consistency_proof(pb::GetConsistencyProofRequest {
                        from_size: old.size,
                        to_size: new.size,
                    })
                    .await
                    .map_err(ClientError::from)?
                    .into_inner();
                merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof.proof).map_err(|e| {
                    refuse(format!(
                        "the checkpoints of size {} and {} are not consistent ({e}): the registry's history was rewritten or forked",
                        old.size, new.size
                    ))
                })?;
            }
            if checkpoint.size <= last.size {
                return Ok(());
            }
        }
        self.last = Some(checkpoint.clone());
        self.remembered.checkpoint = Some(note.to_string());
        self.save()
    }

    fn save(&self) -> Result<()> {
        if let Some(dir) = self.state_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ClientError::Input(format!("{}: {e}", dir.display())))?;
        }
        let text = serde_json::to_string_pretty(&self.remembered).expect("state serializes");
        std::fs::write(&self.state_path, text)
            .map_err(|e| ClientError::Input(format!("{}: {e}", self.state_path.display())))
    }

    async fn open(
        &mut self,
        client: &RegistryClient,
        proof: Option<&pb::AnswerProof>,
    ) -> Result<Evidence> {
        let proof = proof.ok_or_else(|| refuse("the server sent no evidence"))?;
        let evidence = Evidence::open(proof, &self.note).map_err(refuse)?;
        self.accept(client, &proof.checkpoint, &evidence.checkpoint).await?;
        Ok(evidence)
    }

    /// A validity answer, verified. Returns the server's response and the evidence.
    pub async fn check(
        &mut self,
        client: &RegistryClient,
        key: &KeyTarget,
        manufacturer: Option<&str>,
        at: Time,
        as_of: AsOf,
    ) -> Result<(pb::CheckValidityResponse, Evidence)> {
        let response = client.check_proven(key, manufacturer, at, as_of).await?;
        let evidence = self.open(client, response.proof.as_ref()).await?;
        let selector = to_domain(key, manufacturer)?;
        let basis = response.basis.as_ref().ok_or_else(|| refuse("the answer has no basis"))?;
        self.check_basis(&evidence, basis)?;
        let derived = evidence.validity(&selector, at, basis.log_size).map_err(refuse)?;
        if Some(&pb::Validity::from(&derived)) != response.validity.as_ref() {
            return Err(refuse(format!(
                "the server's answer does not follow from its evidence: it says {}, the evidence says {}",
                crate::render::verdict(response.validity.as_ref().map_or(0, |v| v.verdict)),
                crate::render::verdict(pb::Validity::from(&derived).verdict)
            )));
        }
        Ok((response, evidence))
    }

    /// A key record, verified.
    pub async fn key(
        &mut self,
        client: &RegistryClient,
        fingerprint: &str,
        as_of: AsOf,
    ) -> Result<(pb::GetKeyResponse, Evidence)> {
        let response = client.key_proven(fingerprint, as_of).await?;
        let evidence = self.open(client, response.proof.as_ref()).await?;
        let basis = response.basis.as_ref().ok_or_else(|| refuse("the answer has no basis"))?;
        self.check_basis(&evidence, basis)?;
        let fp = registry_core::event::parse_fingerprint(fingerprint)
            .ok_or_else(|| ClientError::Input("bad fingerprint".into()))?;
        let derived = evidence.key_record(&fp, basis.log_size).map_err(refuse)?;
        let derived =
            derived.as_ref().and_then(|r| r.as_of(basis.log_size)).map(|k| pb::KeyRecord::from(&k));
        if derived != response.key {
            return Err(refuse("the server's key record does not follow from its evidence"));
        }
        Ok((response, evidence))
    }

    /// An identifier's whole history, verified (every entry, none left out).
    pub async fn history(
        &mut self,
        client: &RegistryClient,
        identifier: pb::Identifier,
        as_of: AsOf,
    ) -> Result<(Vec<pb::HistoryEntry>, Evidence)> {
        let id =
            Identifier::try_from(&identifier).map_err(|e| ClientError::Input(e.to_string()))?;
        let response = client.history_proven(identifier, as_of).await?;
        let evidence = self.open(client, response.proof.as_ref()).await?;
        let basis = response.basis.as_ref().ok_or_else(|| refuse("the answer has no basis"))?;
        self.check_basis(&evidence, basis)?;
        let derived = evidence.history(&id, basis.log_size).map_err(refuse)?;
        let claimed: Vec<u64> = response.entries.iter().map(|h| h.position).collect();
        // One page at most; a full page may be followed by more, anything shorter must be all.
        let complete =
            claimed.len() == derived.len() || claimed.len() == crate::HISTORY_PAGE as usize;
        if !complete || derived[..claimed.len().min(derived.len())] != claimed[..] {
            return Err(refuse(format!(
                "the server's history does not match its evidence: it lists {claimed:?}, the evidence proves {derived:?}"
            )));
        }
        for h in &response.entries {
            let proven = evidence
                .entry(h.position)
                .ok_or_else(|| refuse(format!("entry {} is not in the evidence", h.position)))?;
            if registry_core::entry::Entry::decode(&h.entry).ok().as_ref() != Some(proven) {
                return Err(refuse(format!("entry {} differs from the proven one", h.position)));
            }
        }
        Ok((response.entries, evidence))
    }

    /// Validates signed meter values with evidence, and re-does every validation here: the
    /// signature checks run on this machine, against the keys the evidence proves the registry
    /// had for each record's signing unit. Refuses an answer that differs from its own.
    pub async fn meter_values(
        &mut self,
        client: &RegistryClient,
        inputs: &[Input],
        as_of: AsOf,
    ) -> Result<(pb::ValidateSignedMeterValuesResponse, Option<Evidence>)> {
        let response = client.validate_meter_values(inputs, as_of, true).await?;
        let basis = response.basis.clone().ok_or_else(|| refuse("the answer has no basis"))?;
        if response.results.len() != inputs.len() {
            return Err(refuse(format!(
                "the server answered {} of {} records",
                response.results.len(),
                inputs.len()
            )));
        }
        // Which identifiers the records name, by this machine's own reading of them.
        let mut identifiers: Vec<registry_core::event::Identifier> = inputs
            .iter()
            .filter_map(|i| registry_core::ocmf::Record::parse(&i.record).ok())
            .flat_map(|r| {
                signed_values::unit_paths(&r).iter().map(|p| p.identifier()).collect::<Vec<_>>()
            })
            .collect();
        identifiers.sort();
        identifiers.dedup();
        let (state, evidence) = if identifiers.is_empty() {
            (registry_core::lifecycle::MemoryState::default(), None)
        } else {
            let evidence = self.open(client, response.proof.as_ref()).await?;
            self.check_basis(&evidence, &basis)?;
            let state = evidence.state_of(&identifiers, basis.log_size).map_err(refuse)?;
            (state, Some(evidence))
        };
        for (i, (input, claimed)) in inputs.iter().zip(&response.results).enumerate() {
            let own = match signed_values::validate(
                &input.record,
                input.claimed_key.as_deref(),
                &state,
                basis.log_size,
            ) {
                Ok(v) => v.to_pb(&input.label, &input.record, basis.log_size),
                Err(never) => match never {},
            };
            if &own != claimed {
                return Err(refuse(format!(
                    "record {} ({}): the server's validation does not follow from its evidence (it says {}, this machine finds {})",
                    i + 1,
                    input.label,
                    summary(claimed),
                    summary(&own)
                )));
            }
        }
        Ok((response, evidence))
    }

    fn check_basis(&self, evidence: &Evidence, basis: &pb::Basis) -> Result<()> {
        if basis.log_size > evidence.size() {
            return Err(refuse("the answer's basis is past the evidence's checkpoint"));
        }
        Ok(())
    }
}

fn summary(v: &pb::MeterValueValidation) -> String {
    format!(
        "{}, {}",
        if v.valid { "valid" } else { "invalid" },
        if v.billable { "billable" } else { "not billable" }
    )
}

fn to_domain(key: &KeyTarget, manufacturer: Option<&str>) -> Result<validity::Selector> {
    let manufacturer = manufacturer.map(|m| m.trim().to_string()).filter(|m| !m.is_empty());
    let bad = |e: String| ClientError::Input(e);
    Ok(match key {
        KeyTarget::Fingerprint(f) => validity::Selector::Fingerprint(
            registry_core::event::parse_fingerprint(f)
                .ok_or_else(|| bad(format!("{f:?} is not a fingerprint")))?,
        ),
        KeyTarget::MeterSerial(s) => validity::Selector::MeterSerial {
            serial: registry_core::ids::serial(s).map_err(|e| bad(e.0))?,
            manufacturer,
        },
        KeyTarget::GatewaySerial(s) => validity::Selector::GatewaySerial {
            serial: registry_core::ids::serial(s).map_err(|e| bad(e.0))?,
            manufacturer,
        },
        KeyTarget::Evse(e) => {
            validity::Selector::Evse(registry_core::ids::EvseId::parse(e).map_err(|e| bad(e.0))?)
        }
    })
}
