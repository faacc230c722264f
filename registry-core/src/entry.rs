//! The log entry format and the hash chain.
//!
//! An entry's bytes are a serialized `keyregistry.v1.LogEntry`. The writer assigns the header
//! fields (position, recorded time, previous hash) inside its commit and prepends them to a body
//! prepared earlier, so [`encode_entry`] is the one place that frames an entry. Everyone else
//! treats stored entries as opaque bytes plus the header they can decode; the hash of an entry is
//! always taken over the stored bytes ([`crate::merkle::leaf_hash`]), never a re-encoding.

use prost::Message;

use crate::command::SignedCommand;
use crate::error::FieldError;
use crate::event::{Event, Link};
use crate::merkle::{Hash, leaf_hash};
use crate::pb;
use crate::time::{self, Time};

/// The `prev_hash` of the entry at position 0.
pub const ZERO_HASH: Hash = [0u8; 32];

/// The fields the writer assigns when it appends an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Position in the log.
    pub position: u64,
    /// When the registry appended it.
    pub recorded_at: Time,
    /// Leaf hash of the previous entry ([`ZERO_HASH`] at position 0).
    pub prev_hash: Hash,
}

/// An entry's bytes are not a well-formed entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not a protobuf `LogEntry`.
    #[error("entry is not a valid LogEntry message: {0}")]
    Decode(String),
    /// The recorded time is missing or out of range.
    #[error("entry has no valid recorded time")]
    RecordedAt,
    /// The previous hash is not 32 bytes.
    #[error("entry's prev_hash is {0} bytes long, not 32")]
    PrevHashLength(usize),
    /// The request ID is not a UUID.
    #[error("entry's request_id is not a UUID")]
    RequestId,
    /// An event, link or the command envelope is malformed.
    #[error("entry field {0}")]
    Field(#[from] FieldError),
}

/// Everything after the header: what the writer's machine decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBody {
    /// The idempotency key.
    pub request_id: uuid::Uuid,
    /// The signed command, absent for registry entries.
    pub command: Option<SignedCommand>,
    /// The events.
    pub events: Vec<Event>,
    /// Back-links per identifier touched.
    pub links: Vec<Link>,
}

impl EntryBody {
    /// The serialized body fields, to be framed by [`encode_entry`].
    pub fn encode(&self) -> Vec<u8> {
        pb::LogEntry {
            request_id: self.request_id.to_string(),
            command: self.command.as_ref().map(pb::SignedCommand::from),
            events: self.events.iter().map(pb::Event::from).collect(),
            links: self.links.iter().map(pb::IdentifierLink::from).collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// A whole decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position, time, previous hash.
    pub header: EntryHeader,
    /// Content.
    pub body: EntryBody,
}

impl Entry {
    /// Decodes and validates stored entry bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let header = decode_header(bytes)?;
        let e = pb::LogEntry::decode(bytes).map_err(|e| EntryError::Decode(e.to_string()))?;
        let request_id = uuid::Uuid::parse_str(&e.request_id).map_err(|_| EntryError::RequestId)?;
        let command = e.command.as_ref().map(SignedCommand::try_from).transpose()?;
        let events = e.events.iter().map(Event::try_from).collect::<Result<_, _>>()?;
        let links = e.links.iter().map(Link::try_from).collect::<Result<_, _>>()?;
        Ok(Self { header, body: EntryBody { request_id, command, events, links } })
    }
}

/// Only the header fields of `LogEntry`; decoding skips the rest, so reading a header does not
/// pay for the events.
#[derive(Clone, PartialEq, Message)]
struct HeaderFields {
    #[prost(uint64, tag = "1")]
    position: u64,
    #[prost(message, optional, tag = "2")]
    recorded_at: Option<registry_proto::Timestamp>,
    #[prost(bytes = "vec", tag = "3")]
    prev_hash: Vec<u8>,
}

/// Frames an entry: the header fields followed by `body`, the already serialized remaining
/// fields of `LogEntry` (request ID, command, events, links). Protobuf fields may be
/// concatenated, so the result is a valid `LogEntry` and identical to encoding the whole message
/// at once.
pub fn encode_entry(header: &EntryHeader, body: &[u8]) -> Vec<u8> {
    let fields = HeaderFields {
        position: header.position,
        recorded_at: Some(time::to_timestamp(&header.recorded_at)),
        prev_hash: header.prev_hash.to_vec(),
    };
    let mut out = Vec::with_capacity(fields.encoded_len() + body.len());
    fields.encode(&mut out).expect("a Vec grows as needed");
    out.extend_from_slice(body);
    out
}

/// Reads the header of a stored entry.
pub fn decode_header(entry: &[u8]) -> Result<EntryHeader, EntryError> {
    let fields = HeaderFields::decode(entry).map_err(|e| EntryError::Decode(e.to_string()))?;
    let recorded_at = fields
        .recorded_at
        .as_ref()
        .ok_or(EntryError::RecordedAt)
        .and_then(|ts| time::from_timestamp(ts).map_err(|_| EntryError::RecordedAt))?;
    let prev_hash = fields
        .prev_hash
        .as_slice()
        .try_into()
        .map_err(|_| EntryError::PrevHashLength(fields.prev_hash.len()))?;
    Ok(EntryHeader { position: fields.position, recorded_at, prev_hash })
}

/// What is wrong at the first position where a sequence of entries stops being a valid chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The entry does not decode.
    #[error("entry at position {position} is malformed: {error}")]
    Malformed {
        /// Where.
        position: u64,
        /// Why.
        error: EntryError,
    },
    /// The entry names another position than the one it is stored at.
    #[error("entry at position {position} claims position {claimed}")]
    Position {
        /// Where it is stored.
        position: u64,
        /// What it says.
        claimed: u64,
    },
    /// The entry's `prev_hash` is not the hash of the entry before it.
    #[error("entry at position {position} does not link to the previous entry's hash")]
    Link {
        /// Where.
        position: u64,
    },
    /// The recorded time is not after the previous entry's.
    #[error(
        "entry at position {position} is recorded at {at}, not after the previous entry ({previous})"
    )]
    Time {
        /// Where.
        position: u64,
        /// Its recorded time.
        at: String,
        /// The previous entry's recorded time.
        previous: String,
    },
}

