// The lookup page's verifier: checks the registry's evidence in the browser, trusting nothing
// the server says beyond the bytes it proves.
//
// This is a second, independent implementation of what `registry_core::proof` does in Rust,
// written against the published formats (RFC 9162 Merkle proofs, C2SP signed notes with ECDSA
// P-256, the registry's map of latest entries and its protobuf log entries, OCMF signatures).
// It uses WebCrypto for every hash and signature and has no dependencies and no DOM code, so
// the browser test can run it against the same Merkle and OCMF vectors as the Rust code.
//
// What a verified answer guarantees: the checkpoint is signed by the registry key the page pins,
// every entry shown is in that checkpoint's tree, no entry about the identifiers involved was
// left out (map proof plus back-links), and the verdict follows from those entries by the
// published rules. Every failure throws a `Refusal` that says what did not hold.

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

/** Evidence that does not hold. The message names what failed. */
export class Refusal extends Error {
  constructor(message) {
    super(message);
    this.name = "Refusal";
  }
}

function refuse(message) {
  throw new Refusal(message);
}

// ---- bytes -------------------------------------------------------------------------------

export function fromBase64(text) {
  if (typeof text !== "string") refuse("expected base64 text");
  let s = text.replace(/-/g, "+").replace(/_/g, "/");
  if (s.length % 4 === 1) refuse("not base64");
  while (s.length % 4 !== 0) s += "=";
  let bin;
  try {
    bin = atob(s);
  } catch {
    refuse("not base64");
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function fromHex(text) {
  const s = text.trim();
  if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) refuse("not hex");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

// ---- RFC 9162 Merkle proofs --------------------------------------------------------------

export function leafHash(data) {
  return sha256(concat(new Uint8Array([0]), data));
}

function nodeHash(left, right) {
  return sha256(concat(new Uint8Array([1]), left, right));
}

function hashes(list) {
  return list.map((h) => {
    if (!(h instanceof Uint8Array) || h.length !== 32) refuse("a proof hash is not 32 bytes");
    return h;
  });
}

/** RFC 9162 §2.1.3.2: is `leaf` at `index` in the tree of `size` leaves with `root`? */
export async function verifyInclusion(index, size, leaf, proof, root) {
  let fn = BigInt(index);
  let sn = BigInt(size);
  if (fn >= sn) refuse(`leaf ${index} is outside a tree of ${size}`);
  sn -= 1n;
  const path = hashes(proof);
  if (!(leaf instanceof Uint8Array) || leaf.length !== 32) refuse("the leaf hash is not 32 bytes");
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) refuse("the inclusion proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) refuse("the inclusion proof is too short");
  if (!equal(r, root)) refuse("the inclusion proof does not lead to the checkpoint's root");
}

/** RFC 9162 §2.1.4.2: is the tree of `from` leaves a prefix of the tree of `to` leaves? */
export async function verifyConsistency(from, to, fromRoot, toRoot, proof) {
  let a = BigInt(from);
  let b = BigInt(to);
  if (a === 0n || a > b) refuse(`no consistency proof goes from ${from} to ${to}`);
  if (a === b) {
    if (proof.length !== 0) refuse("a proof between equal sizes must be empty");
    if (!equal(fromRoot, toRoot)) refuse("equal sizes with different roots");
    return;
  }
  const nodes = hashes(proof);
  if (fromRoot.length !== 32 || toRoot.length !== 32) refuse("a root is not 32 bytes");
  if ((a & (a - 1n)) === 0n) nodes.unshift(fromRoot);
  if (nodes.length === 0) refuse("the consistency proof is empty");
  let fn = a - 1n;
  let sn = b - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = nodes[0];
  let sr = nodes[0];
  for (const c of nodes.slice(1)) {
    if (sn === 0n) refuse("the consistency proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) refuse("the consistency proof is too short");
  if (!equal(fr, fromRoot) || !equal(sr, toRoot)) refuse("the consistency proof does not lead to both roots");
}

// ---- ECDSA -------------------------------------------------------------------------------

const P256_OID = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

function contains(bytes, pattern) {
  outer: for (let i = 0; i + pattern.length <= bytes.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return true;
  }
  return false;
}

/** The WebCrypto curve of a DER SubjectPublicKeyInfo, or null for curves WebCrypto lacks. */
export function webCryptoCurve(spki) {
  if (contains(spki, P256_OID)) return "P-256";
  if (contains(spki, P384_OID)) return "P-384";
  return null;
}

/**
 * A DER ECDSA signature as the fixed-width r‖s that WebCrypto verifies. Strict, as the Rust
 * side's DER reader is: minimal, positive INTEGERs only.
 */
export function derToRaw(der, width) {
  const fail = () => refuse("the signature is not DER ECDSA");
  let at = 0;
  if (der[at++] !== 0x30) fail();
  let len = der[at++];
  if (len === 0x81) len = der[at++];
  else if (len > 0x80) fail();
  if (at + len !== der.length) fail();
  const out = new Uint8Array(2 * width);
  for (let k = 0; k < 2; k++) {
    if (der[at++] !== 0x02) fail();
    const n = der[at++];
    if (n === undefined || n === 0 || n >= 0x80 || at + n > der.length) fail();
    let v = der.subarray(at, at + n);
    at += n;
    if (v[0] >= 0x80) fail();
    if (v[0] === 0 && (v.length === 1 || v[1] < 0x80)) fail();
    if (v[0] === 0) v = v.subarray(1);
    if (v.length > width) fail();
    out.set(v, k * width + width - v.length);
  }
  if (at !== der.length) fail();
  return out;
}

/**
 * Verifies an ECDSA-SHA256 signature over `data` with a DER SubjectPublicKeyInfo; the
 * signature is DER when `der` says so (else raw r‖s of the curve's width). Returns null when
 * WebCrypto has no such curve.
 */
export async function verifyEcdsaSha256(spki, data, signature, der = true) {
  const curve = webCryptoCurve(spki);
  if (!curve) return null;
  const width = curve === "P-256" ? 32 : 48;
  let key;
  try {
    key = await subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: curve }, false, ["verify"]);
  } catch {
    refuse("the public key is not a valid key on its curve");
  }
  let raw;
  if (!der) {
    if (signature.length !== 2 * width) return false;
    raw = signature;
  } else {
    try {
      raw = derToRaw(signature, width);
    } catch {
      return false;
    }
  }
  return subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, raw, data);
}

// ---- signed checkpoints ------------------------------------------------------------------

/**
 * Opens a C2SP checkpoint signed by the registry key `keyDer` under `origin`: returns its
 * size, root and map root. Signatures of other keys are ignored; ours must verify.
 */
export async function openCheckpoint(note, keyDer, origin) {
  if (typeof note !== "string" || note.length === 0) refuse("the answer carries no checkpoint");
  const blank = note.lastIndexOf("\n\n");
  if (blank < 0 || !note.endsWith("\n")) refuse("the checkpoint is not a signed note");
  const text = note.slice(0, blank + 1);
  const lines = note.slice(blank + 2, -1).split("\n");
  const keyId = (await sha256(keyDer)).subarray(0, 4);
  let verified = false;
  for (const line of lines) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) refuse("a checkpoint signature line is malformed");
    const raw = fromBase64(m[2]);
    if (m[1] !== origin || raw.length < 5 || !equal(raw.subarray(0, 4), keyId)) continue;
    const ok = await verifyEcdsaSha256(keyDer, utf8.encode(text), raw.subarray(4));
    if (!ok) refuse("the checkpoint's signature does not verify with the pinned registry key");
    verified = true;
  }
  if (!verified) refuse("the checkpoint is not signed by the pinned registry key");
  const body = text.slice(0, -1).split("\n");
  if (body.length < 3 || body[0] !== origin) refuse("the checkpoint is for another log");
  if (!/^(0|[1-9][0-9]*)$/.test(body[1])) refuse("the checkpoint's size is malformed");
  const root = fromBase64(body[2]);
  if (root.length !== 32) refuse("the checkpoint's root is malformed");
  const ext = body.slice(3).find((l) => l.startsWith("keyregistry.v1 map "));
  const mapRoot = ext ? fromBase64(ext.slice("keyregistry.v1 map ".length)) : null;
  return { origin, size: Number(body[1]), root, mapRoot, text, signature: note.slice(blank + 1) };
}

