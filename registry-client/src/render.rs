//! Readable forms of what the registry returns: JSON for scripts, short text lines for people.
//!
//! The JSON of a registry message is its protobuf JSON mapping ([`message`], [`entry_message`]),
//! exactly what the web face's JSON API sends, so gRPC, HTTP and `registry --json` speak one
//! dialect. The archive's `entries.jsonl` keeps its own flat view ([`entry`]: snake_case, hex
//! keys and hashes), which archives already written are checked against.

use registry_core::entry::Entry;
use registry_core::event::Event;
use registry_core::time;
use registry_proto::pb;
use serde_json::{Value, json};

/// A registry message in the protobuf JSON mapping.
pub fn message<T: serde::Serialize>(m: &T) -> Value {
    serde_json::to_value(m).unwrap_or_else(|e| json!({"unprintable": e.to_string()}))
}

/// A stored log entry in the protobuf JSON mapping of `LogEntry`.
pub fn entry_message(bytes: &[u8]) -> Value {
    match <pb::LogEntry as prost::Message>::decode(bytes) {
        Ok(e) => message(&e),
        Err(e) => json!({"malformed": e.to_string()}),
    }
}

fn ts(t: &Option<registry_proto::Timestamp>) -> Value {
    match t.as_ref().and_then(|t| time::from_timestamp(t).ok()) {
        Some(t) => Value::String(time::format(&t)),
        None => Value::Null,
    }
}

fn strs<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(T::to_string).collect()
}

/// An event as JSON: `{"kind": "key_registered", ...}`.
pub fn event(e: &Event) -> Value {
    match e {
        Event::AdminKeyAdded { public_key, label } => json!({
            "kind": "admin_key_added",
            "key_id": registry_core::keys::fingerprint_hex(public_key),
            "label": label,
        }),
        Event::AdminKeyRevoked { key_id } => {
            json!({"kind": "admin_key_revoked", "key_id": hex::encode(key_id)})
        }
        Event::OperatorAdded { operator_id, name, public_keys } => json!({
            "kind": "operator_added",
            "operator_id": operator_id.to_string(),
            "name": name,
            "key_ids": public_keys.iter().map(|k| registry_core::keys::fingerprint_hex(k)).collect::<Vec<_>>(),
        }),
        Event::OperatorKeyAdded { operator_id, public_key } => json!({
            "kind": "operator_key_added",
            "operator_id": operator_id.to_string(),
            "key_id": registry_core::keys::fingerprint_hex(public_key),
        }),
        Event::OperatorKeyRevoked { operator_id, key_id } => json!({
            "kind": "operator_key_revoked",
            "operator_id": operator_id.to_string(),
            "key_id": hex::encode(key_id),
        }),
        Event::KeyRegistered(r) => json!({
            "kind": "key_registered",
            "fingerprint": r.fingerprint,
            "curve": r.curve.name(),
            "public_key": hex::encode(&r.public_key),
            "operator_id": r.operator_id.to_string(),
            "evse_ids": strs(&r.evse_ids),
            "meter_serial": r.meter_serial,
            "gateway_serial": r.gateway_serial,
            "manufacturer": r.manufacturer,
            "model": r.model,
            "effective_at": time::format(&r.effective_at),
            "predecessor": r.predecessor,
            "has_sample_signed_meter_value": r.sample_signed_meter_value.is_some(),
        }),
        Event::KeyConfirmed { fingerprint, registration_position, published_in_tree_size } => {
            json!({
                "kind": "key_confirmed",
                "fingerprint": fingerprint,
                "registration_position": registration_position,
                "published_in_tree_size": published_in_tree_size,
            })
        }
        Event::KeyRejected { fingerprint, reason } => {
            json!({"kind": "key_rejected", "fingerprint": fingerprint, "reason": reason})
        }
        Event::KeyEnded { fingerprint, effective_at, reason, comment, successor } => json!({
            "kind": "key_ended",
            "fingerprint": fingerprint,
            "effective_at": time::format(effective_at),
            "reason": end_reason(pb::EndReason::from(*reason) as i32),
            "comment": comment,
            "successor": successor,
        }),
        Event::KeyRelocated { fingerprint, effective_at, evse_ids } => json!({
            "kind": "key_relocated",
            "fingerprint": fingerprint,
            "effective_at": time::format(effective_at),
            "evse_ids": strs(evse_ids),
        }),
        Event::KeyReleased { fingerprint, to_operator_id } => json!({
            "kind": "key_released",
            "fingerprint": fingerprint,
            "to_operator_id": to_operator_id.to_string(),
        }),
        Event::KeyTakenOver { fingerprint, effective_at, operator_id, evse_ids, forced } => json!({
            "kind": "key_taken_over",
            "fingerprint": fingerprint,
            "effective_at": time::format(effective_at),
            "operator_id": operator_id.to_string(),
            "evse_ids": strs(evse_ids),
            "forced": forced,
        }),
    }
}