impl ChainError {
    /// The position of the first bad entry.
    pub fn position(&self) -> u64 {
        match self {
            ChainError::Malformed { position, .. }
            | ChainError::Position { position, .. }
            | ChainError::Link { position }
            | ChainError::Time { position, .. } => *position,
        }
    }
}

/// Checks entries one at a time against the chain rules: each entry sits at the position it
/// names, links to the previous entry's hash, and is recorded strictly after it.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_position: u64,
    prev_hash: Hash,
    prev_time: Option<Time>,
}

impl ChainVerifier {
    /// Starts at position 0.
    pub fn new() -> Self {
        Self { next_position: 0, prev_hash: ZERO_HASH, prev_time: None }
    }

    /// Starts after an already verified entry: its position, hash and recorded time.
    pub fn resume(next_position: u64, prev_hash: Hash, prev_time: Option<Time>) -> Self {
        Self { next_position, prev_hash, prev_time }
    }

    /// The position the next entry must have.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// The leaf hash of the last entry checked (the zero hash before the first).
    pub fn last_hash(&self) -> Hash {
        self.prev_hash
    }

    /// The recorded time of the last entry checked.
    pub fn last_recorded_at(&self) -> Option<Time> {
        self.prev_time
    }

    /// Checks the next entry and returns its leaf hash.
    pub fn push(&mut self, entry: &[u8]) -> Result<Hash, ChainError> {
        let position = self.next_position;
        let header =
            decode_header(entry).map_err(|error| ChainError::Malformed { position, error })?;
        if header.position != position {
            return Err(ChainError::Position { position, claimed: header.position });
        }
        if header.prev_hash != self.prev_hash {
            return Err(ChainError::Link { position });
        }
        if let Some(prev) = self.prev_time
            && header.recorded_at <= prev
        {
            return Err(ChainError::Time {
                position,
                at: time::format(&header.recorded_at),
                previous: time::format(&prev),
            });
        }
        let hash = leaf_hash(entry);
        self.next_position += 1;
        self.prev_hash = hash;
        self.prev_time = Some(header.recorded_at);
        Ok(hash)
    }
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn header(position: u64, prev_hash: Hash) -> EntryHeader {
        EntryHeader {
            position,
            recorded_at: time::parse("2026-01-01T00:00:00Z").unwrap()
                + chrono::TimeDelta::microseconds(position as i64),
            prev_hash,
        }
    }

    #[test]
    fn a_framed_entry_is_the_same_bytes_as_encoding_the_whole_message() {
        let body = pb::LogEntry {
            request_id: "6f1c1d6e-5b9a-4c57-9d54-8e7cbb3f4a10".into(),
            ..Default::default()
        };
        let h = header(7, [9u8; 32]);
        let framed = encode_entry(&h, &body.encode_to_vec());
        let whole = pb::LogEntry {
            position: 7,
            recorded_at: Some(time::to_timestamp(&h.recorded_at)),
            prev_hash: vec![9u8; 32],
            ..body
        };
        assert_eq!(framed, whole.encode_to_vec());
        assert_eq!(decode_header(&framed).unwrap(), h);
    }

    #[test]
    fn the_chain_verifier_names_the_first_bad_position() {
        let mut entries = Vec::new();
        let mut prev = ZERO_HASH;
        for i in 0..5 {
            let e = encode_entry(&header(i, prev), b"");
            prev = leaf_hash(&e);
            entries.push(e);
        }
        let mut v = ChainVerifier::new();
        for e in &entries {
            v.push(e).unwrap();
        }
        // Break the link of entry 3 by changing entry 2.
        entries[2] = encode_entry(&header(2, [1u8; 32]), b"");
        let mut v = ChainVerifier::new();
        let err = entries.iter().map(|e| v.push(e)).find_map(Result::err).unwrap();
        assert_eq!(err.position(), 2);
    }
}