// ---- protobuf ----------------------------------------------------------------------------

/** The fields of one protobuf message: number → list of values (numbers or byte slices). */
function fields(bytes) {
  const out = new Map();
  const order = [];
  let at = 0;
  const varint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      if (at >= bytes.length || shift > 63n) refuse("a log entry is not valid protobuf");
      const b = bytes[at++];
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return v;
      shift += 7n;
    }
  };
  while (at < bytes.length) {
    const key = Number(varint());
    const field = key >>> 3;
    let value;
    switch (key & 7) {
      case 0:
        value = varint();
        break;
      case 1:
        value = bytes.subarray(at, at + 8);
        at += 8;
        break;
      case 2: {
        const n = Number(varint());
        if (at + n > bytes.length) refuse("a log entry is not valid protobuf");
        value = bytes.subarray(at, at + n);
        at += n;
        break;
      }
      case 5:
        value = bytes.subarray(at, at + 4);
        at += 4;
        break;
      default:
        refuse("a log entry is not valid protobuf");
    }
    if (at > bytes.length || field === 0) refuse("a log entry is not valid protobuf");
    if (!out.has(field)) out.set(field, []);
    out.get(field).push(value);
    order.push(field);
  }
  out.order = order;
  return out;
}

const decoder = new TextDecoder("utf-8", { fatal: true });
const one = (f, n) => (f.get(n) || []).at(-1);
const num = (f, n) => Number(one(f, n) ?? 0n);
const str = (f, n) => (one(f, n) ? decoder.decode(one(f, n)) : "");
const strs = (f, n) => (f.get(n) || []).map((b) => decoder.decode(b));
const bytesOf = (f, n) => one(f, n) ?? new Uint8Array();