/// A decoded entry as JSON.
pub fn entry(e: &Entry) -> Value {
    json!({
        "position": e.header.position,
        "recorded_at": time::format(&e.header.recorded_at),
        "prev_hash": hex::encode(e.header.prev_hash),
        "request_id": e.body.request_id.to_string(),
        "signer_key_id": e.body.command.as_ref().map(|c| hex::encode(c.signer_key_id)),
        "events": e.body.events.iter().map(event).collect::<Vec<_>>(),
        "links": e.body.links.iter().map(|l| json!({
            "identifier": identifier_kind(l.identifier.kind),
            "value": l.identifier.value,
            "previous": l.previous,
        })).collect::<Vec<_>>(),
    })
}

fn identifier_kind(k: registry_core::event::IdentifierKind) -> &'static str {
    use registry_core::event::IdentifierKind::*;
    match k {
        Key => "key",
        Evse => "evse",
        MeterSerial => "meter_serial",
        GatewaySerial => "gateway_serial",
        Operator => "operator",
    }
}

/// An entry for people: its position and time, then one line per event.
pub fn entry_text(e: &Entry) -> String {
    let mut text =
        format!("entry {} at {}", e.header.position, time::format(&e.header.recorded_at));
    for ev in &e.body.events {
        text.push_str("\n  ");
        text.push_str(&event_line(ev));
    }
    text
}

/// A one-line summary of an event.
pub fn event_line(e: &Event) -> String {
    match e {
        Event::AdminKeyAdded { public_key, label } => {
            format!(
                "administrator key {} added ({label})",
                registry_core::keys::fingerprint_hex(public_key)
            )
        }
        Event::AdminKeyRevoked { key_id } => {
            format!("administrator key {} revoked", hex::encode(key_id))
        }
        Event::OperatorAdded { operator_id, name, public_keys } => {
            format!("operator {operator_id} ({name}) added with {} key(s)", public_keys.len())
        }
        Event::OperatorKeyAdded { operator_id, public_key } => format!(
            "operator {operator_id} key {} added",
            registry_core::keys::fingerprint_hex(public_key)
        ),
        Event::OperatorKeyRevoked { operator_id, key_id } => {
            format!("operator {operator_id} key {} revoked", hex::encode(key_id))
        }
        Event::KeyRegistered(r) => format!(
            "key {} registered for {} ({}) from {}{}",
            r.fingerprint,
            strs(&r.evse_ids).join(", "),
            r.operator_id,
            time::format(&r.effective_at),
            r.predecessor.as_ref().map(|p| format!(", succeeding {p}")).unwrap_or_default()
        ),
        Event::KeyConfirmed { fingerprint, published_in_tree_size, .. } => {
            format!("key {fingerprint} confirmed (published in tree size {published_in_tree_size})")
        }
        Event::KeyRejected { fingerprint, reason } => {
            format!("key {fingerprint} rejected: {reason}")
        }
        Event::KeyEnded { fingerprint, effective_at, reason, .. } => format!(
            "key {fingerprint} ended at {} ({})",
            time::format(effective_at),
            end_reason(pb::EndReason::from(*reason) as i32)
        ),
        Event::KeyRelocated { fingerprint, effective_at, evse_ids } => format!(
            "key {fingerprint} relocated to {} at {}",
            strs(evse_ids).join(", "),
            time::format(effective_at)
        ),
        Event::KeyReleased { fingerprint, to_operator_id } => {
            format!("key {fingerprint} released to {to_operator_id}")
        }
        Event::KeyTakenOver { fingerprint, effective_at, operator_id, evse_ids, forced } => {
            format!(
                "key {fingerprint} taken over by {operator_id} for {} at {}{}",
                strs(evse_ids).join(", "),
                time::format(effective_at),
                if *forced { " (forced by an administrator)" } else { "" }
            )
        }
    }
}

/// The name of a verdict.
pub fn verdict(v: i32) -> &'static str {
    pb::Verdict::try_from(v)
        .map(|v| v.as_str_name().trim_start_matches("VERDICT_"))
        .unwrap_or("UNSPECIFIED")
}

/// The name of a key state.
pub fn key_state(v: i32) -> &'static str {
    pb::KeyState::try_from(v)
        .map(|v| v.as_str_name().trim_start_matches("KEY_STATE_"))
        .unwrap_or("UNSPECIFIED")
}

/// The name of an end reason.
pub fn end_reason(v: i32) -> &'static str {
    pb::EndReason::try_from(v)
        .map(|v| v.as_str_name().trim_start_matches("END_REASON_"))
        .unwrap_or("UNSPECIFIED")
}

