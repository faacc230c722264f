//! Test data at volume: signed registrations of fresh meter keys, generated on every core and
//! loaded through the bulk command path.
//!
//! Benchmarks and the `registry bench` tool use this to fill a registry with realistic entries
//! (one signed command and one automatic confirmation per key, as in production). Every command
//! carries its own request ID, so an interrupted call can be retried as a whole.

use std::ops::Range;

use registry_core::command::SignedCommand;
use registry_core::keys::P256KeyPair;
use registry_core::time::Time;

use crate::{ClientError, KeySubmission, Order, RegistryClient, command_bytes};

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

/// The `index`-th meter key of the test fleet `seed`: the same on every run, so a fleet loaded
/// once can sign records in later runs.
pub fn meter_key(seed: u64, index: u64) -> P256KeyPair {
    use sha2::Digest;
    let mut counter = 0u32;
    loop {
        let secret: [u8; 32] = sha2::Sha256::new()
            .chain_update(b"keyregistry bench meter\0")
            .chain_update(seed.to_be_bytes())
            .chain_update(index.to_be_bytes())
            .chain_update(counter.to_be_bytes())
            .finalize()
            .into();
        // A digest at or above the group order (odds about 2^-32) just takes the next counter.
        if let Some(key) = P256KeyPair::from_secret(&secret) {
            return key;
        }
        counter += 1;
    }
}

/// Registrations of fresh random meter keys for the meters `range` of `operator_id`, signed by
/// `signer` for the registry whose checkpoint origin is `registry`, effective from
/// `effective_at`. Generated on every core; returns the meter keys with
/// their commands, in order.
pub fn registrations(
    signer: &P256KeyPair,
    registry: &str,
    operator_id: &str,
    range: Range<u64>,
    effective_at: Time,
) -> Vec<(P256KeyPair, SignedCommand)> {
    registrations_of(signer, registry, operator_id, range, effective_at, |_| {
        P256KeyPair::generate()
    })
}

/// Like [`registrations`], with the meter key of each index from `meter` (e.g. [`meter_key`]).
pub fn registrations_of(
    signer: &P256KeyPair,
    registry: &str,
    operator_id: &str,
    range: Range<u64>,
    effective_at: Time,
    meter: impl Fn(u64) -> P256KeyPair + Sync,
) -> Vec<(P256KeyPair, SignedCommand)> {
    let one = |i: u64| {
        let meter = meter(i);
        let action = Order::Register {
            key: KeySubmission {
                meter_serial: Some(meter_serial(i)),
                ..KeySubmission::new(hex::encode(meter.public_key_der()))
            },
            evse_ids: vec![evse_id(operator_id, i)],
            effective_at: Some(effective_at),
        };
        let signed = SignedCommand::sign(command_bytes(&action), registry, signer);
        (meter, signed)
    };
    on_every_core(range, one)
}

