//! Receipts as files: JSON with the entries and proofs in base64, so an operator can keep the
//! receipt with the commissioning documents and anyone can check it offline later.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use registry_core::proof::ProvenEntry;
use registry_core::receipt::Receipt;
use serde::{Deserialize, Serialize};

/// Marks the file format.
pub const FORMAT: &str = "keyregistry.v1 receipt";

#[derive(Serialize, Deserialize)]
struct EntryJson {
    position: u64,
    entry: String,
    inclusion_proof: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct ReceiptJson {
    format: String,
    checkpoint: String,
    registration: EntryJson,
    confirmation: EntryJson,
}

fn entry_json(e: &ProvenEntry) -> EntryJson {
    EntryJson {
        position: e.position,
        entry: B64.encode(&e.entry),
        inclusion_proof: e.proof.iter().map(|h| B64.encode(h)).collect(),
    }
}

fn entry_from(e: &EntryJson) -> Result<ProvenEntry, String> {
    let entry = B64.decode(&e.entry).map_err(|_| "an entry is not base64".to_string())?;
    let proof = e
        .inclusion_proof
        .iter()
        .map(|h| B64.decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()))
        .collect::<Option<Vec<_>>>()
        .ok_or("a proof hash is not base64 of 32 bytes")?;
    Ok(ProvenEntry { position: e.position, entry, proof })
}

/// The receipt as a JSON document.
pub fn to_json(receipt: &Receipt) -> String {
    let doc = ReceiptJson {
        format: FORMAT.into(),
        checkpoint: receipt.checkpoint.clone(),
        registration: entry_json(&receipt.registration),
        confirmation: entry_json(&receipt.confirmation),
    };
    serde_json::to_string_pretty(&doc).expect("receipts serialize")
}

/// Reads a receipt document.
pub fn from_json(text: &str) -> Result<Receipt, String> {
    let doc: ReceiptJson =
        serde_json::from_str(text).map_err(|e| format!("not a receipt file: {e}"))?;
    if doc.format != FORMAT {
        return Err(format!("not a receipt file (format {:?})", doc.format));
    }
    Ok(Receipt {
        registration: entry_from(&doc.registration)?,
        confirmation: entry_from(&doc.confirmation)?,
        checkpoint: doc.checkpoint,
    })
}