/** A protobuf Timestamp as microseconds since the epoch (null when absent). */
function micros(f, n) {
  const b = one(f, n);
  if (!b) return null;
  const t = fields(b);
  const seconds = num(t, 1);
  const nanos = num(t, 2);
  // Years 1 to 9999, as the protobuf Timestamp allows; negative values arrive as huge ones.
  if (seconds > 253402300799 || nanos > 999999999) refuse("a log entry holds a time out of range");
  return seconds * 1e6 + Math.floor(nanos / 1000);
}

const KEY_EVENTS = {
  10: "registered",
  11: "confirmed",
  12: "rejected",
  13: "ended",
  14: "relocated",
  15: "released",
  16: "takenOver",
};
const OTHER_EVENTS = {
  1: "adminKeyAdded",
  2: "adminKeyRevoked",
  3: "operatorAdded",
  4: "operatorKeyAdded",
  5: "operatorKeyRevoked",
};

function decodeEvent(bytes) {
  const f = fields(bytes);
  // A oneof is the last of its fields on the wire, as prost decodes it.
  const last = [...f.order].reverse().find((n) => KEY_EVENTS[n] || OTHER_EVENTS[n]);
  if (last === undefined) refuse("a log entry holds an event of no known kind");
  const kind = KEY_EVENTS[last];
  if (kind) {
    const body = one(f, last);
    const e = fields(body);
    const ev = { kind, fingerprint: str(e, 1) };
    if (kind === "registered") {
      Object.assign(ev, {
        curve: num(e, 2),
        publicKey: bytesOf(e, 3),
        operatorId: str(e, 5),
        evseIds: strs(e, 6),
        meterSerial: str(e, 7),
        gatewaySerial: str(e, 8),
        manufacturer: str(e, 9),
        model: str(e, 10),
        effectiveAt: micros(e, 11),
        predecessor: str(e, 12),
      });
    } else if (kind === "confirmed") {
      ev.registrationPosition = num(e, 2);
    } else if (kind === "rejected") {
      ev.reason = str(e, 2);
    } else if (kind === "ended") {
      Object.assign(ev, { effectiveAt: micros(e, 2), reason: num(e, 3), comment: str(e, 4), successor: str(e, 5) });
    } else if (kind === "relocated") {
      Object.assign(ev, { effectiveAt: micros(e, 2), evseIds: strs(e, 3) });
    } else if (kind === "released") {
      ev.toOperatorId = str(e, 2);
    } else if (kind === "takenOver") {
      Object.assign(ev, { effectiveAt: micros(e, 2), operatorId: str(e, 3), evseIds: strs(e, 4) });
    }
    if (!/^[0-9a-f]{64}$/.test(ev.fingerprint)) refuse("a log entry names a key without its fingerprint");
    if (["registered", "ended", "relocated", "takenOver"].includes(kind) && ev.effectiveAt === null) {
      refuse("a log entry holds a key event without its effective time");
    }
    if (kind === "registered" && ev.publicKey.length === 0) refuse("a log entry registers a key without the key");
    return ev;
  }
  return { kind: OTHER_EVENTS[last], operatorId: [3, 4, 5].includes(last) ? str(fields(one(f, last)), 1) : "" };
}

const KINDS = ["", "key", "evse", "meterSerial", "gatewaySerial", "operator"];
const KIND_TAGS = { key: "k", evse: "e", meterSerial: "m", gatewaySerial: "g", operator: "o" };
const KIND_NAMES = {
  IDENTIFIER_KIND_KEY: "key",
  IDENTIFIER_KIND_EVSE: "evse",
  IDENTIFIER_KIND_METER_SERIAL: "meterSerial",
  IDENTIFIER_KIND_GATEWAY_SERIAL: "gatewaySerial",
  IDENTIFIER_KIND_OPERATOR: "operator",
};

function idKey(kind, value) {
  return `${kind}:${value}`;
}

