//! Reads a gRPC request body as it streams past, without buffering it: each message's 5-byte
//! prefix announces its length, which is checked against the method's limit before tonic
//! reserves a buffer of that size, and the message's top-level protobuf fields are counted, so
//! that a batch of sixteen million empty questions is refused after the first 10,000 instead of
//! being decoded into gigabytes.
//!
//! The scanner never decides what a message means. When the bytes are not protobuf it stops
//! counting and lets the decoder say what is wrong.

/// What one method may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimit {
    /// Largest message, in bytes, as its length prefix announces it.
    pub max_bytes: usize,
    /// Most top-level fields in one message (a repeated field counts once per element).
    pub max_fields: usize,
}

/// Why a request was refused while it streamed in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Oversized {
    /// The length prefix announces more than the method takes.
    #[error(
        "a request message may be at most {max} bytes for this method; this one announces {len}"
    )]
    Bytes {
        /// The announced length.
        len: usize,
        /// The method's limit.
        max: usize,
    },
    /// The message holds more elements than the method takes.
    #[error("a request message may hold at most {max} fields or list elements for this method")]
    Fields {
        /// The method's limit.
        max: usize,
    },
    /// The message uses protobuf groups, which no message of this API has. prost skips unknown
    /// groups without complaint, so a group in front of millions of list elements would
    /// otherwise hide them from the count.
    #[error("a request message must not contain protobuf groups (wire types 3 and 4)")]
    Groups,
}

/// Incremental state between chunks.
#[derive(Debug)]
enum State {
    /// Reading the 5-byte prefix; `got` bytes of it so far.
    Prefix { buf: [u8; 5], got: usize },
    /// Inside a message with `left` bytes to go.
    Message { left: usize, field: Field },
}

/// Where the scanner is inside the protobuf encoding of a message.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// Reading a tag varint.
    Tag { value: u64, shift: u32 },
    /// Skipping a varint value.
    Varint,
    /// Reading a length varint.
    Length { value: u64, shift: u32 },
    /// Skipping `n` bytes of a value.
    Skip(u64),
    /// Not protobuf as far as the scanner understands it (compression, garbage the decoder will
    /// refuse): the rest of the message is passed on uncounted for the decoder to judge.
    Opaque,
    /// A group began: refused, see [`Oversized::Groups`].
    Group,
}

/// Watches one request body.
#[derive(Debug)]
pub struct FrameScanner {
    limit: MessageLimit,
    state: State,
    fields: usize,
}

impl FrameScanner {
    /// A scanner for a body of messages under `limit`.
    pub fn new(limit: MessageLimit) -> Self {
        Self { limit, state: State::Prefix { buf: [0; 5], got: 0 }, fields: 0 }
    }

    /// Feeds the next chunk of the body. `announced` is told each message's length as soon as
    /// its prefix is complete (before any of its bytes), and may refuse it too.
    pub fn feed<E: From<Oversized>>(
        &mut self,
        mut chunk: &[u8],
        announced: &mut dyn FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        while !chunk.is_empty() {
            match &mut self.state {
                State::Prefix { buf, got } => {
                    let n = (5 - *got).min(chunk.len());
                    buf[*got..*got + n].copy_from_slice(&chunk[..n]);
                    *got += n;
                    chunk = &chunk[n..];
                    if *got == 5 {
                        let compressed = buf[0] != 0;
                        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                        if len > self.limit.max_bytes {
                            return Err(Oversized::Bytes { len, max: self.limit.max_bytes }.into());
                        }
                        announced(len)?;
                        self.fields = 0;
                        let field = if compressed {
                            Field::Opaque
                        } else {
                            Field::Tag { value: 0, shift: 0 }
                        };
                        self.state = if len == 0 {
                            State::Prefix { buf: [0; 5], got: 0 }
                        } else {
                            State::Message { left: len, field }
                        };
                    }
                }
                State::Message { left, field } => {
                    let n = (*left).min(chunk.len());
                    let (mine, rest) = chunk.split_at(n);
                    let started = scan(field, mine);
                    if matches!(field, Field::Group) {
                        return Err(Oversized::Groups.into());
                    }
                    self.fields += started;
                    if self.fields > self.limit.max_fields {
                        return Err(Oversized::Fields { max: self.limit.max_fields }.into());
                    }
                    *left -= n;
                    chunk = rest;
                    if *left == 0 {
                        self.state = State::Prefix { buf: [0; 5], got: 0 };
                    }
                }
            }
        }
        Ok(())
    }
}

