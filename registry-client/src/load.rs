//! Test data at volume: signed registrations of fresh meter keys, generated on every core and
//! loaded through the bulk command path.
//!
//! Benchmarks and the `registry bench` tool use this to fill a registry with realistic entries
//! (one signed command and one automatic confirmation per key, as in production). Every command
//! carries its own request ID, so an interrupted call can be retried as a whole.

use std::ops::Range;

use registry_proto::command::SignedCommand;
use registry_proto::keys::P256KeyPair;
use registry_proto::time::Time;

use crate::{Action, ClientError, NewKey, RegistryClient, command_bytes};

/// Commands per bulk call: the server's limit.
pub const BULK_CALL: usize = 10_000;

/// The EVSE ID the `index`-th test meter of an operator is bound to, e.g. `DE*ABC*E42`.
pub fn evse_id(operator_id: &str, index: u64) -> String {
    format!("{operator_id}*E{index}")
}

/// The meter serial of the `index`-th test meter.
pub fn meter_serial(index: u64) -> String {
    format!("BENCH-{index:09}")
}

/// Registrations of fresh meter keys for the meters `range` of `operator_id`, signed by
/// `signer`, effective from `effective_at`. Generated on every core; returns the meter keys with
/// their commands, in order.
pub fn registrations(
    signer: &P256KeyPair,
    operator_id: &str,
    range: Range<u64>,
    effective_at: Time,
) -> Vec<(P256KeyPair, SignedCommand)> {
    let one = |i: u64| {
        let meter = P256KeyPair::generate();
        let action = Action::Register {
            key: NewKey {
                meter_serial: Some(meter_serial(i)),
                ..NewKey::new(hex::encode(meter.public_key_der()))
            },
            evse_ids: vec![evse_id(operator_id, i)],
            effective_at: Some(effective_at),
        };
        let signed = SignedCommand::sign(command_bytes(&action), signer);
        (meter, signed)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let len = range.end.saturating_sub(range.start);
    let per = len.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                let start = range.start + t * per;
                let end = (start + per).min(range.end);
                s.spawn(move || (start..end).map(one).collect::<Vec<_>>())
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// What a bulk load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Registrations accepted (new or, on a retry, already there).
    pub accepted: u64,
    /// Registrations refused.
    pub refused: u64,
}

/// Submits `commands` in bulk calls, `in_flight` calls at a time, calling `progress` with the
/// number of commands done after each call. Fails on the first call that fails as a whole; a
/// refused command is counted, and the first refusal's message is returned with the counts.
pub async fn submit_all(
    client: &RegistryClient,
    commands: Vec<SignedCommand>,
    in_flight: usize,
    progress: impl Fn(u64),
) -> Result<(Loaded, Option<String>), ClientError> {
    let mut calls = tokio::task::JoinSet::new();
    let mut chunks = commands.chunks(BULK_CALL).map(<[SignedCommand]>::to_vec);
    let mut loaded = Loaded::default();
    let mut first_refusal = None;
    let mut done = 0u64;
    loop {
        while calls.len() < in_flight.max(1) {
            let Some(chunk) = chunks.next() else { break };
            let client = client.clone();
            calls.spawn(async move { client.submit_many(chunk).await });
        }
        let Some(result) = calls.join_next().await else { break };
        let results =
            result.map_err(|e| ClientError::Input(format!("a bulk call task failed: {e}")))??;
        for r in &results {
            match r {
                Ok(_) => loaded.accepted += 1,
                Err(refusal) => {
                    loaded.refused += 1;
                    first_refusal.get_or_insert_with(|| refusal.message.clone());
                }
            }
        }
        done += results.len() as u64;
        progress(done);
    }
    Ok((loaded, first_refusal))
}