/** Decodes a serialized `LogEntry`: what the page shows comes from these bytes only. */
export function decodeEntry(bytes) {
  const f = fields(bytes);
  const command = one(f, 5);
  const signer = command ? bytesOf(fields(command), 2) : null;
  return {
    position: num(f, 1),
    recordedAt: micros(f, 2),
    requestId: str(f, 4),
    signerKeyId: signer && signer.length ? toHex(signer) : "",
    events: (f.get(6) || []).map(decodeEvent),
    links: (f.get(7) || []).map((b) => {
      const l = fields(b);
      const id = fields(bytesOf(l, 1));
      const plusOne = num(l, 2);
      return { id: idKey(KINDS[num(id, 1)] || "?", str(id, 2)), previous: plusOne === 0 ? null : plusOne - 1 };
    }),
  };
}

// ---- the map of latest entries -----------------------------------------------------------

/** Checks a map proof (JSON form) against the map root: the identifier's latest position or null. */
export async function verifyMapProof(proof, mapRoot) {
  const kind = KIND_NAMES[proof.identifier?.kind];
  const value = proof.identifier?.value ?? "";
  if (!kind) refuse("a map proof names no identifier");
  const key = await sha256(concat(utf8.encode("keyregistry.v1 map key\n"), utf8.encode(KIND_TAGS[kind]), utf8.encode(value)));
  const bucket = (key[0] << 8) | key[1];
  const siblings = (proof.siblings || []).map(fromBase64);
  if (siblings.length !== 16) refuse(`the map proof for ${value} has ${siblings.length} sibling hashes, not 16`);
  const leaves = (proof.leaves || []).map((l) => ({ key: fromBase64(l.key), position: Number(l.position ?? 0) }));
  let latest = null;
  const parts = [new Uint8Array([2, bucket >> 8, bucket & 0xff])];
  let previous = null;
  for (const l of leaves) {
    if (l.key.length !== 32 || ((l.key[0] << 8) | l.key[1]) !== bucket) refuse(`the map proof for ${value} has a leaf outside its bucket`);
    if (previous && compare(previous, l.key) >= 0) refuse(`the map proof for ${value} has unsorted leaves`);
    previous = l.key;
    if (equal(l.key, key)) latest = l.position;
    const p = new Uint8Array(8);
    new DataView(p.buffer).setBigUint64(0, BigInt(l.position));
    parts.push(l.key, p);
  }
  let h = await sha256(concat(...parts));
  let n = 65536 + bucket;
  for (const s of siblings) {
    if (s.length !== 32) refuse("a map sibling is not 32 bytes");
    h = n % 2 === 0 ? await sha256(concat(new Uint8Array([3]), h, s)) : await sha256(concat(new Uint8Array([3]), s, h));
    n = Math.floor(n / 2);
  }
  if (!mapRoot || !equal(h, mapRoot)) refuse(`the map proof for ${value} does not lead to the checkpoint's map root`);
  return { id: idKey(kind, value), latest };
}