fn curve(v: i32) -> &'static str {
    registry_core::meter_key::Curve::try_from(v).ok().map_or("", |c| c.name())
}

/// A verdict for people.
pub fn validity_text(v: &pb::Validity) -> String {
    let mut out = verdict(v.verdict).to_string();
    if !v.fingerprint.is_empty() {
        out.push_str(&format!(
            "\n  key        {} ({}, {})",
            v.fingerprint,
            curve(v.curve),
            key_state(v.state)
        ));
    }
    if let Some(b) = &v.binding {
        out.push_str(&format!("\n  binding    {} {}", b.operator_id, b.evse_ids.join(", ")));
        out.push_str(&format!(
            "\n  interval   {} .. {}",
            ts(&b.from).as_str().unwrap_or("?"),
            ts(&b.until).as_str().unwrap_or("open")
        ));
    }
    if v.ended_at.is_some() {
        out.push_str(&format!(
            "\n  ended      {} ({})",
            ts(&v.ended_at).as_str().unwrap_or("?"),
            end_reason(v.end_reason)
        ));
    }
    if !v.candidates.is_empty() {
        out.push_str(&format!("\n  candidates {}", v.candidates.join(", ")));
    }
    if !v.deciding_positions.is_empty() {
        out.push_str(&format!("\n  decided by entries {:?}", v.deciding_positions));
    }
    out
}

fn check_name(v: i32) -> &'static str {
    match pb::MeterValueCheck::try_from(v) {
        Ok(pb::MeterValueCheck::Parse) => "parse",
        Ok(pb::MeterValueCheck::KeyFound) => "key_found",
        Ok(pb::MeterValueCheck::Signature) => "signature",
        Ok(pb::MeterValueCheck::KeyValid) => "key_valid",
        Ok(pb::MeterValueCheck::EvseMatch) => "evse_match",
        Ok(pb::MeterValueCheck::MeterStatus) => "meter_status",
        Ok(pb::MeterValueCheck::ErrorFlags) => "error_flags",
        Ok(pb::MeterValueCheck::ClockStatus) => "clock_status",
        Ok(pb::MeterValueCheck::CdrKey) => "cdr_key",
        _ => "unknown",
    }
}

/// A signed meter value's validation for people: the verdict, then every check.
pub fn meter_value_text(v: &pb::MeterValueValidation) -> String {
    let verdict = match (v.valid, v.billable) {
        (true, true) => "VALID, billable",
        (true, false) => "VALID signature, NOT billable",
        (false, _) => "INVALID",
    };
    let mut out = format!("{}: {verdict}", v.label);
    if !v.found_by.is_empty() {
        out.push_str(&format!("\n  unit       {}", v.found_by));
    }
    if let Some(k) = &v.key {
        out.push_str(&format!("\n  key        {} ({})", k.fingerprint, curve(k.curve)));
    }
    for r in &v.readings {
        out.push_str(&format!(
            "\n  reading    {} {} {} {} [{}]",
            if r.transaction.is_empty() { "-" } else { &r.transaction },
            r.time_text,
            r.value,
            r.unit,
            r.identification
        ));
    }
    for c in &v.checks {
        let mark = match pb::CheckOutcome::try_from(c.outcome) {
            Ok(pb::CheckOutcome::Pass) => "ok  ",
            Ok(pb::CheckOutcome::Fail) => "FAIL",
            Ok(pb::CheckOutcome::Warn) => "warn",
            _ => "-   ",
        };
        let subject =
            if c.subject.is_empty() { String::new() } else { format!(" [{}]", c.subject) };
        out.push_str(&format!("\n  {mark} {:<13}{subject} {}", check_name(c.check), c.reason));
    }
    out
}

/// A load generator run, for people.
pub fn bench_report(r: &crate::bench::Report) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut lines = vec![
        format!(
            "{:?}: {} clients over {} connections, {:.1} s, {} fleet keys, {} per call",
            r.workload, r.concurrency, r.connections, r.seconds, r.keys, r.batch
        ),
        format!(
            "  {:.0} calls/s ({:.0} items/s); {} calls, {} errors",
            r.calls_per_sec, r.items_per_sec, r.calls, r.errors
        ),
        format!(
            "  latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            ms(r.latency.p999_us),
            ms(r.latency.max_us)
        ),
    ];
    if let (Some(commits), Some(mean)) = (r.group_commits, r.mean_group_commit) {
        lines.push(format!("  writer: {commits} group commits, {mean:.1} entries each on average"));
    }
    if let Some(steal) = r.cpu_steal_pct {
        lines.push(format!("  CPU steal during the run: {steal:.1} % of the machine"));
    }
    if let Some(e) = &r.first_error {
        lines.push(format!("  first error: {e}"));
    }
    lines.join("\n")
}