/// `f` of every index in `range`, in order, computed in one slice per core: key generation and
/// signing dominate test-data generation.
pub fn on_every_core<T: Send>(range: Range<u64>, f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let per = range.end.saturating_sub(range.start).div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                let start = range.start + t * per;
                let end = (start + per).min(range.end);
                s.spawn(move || (start..end).map(f).collect::<Vec<_>>())
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

/// Most bytes of commands in one bulk call: half of what the registry takes in one
/// `SubmitCommands` request (16 MiB), so that commands with large sample meter values still fit.
pub const BULK_BYTES: usize = 8 * 1024 * 1024;

/// Splits `commands` into bulk calls of at most [`BULK_CALL`] commands and [`BULK_BYTES`] bytes.
fn bulk_calls(commands: Vec<SignedCommand>) -> Vec<Vec<SignedCommand>> {
    let mut calls = Vec::new();
    let (mut call, mut bytes) = (Vec::new(), 0);
    for command in commands {
        // The command's encoding plus its field tag and length.
        let size =
            prost::Message::encoded_len(&registry_proto::pb::SignedCommand::from(&command)) + 4;
        if !call.is_empty() && (call.len() == BULK_CALL || bytes + size > BULK_BYTES) {
            calls.push(std::mem::take(&mut call));
            bytes = 0;
        }
        bytes += size;
        call.push(command);
    }
    if !call.is_empty() {
        calls.push(call);
    }
    calls
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
    let mut chunks = bulk_calls(commands).into_iter();
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

/// A signed OCMF record from the `index`-th test meter of `operator_id`, as a meter would emit
/// it for a charging session: begin and end readings `minutes` apart from `begin`, the meter
/// serial and the EVSE ID the meter is registered for, signed with `meter`.
pub fn ocmf_record(
    meter: &P256KeyPair,
    operator_id: &str,
    index: u64,
    begin: Time,
    minutes: i64,
) -> String {
    let reading = |at: Time, tx: &str, value: f64| {
        format!(
            r#"{{"TM":"{}","TX":"{tx}","RV":{value:.3},"RI":"1-b:1.8.0","RU":"kWh","RT":"AC","EF":"","ST":"G"}}"#,
            at.format("%Y-%m-%dT%H:%M:%S,%3f%z S")
        )
    };
    let end = begin + chrono::TimeDelta::minutes(minutes);
    let payload = format!(
        r#"{{"FV":"1.0","GI":"BENCH","GS":"","GV":"1.0","PG":"T{index}","MV":"BENCH","MM":"M1","MS":"{}","MF":"1.0","IS":true,"IL":"TRUSTED","IF":["RFID_PLAIN"],"IT":"ISO14443","ID":"0A0B0C0D","CT":"EVSEID","CI":"{}","RD":[{},{}]}}"#,
        meter_serial(index),
        evse_id(operator_id, index),
        reading(begin, "B", 1000.0 + index as f64 % 97.0),
        reading(end, "E", 1000.0 + index as f64 % 97.0 + minutes as f64 / 6.0),
    );
    let signature = hex::encode_upper(meter.sign_der(payload.as_bytes()));
    format!(r#"OCMF|{payload}|{{"SA":"ECDSA-secp256r1-SHA256","SD":"{signature}"}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::ocmf::Record;

    #[test]
    fn a_generated_record_is_a_clean_ocmf_record_signed_by_its_meter() {
        let meter = P256KeyPair::generate();
        let begin = registry_core::time::parse("2026-03-01T10:00:00Z").unwrap();
        let text = ocmf_record(&meter, "DE*BEN", 7, begin, 30);
        let record = Record::parse(&text).expect("parses");
        assert!(record.deviations.is_empty(), "{:?}", record.deviations);
        assert_eq!(record.payload.meter_serial.as_deref(), Some("BENCH-000000007"));
        assert_eq!(record.payload.readings.len(), 2);
        assert_eq!(
            record.payload.readings[1].time.as_ref().map(|t| t.instant),
            Some(begin + chrono::TimeDelta::minutes(30))
        );
        assert_eq!(record.verify(meter.public_key_der()), Ok(true));
        let other = P256KeyPair::generate();
        assert_eq!(record.verify(other.public_key_der()), Ok(false));
    }

    #[test]
    fn bulk_calls_are_cut_by_count_and_by_bytes() {
        let signer = P256KeyPair::generate();
        let small = |n: usize| -> Vec<SignedCommand> {
            (0..n).map(|i| SignedCommand::sign(vec![i as u8; 100], "r", &signer)).collect()
        };
        let calls = bulk_calls(small(25_000));
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10_000, 10_000, 5_000]);
        // 1,000 commands of 20 KB: 8 MiB holds about 400 of them.
        let large: Vec<_> =
            (0..1_000).map(|_| SignedCommand::sign(vec![7; 20_000], "r", &signer)).collect();
        let calls = bulk_calls(large);
        assert!(calls.len() >= 3, "{}", calls.len());
        for call in &calls {
            let bytes: usize = call
                .iter()
                .map(|c| {
                    prost::Message::encoded_len(&registry_proto::pb::SignedCommand::from(c)) + 4
                })
                .sum();
            assert!(bytes <= BULK_BYTES, "{bytes}");
        }
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 1_000);
        assert!(bulk_calls(Vec::new()).is_empty());
    }
}