function compare(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

// ---- evidence ----------------------------------------------------------------------------

/**
 * Opens an answer's evidence (`AnswerProof` in protobuf JSON): checks the checkpoint against
 * the pinned key, every entry's inclusion and every map proof. Returns what can then be asked.
 */
export async function openEvidence(proof, pinned) {
  if (!proof) refuse("the server sent no evidence");
  const checkpoint = await openCheckpoint(proof.checkpoint, pinned.keyDer, pinned.origin);
  const entries = new Map();
  for (const p of proof.entries || []) {
    const position = Number(p.position ?? 0);
    const bytes = fromBase64(p.entry ?? "");
    try {
      await verifyInclusion(position, checkpoint.size, await leafHash(bytes), (p.inclusionProof || []).map(fromBase64), checkpoint.root);
    } catch (e) {
      refuse(`entry ${position} is not proven to be in the log: ${e.message}`);
    }
    const entry = decodeEntry(bytes);
    if (entry.position !== position) refuse(`entry ${position} claims position ${entry.position}`);
    entry.bytes = bytes;
    entries.set(position, entry);
  }
  const heads = new Map();
  for (const m of proof.mapProofs || []) {
    const { id, latest } = await verifyMapProof(m, checkpoint.mapRoot);
    if (latest !== null && latest >= checkpoint.size) refuse(`the map names an entry past the checkpoint for ${id}`);
    heads.set(id, latest);
  }
  return new Evidence(checkpoint, entries, heads);
}

export class Evidence {
  constructor(checkpoint, entries, heads) {
    this.checkpoint = checkpoint;
    this.entries = entries;
    this.heads = heads;
  }

  /** Every entry about an identifier, newest first, complete by the map proof and back-links. */
  chain(kind, value) {
    const id = idKey(kind, value);
    if (!this.heads.has(id)) refuse(`the evidence has no map proof for ${value}`);
    const out = [];
    let next = this.heads.get(id);
    while (next !== null) {
      const entry = this.entries.get(next);
      if (!entry) refuse(`entry ${next} about ${value} is missing from the evidence`);
      const link = entry.links.find((l) => l.id === id);
      if (!link) refuse(`entry ${next} does not link ${value}`);
      if (link.previous !== null && link.previous >= next) refuse(`entry ${next} links forward for ${value}`);
      out.push(entry);
      next = link.previous;
    }
    return out;
  }

  /** A key's life re-derived from its complete chain, as known before `asOf` (null if unknown). */
  async key(fingerprint, asOf) {
    const events = [];
    for (const entry of this.chain("key", fingerprint).reverse()) {
      if (entry.position >= asOf) continue;
      for (const ev of entry.events) if (ev.fingerprint === fingerprint) events.push({ ...ev, position: entry.position, entry });
    }
    if (events.length === 0) return null;
    const reg = events[0];
    if (reg.kind !== "registered") refuse(`the first event about key ${fingerprint.slice(0, 8)} is not its registration`);
    if (toHex(await sha256(reg.publicKey)) !== fingerprint) refuse(`the registered key does not have the fingerprint ${fingerprint.slice(0, 8)}`);
    return new KeyLife(reg, events);
  }
}

/** A key's events, with the registry's validity rules (`registry_core::validity`). */
export class KeyLife {
  constructor(registration, events) {
    this.registration = registration;
    this.events = events;
    this.confirmed = events.some((e) => e.kind === "confirmed");
    this.rejected = events.some((e) => e.kind === "rejected");
    this.end = events.find((e) => e.kind === "ended") || null;
  }

  /** The verdict at `t` (microseconds): VALID, PENDING, NOT_YET, ENDED or REJECTED. */
  verdictAt(t) {
    if (this.rejected) return "REJECTED";
    if (t < this.registration.effectiveAt) return "NOT_YET";
    if (this.end && t >= this.end.effectiveAt) return "ENDED";
    return this.confirmed ? "VALID" : "PENDING";
  }

  /** Bindings over time: operator, EVSE IDs, from, until (null while open). */
  bindings() {
    const reg = this.registration;
    const out = [{ operatorId: reg.operatorId, evseIds: reg.evseIds, from: reg.effectiveAt, until: null }];
    for (const e of this.events.slice(1)) {
      if (!["relocated", "takenOver", "ended"].includes(e.kind)) continue;
      const last = out.at(-1);
      if (last.until === null) last.until = e.effectiveAt;
      if (e.kind === "relocated") out.push({ operatorId: last.operatorId, evseIds: e.evseIds, from: e.effectiveAt, until: null });
      if (e.kind === "takenOver") out.push({ operatorId: e.operatorId, evseIds: e.evseIds, from: e.effectiveAt, until: null });
    }
    return out;
  }
}

// ---- time --------------------------------------------------------------------------------

/**
 * An OCMF `TM` (`2019-08-13T10:03:15,000+0000 S`) as microseconds, read as the registry reads
 * it (`registry_core::ocmf`): clock flag optional, `Z` or `±hh:mm` tolerated, `.` for `,`
 * tolerated, 1 to 9 digits of a second. Null when it cannot be read.
 */
export function parseOcmfTime(text) {
  if (typeof text !== "string") return null;
  let stamp = text.trim();
  const space = stamp.lastIndexOf(" ");
  if (space >= 0) {
    if (!["U", "I", "S", "R"].includes(stamp.slice(space + 1).trim())) return null;
    stamp = stamp.slice(0, space).trim();
  }
  const tAt = stamp.indexOf("T");
  if (tAt < 0) return null;
  let local;
  let offset;
  if (stamp.endsWith("Z")) {
    local = stamp.slice(0, -1);
    offset = "+0000";
  } else {
    const at = Math.max(stamp.lastIndexOf("+"), stamp.lastIndexOf("-"));
    if (at < tAt) return null;
    offset = stamp.slice(at);
    if (offset.length === 6 && offset[3] === ":") offset = offset.replace(":", "");
    local = stamp.slice(0, at);
  }
  if (local.includes(".") && !local.includes(",")) local = local.replace(".", ",");
  const comma = local.indexOf(",");
  const whole = comma < 0 ? local : local.slice(0, comma);
  const fraction = comma < 0 ? "0" : local.slice(comma + 1);
  if (!/^\d{1,9}$/.test(fraction)) return null;
  const d = /^(\d{4})-(\d{1,2})-(\d{1,2})T(\d{1,2}):(\d{1,2}):(\d{1,2})$/.exec(whole);
  const o = /^([+-])(\d{2})(\d{2})$/.exec(offset);
  if (!d || !o || Number(o[2]) > 23 || Number(o[3]) > 59) return null;
  const [y, mo, day, h, mi, sec] = d.slice(1).map(Number);
  const ms = Date.UTC(y, mo - 1, day, h, mi, sec);
  const back = new Date(ms);
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== day || back.getUTCHours() !== h || back.getUTCMinutes() !== mi || back.getUTCSeconds() !== sec) {
    return null;
  }
  const minutes = (o[1] === "-" ? -1 : 1) * (Number(o[2]) * 60 + Number(o[3]));
  return (ms - minutes * 60000) * 1000 + Number((fraction + "000000").slice(0, 6));
}