/// Advances `field` over `bytes`; returns how many fields started.
fn scan(field: &mut Field, bytes: &[u8]) -> usize {
    let mut started = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match field {
            Field::Opaque | Field::Group => return started,
            Field::Skip(n) => {
                let take = (*n).min((bytes.len() - i) as u64);
                *n -= take;
                i += take as usize;
                if *n == 0 {
                    *field = Field::Tag { value: 0, shift: 0 };
                }
                continue;
            }
            Field::Tag { value, shift } => {
                if *shift >= 64 {
                    *field = Field::Opaque;
                    continue;
                }
                *value |= u64::from(b & 0x7f) << *shift;
                *shift += 7;
                if b & 0x80 == 0 {
                    started += 1;
                    *field = match *value & 7 {
                        0 => Field::Varint,
                        1 => Field::Skip(8),
                        2 => Field::Length { value: 0, shift: 0 },
                        5 => Field::Skip(4),
                        3 | 4 => Field::Group,
                        _ => Field::Opaque,
                    };
                }
            }
            Field::Varint => {
                if b & 0x80 == 0 {
                    *field = Field::Tag { value: 0, shift: 0 };
                }
            }
            Field::Length { value, shift } => {
                if *shift >= 64 {
                    *field = Field::Opaque;
                    continue;
                }
                *value |= u64::from(b & 0x7f) << *shift;
                *shift += 7;
                if b & 0x80 == 0 {
                    *field = if *value == 0 {
                        Field::Tag { value: 0, shift: 0 }
                    } else {
                        Field::Skip(*value)
                    };
                }
            }
        }
        i += 1;
    }
    started
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use registry_proto::pb;

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn feed_in_pieces(
        limit: MessageLimit,
        bytes: &[u8],
        piece: usize,
    ) -> Result<Vec<usize>, Oversized> {
        let mut scanner = FrameScanner::new(limit);
        let mut lengths = Vec::new();
        for chunk in bytes.chunks(piece) {
            scanner.feed(chunk, &mut |len| {
                lengths.push(len);
                Ok::<_, Oversized>(())
            })?;
        }
        Ok(lengths)
    }

    fn batch(n: usize) -> pb::CheckValidityBatchRequest {
        pb::CheckValidityBatchRequest {
            queries: vec![pb::ValidityQuery::default(); n],
            prove: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_within_the_limits_passes_however_it_is_cut() {
        let bytes = framed(&batch(100));
        let limit = MessageLimit { max_bytes: 1 << 20, max_fields: 101 };
        for piece in [1, 2, 3, 5, 7, 64, bytes.len()] {
            assert_eq!(
                feed_in_pieces(limit, &bytes, piece),
                Ok(vec![bytes.len() - 5]),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn too_many_empty_questions_are_refused_by_count_not_by_size() {
        let bytes = framed(&batch(10_001));
        let limit = MessageLimit { max_bytes: 1 << 20, max_fields: 10_000 };
        assert_eq!(feed_in_pieces(limit, &bytes, 1000), Err(Oversized::Fields { max: 10_000 }));
    }

    #[test]
    fn an_announced_length_over_the_limit_is_refused_before_its_bytes() {
        let mut prefix = vec![0];
        prefix.extend_from_slice(&(32u32 << 20).to_be_bytes());
        let limit = MessageLimit { max_bytes: 4 << 20, max_fields: 10 };
        assert_eq!(
            feed_in_pieces(limit, &prefix, 5),
            Err(Oversized::Bytes { len: 32 << 20, max: 4 << 20 })
        );
    }

    #[test]
    fn every_wire_type_is_stepped_over() {
        // A registration command has strings, varints, nested messages and a timestamp.
        let command = pb::SubmitCommandRequest {
            command: Some(pb::SignedCommand {
                command: vec![7; 300],
                signer_key_id: vec![1; 32],
                signature: vec![2; 72],
                registry: "keyregistry.local/abc".into(),
            }),
        };
        let mut bytes = framed(&command);
        bytes.extend(framed(&command));
        let limit = MessageLimit { max_bytes: 4096, max_fields: 1 };
        assert_eq!(feed_in_pieces(limit, &bytes, 3).map(|l| l.len()), Ok(2));
        let fixed = pb::GetEntriesRequest { start: u64::MAX, end: 5 };
        let limit = MessageLimit { max_bytes: 4096, max_fields: 2 };
        assert!(feed_in_pieces(limit, &framed(&fixed), 1).is_ok());
    }

    #[test]
    fn a_group_cannot_hide_list_elements_from_the_count() {
        // An empty group of field 15, then 20,000 empty questions.
        let mut message = vec![0x7b, 0x7c];
        message.extend([0x0a, 0x00].repeat(20_000));
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend(message);
        let limit = MessageLimit { max_bytes: 1 << 20, max_fields: 10_000 };
        assert_eq!(feed_in_pieces(limit, &bytes, 1), Err(Oversized::Groups));
    }

    #[test]
    fn garbage_is_left_to_the_decoder() {
        let mut bytes = vec![0, 0, 0, 0, 6];
        bytes.extend_from_slice(&[0xff; 6]);
        let limit = MessageLimit { max_bytes: 64, max_fields: 1 };
        assert_eq!(feed_in_pieces(limit, &bytes, 2), Ok(vec![6]));
    }
}