/**
 * An EVSE ID in the registry's normal form (`registry_core::ids::EvseId::parse`), or null when
 * it is not one.
 */
export function normalEvse(input) {
  const s = String(input).trim().toUpperCase();
  if (!/^[A-Z0-9*]+$/.test(s) || !/^[A-Z]{2}/.test(s)) return null;
  let i = 2;
  if (s[i] === "*") i++;
  const party = s.slice(i, i + 3);
  if (!/^[A-Z0-9]{3}$/.test(party)) return null;
  i += 3;
  if (s[i] === "*") i++;
  if (s[i] !== "E") return null;
  const rest = s.slice(i + 1);
  if (rest.length < 1 || rest.length > 31 || !/^[A-Z0-9]/.test(rest) || rest.endsWith("*") || rest.includes("**")) return null;
  return `${s.slice(0, 2)}*${party}*E${rest}`;
}

/** An identifier's value in the registry's normal form for its kind, or null. */
export function normalValue(kind, value) {
  const v = String(value).trim();
  if (kind === "evse") return normalEvse(v);
  if (kind === "key") return /^[0-9a-fA-F]{64}$/.test(v) ? v.toLowerCase() : null;
  return v.length > 0 ? v : null;
}

// ---- OCMF --------------------------------------------------------------------------------

const CURVES = { secp256r1: "P-256", secp384r1: "P-384" };

/** Whether bytes are a DER `SEQUENCE` whose length covers exactly the rest (as Rust decides). */
function looksLikeDer(b) {
  if (b.length >= 2 && b[0] === 0x30 && b[1] < 0x80) return b[1] === b.length - 2;
  if (b.length >= 3 && b[0] === 0x30 && b[1] === 0x81) return b[2] === b.length - 3 && b[2] >= 0x80;
  return false;
}

/**
 * Reads an OCMF record (as written, or hex-encoded as a whole): the payload as signed, the
 * signature, and every reading with what it inherits from the one before (time, status,
 * error flags), as the registry reads them.
 */
export function parseOcmf(text) {
  let t = (text || "").trim();
  if (!t.startsWith("OCMF|") && /^[0-9a-fA-F]+$/.test(t) && t.length % 2 === 0) {
    try {
      const decoded = decoder.decode(fromHex(t));
      if (decoded.startsWith("OCMF|")) t = decoded;
    } catch {
      /* not hex text: read as it is */
    }
  }
  const parts = t.split("|");
  if (parts[0] !== "OCMF" || parts.length < 3 || parts.length > 4) refuse("not an OCMF record");
  let payload;
  let signature;
  try {
    payload = JSON.parse(parts[1]);
    signature = JSON.parse(parts[2]);
  } catch {
    refuse("the OCMF record's sections are not JSON");
  }
  if (!payload || typeof payload !== "object" || !signature || typeof signature !== "object") refuse("the OCMF record's sections are not JSON objects");
  const algorithm = typeof signature.SA === "string" ? signature.SA : "ECDSA-secp256r1-SHA256";
  const curve = CURVES[(algorithm.split("-")[1] || "").toLowerCase()] || null;
  const encoding = String(signature.SE || "hex").toLowerCase();
  let sig;
  try {
    sig = encoding === "base64" ? fromBase64(String(signature.SD || "")) : fromHex(String(signature.SD || ""));
  } catch {
    sig = new Uint8Array();
  }
  const readings = [];
  for (const r of Array.isArray(payload.RD) ? payload.RD : []) {
    const before = readings.at(-1);
    const has = (k) => r && Object.prototype.hasOwnProperty.call(r, k);
    readings.push({
      text: has("TM") ? r.TM : before?.text,
      time: has("TM") ? parseOcmfTime(r.TM) : (before?.time ?? null),
      transaction: has("TX") ? r.TX : before?.transaction,
      value: r?.RV,
      unit: has("RU") ? r.RU : before?.unit,
      status: has("ST") ? r.ST : before?.status,
      errorFlags: has("EF") ? (r.EF ?? "") : (before?.errorFlags ?? ""),
    });
  }
  return { payloadText: parts[1], payload, algorithm, curve, signature: sig, der: looksLikeDer(sig), readings };
}

/**
 * Whether an OCMF record's signature verifies with a key; null when WebCrypto lacks the
 * record's curve or the key's. A key on another curve than the record names cannot verify it.
 */
export async function verifyOcmf(record, spki) {
  const keyCurve = webCryptoCurve(spki);
  if (!record.curve || !keyCurve) return null;
  if (keyCurve !== record.curve) return false;
  return verifyEcdsaSha256(spki, utf8.encode(record.payloadText), record.signature, record.der);
}

// ---- answers -----------------------------------------------------------------------------

const outcomesOf = (validation, check) => (validation.checks || []).filter((c) => c.check === check).map((c) => c.outcome);
const passed = (validation, check) => {
  const o = outcomesOf(validation, check);
  return o.length > 0 && o.every((x) => x === "CHECK_OUTCOME_PASS" || x === "CHECK_OUTCOME_WARN");
};

/** The records an OCPI `signed_data` object carries, as text. */
function ocpiRecords(json) {
  let o;
  try {
    o = JSON.parse(json);
  } catch {
    refuse("the OCPI signed_data is not JSON");
  }
  const values = Array.isArray(o?.signed_values) ? o.signed_values : [];
  return values.map((v) => {
    const data = String(v?.signed_data ?? "");
    try {
      const text = decoder.decode(fromBase64(data));
      if (text.trim().startsWith("OCMF|") || /^[0-9a-fA-F]+$/.test(text.trim())) return text;
    } catch {
      /* not base64: as it is */
    }
    return data;
  });
}

/** Whether two records are the same signed data (payload as signed, signature bytes). */
function sameRecord(a, b) {
  try {
    const x = parseOcmf(a);
    const y = parseOcmf(b);
    return x.payloadText === y.payloadText && equal(x.signature, y.signature);
  } catch {
    return false;
  }
}

/**
 * Re-checks a `ValidateSignedMeterValues` answer in the browser against what was asked
 * (`asked`: the records, or `{ ocpi }`, the OCPI text). Decides each record's validity and
 * billability itself from the record and the proven entries, and throws a `Refusal` when the
 * server's answer differs from that or its evidence does not hold.
 */
export async function checkMeterValues(response, pinned, asked) {
  const evidence = await openEvidence(response.proof, pinned);
  const asOf = Number(response.basis?.logSize ?? 0);
  const head = evidence.checkpoint.size;
  if (asOf > head) refuse("the answer's basis is past its checkpoint");
  const inputs = Array.isArray(asked) ? asked : ocpiRecords(asked.ocpi);
  const answers = response.results || [];
  if (answers.length !== inputs.length) refuse(`${inputs.length} records were asked about, the server answered ${answers.length}`);
  const results = [];
  for (const [i, v] of answers.entries()) {
    if (!v.record || !sameRecord(v.record, inputs[i])) refuse(`answer ${i + 1} is about another record than the one asked about`);
    const record = parseOcmf(inputs[i]);
    const mine = await decide(evidence, record, v, asOf);
    // The log may have moved on between the answer's basis and the checkpoint.
    if (asOf < head && (await decide(evidence, record, v, head)).billable !== mine.billable) {
      refuse("the answer is out of date: the registry's log changed it since; check again");
    }
    if (Boolean(v.valid) !== mine.valid || Boolean(v.billable) !== mine.billable) {
      refuse(`the server says the record is ${v.billable ? "" : "not "}billable, but its evidence says it is ${mine.billable ? "" : "not "}billable${mine.why ? ` (${mine.why})` : ""}`);
    }
    results.push(mine);
  }
  return { checkpoint: evidence.checkpoint, results };
}

/**
 * What the evidence says of one record as known at `asOf`: the signing unit's key, the
 * signature, its validity and binding at each reading, the meter's status, and so whether it
 * is valid and billable. What a browser cannot check (a curve WebCrypto lacks, the key a CDR
 * carries) is taken from the server's checks and said so.
 */
async function decide(evidence, record, v, asOf) {
  const out = { record, signature: "none", keyValid: "none", fingerprint: "", life: null, binding: null, valid: false, billable: false, why: "" };
  const payload = record.payload;
  const evse = String(payload.CT ?? "").toUpperCase() === "EVSEID" && String(payload.CI ?? "").trim() ? normalEvse(payload.CI) : undefined;
  // The unit's keys, by its serials, else by the EVSE (as the registry looks them up).
  const paths = [];
  if (typeof payload.MS === "string" && payload.MS.trim()) paths.push(["meterSerial", payload.MS.trim()]);
  if (typeof payload.GS === "string" && payload.GS.trim()) paths.push(["gatewaySerial", payload.GS.trim()]);
  if (evse) paths.push(["evse", evse]);
  let keys = [];
  for (const [kind, value] of paths) {
    const found = new Set();
    for (const entry of evidence.chain(kind, value)) {
      if (entry.position >= asOf) continue;
      for (const ev of entry.events) if (ev.kind === "registered" && ev.fingerprint) found.add(ev.fingerprint);
    }
    for (const fp of found) {
      const life = await evidence.key(fp, asOf);
      if (!life) continue;
      const reg = life.registration;
      const matches = kind === "evse" ? life.bindings().some((b) => b.evseIds.includes(value)) : kind === "meterSerial" ? reg.meterSerial === value : reg.gatewaySerial === value;
      if (matches) keys.push(life);
    }
    if (keys.length > 0) break;
  }
  const named = v.key?.fingerprint;
  if (keys.length === 0) {
    if (named) refuse(`the server names key ${named.slice(0, 8)}, but the evidence has no key for the record's unit`);
    out.why = "no key is registered for the record's unit";
    return out;
  }
  // The key that verifies the record (the browser checks each of the unit's keys it can).
  let signer = null;
  const unverifiable = new Set();
  for (const life of keys) {
    const ok = await verifyOcmf(record, life.registration.publicKey);
    if (ok === null) unverifiable.add(life.registration.fingerprint);
    if (ok) {
      signer = life;
      break;
    }
  }
  if (!signer && unverifiable.size > 0 && passed(v, "METER_VALUE_CHECK_SIGNATURE")) {
    // Only a key this browser cannot check may be the one the registry says verifies.
    signer = keys.find((l) => l.registration.fingerprint === named && unverifiable.has(named)) ?? null;
    if (!signer) refuse("the server says the signature verifies with a key the browser found does not, or that the unit does not have");
    out.signature = "server";
  } else {
    out.signature = signer ? "valid" : "invalid";
  }
  if (!signer) {
    out.fingerprint = named ?? "";
    out.why = "the signature does not verify with the unit's registered key";
    return out;
  }
  if (named !== signer.registration.fingerprint) refuse("the server names another key than the one that verifies the record");
  out.fingerprint = named;
  out.life = signer;
  // Validity and binding at every reading.
  if (record.readings.length === 0 || record.readings.some((r) => r.time === null)) {
    refuse("the page cannot read every reading's time, so it cannot re-check the answer");
  }
  const verdicts = record.readings.map((r) => signer.verdictAt(r.time));
  const bindings = signer.bindings();
  const at = (t) => bindings.find((b) => b.from <= t && (b.until === null || t < b.until)) ?? null;
  out.binding = at(record.readings[0].time);
  out.keyValid = verdicts.find((x) => x !== "VALID") ?? "valid";
  const bound = evse === undefined || (evse !== null && record.readings.every((r) => at(r.time)?.evseIds.includes(evse)));
  out.valid = out.keyValid === "valid" && bound;
  if (!out.valid) {
    out.why = out.keyValid !== "valid" ? `the key was ${out.keyValid} at a reading` : "the key was not bound to the record's EVSE at every reading";
    return out;
  }
  const meterOk = record.readings.every((r) => r.status === "G" && (r.errorFlags ?? "") === "");
  const cdrOk = !outcomesOf(v, "METER_VALUE_CHECK_CDR_KEY").includes("CHECK_OUTCOME_FAIL");
  out.billable = meterOk && cdrOk;
  if (!out.billable) out.why = meterOk ? "the key the CDR carries is not the registry's" : "the meter reported a bad status or an error";
  return out;
}

/**
 * Re-checks a `GetHistory` answer about the identifier asked for (`kind`, `value`): the
 * history is that identifier's complete chain as known at the basis, each entry exactly as
 * proven. Returns the decoded entries, newest first.
 */
export async function checkHistory(response, pinned, kind, value) {
  const evidence = await openEvidence(response.proof, pinned);
  const asOf = Number(response.basis?.logSize ?? 0);
  if (asOf > evidence.checkpoint.size) refuse("the answer's basis is past its checkpoint");
  const wanted = normalValue(kind, value);
  const proof = (response.proof.mapProofs || []).find((m) => KIND_NAMES[m.identifier?.kind] === kind && m.identifier.value === wanted);
  if (!proof) refuse(`the evidence has no map proof for ${value}`);
  const all = evidence.chain(kind, wanted);
  if (all.some((e) => e.position >= asOf)) refuse("the answer is out of date: the registry's log has newer entries about it; check again");
  const chain = all.filter((e) => e.position < asOf);
  const shown = response.entries || [];
  if (response.nextPageToken) refuse("the history has more than one page; the page shows only whole histories");
  if (shown.length !== chain.length) refuse(`the server shows ${shown.length} entries, the evidence proves ${chain.length}`);
  shown.forEach((s, i) => {
    const proven = chain[i];
    if (!proven || Number(s.position) !== proven.position || !equal(fromBase64(s.entry || ""), proven.bytes)) {
      refuse(`entry ${s.position} is not the entry the evidence proves`);
    }
  });
  return { checkpoint: evidence.checkpoint, entries: chain, evidence, asOf };
}
