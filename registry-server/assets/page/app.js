// The lookup page: asks the registry's JSON API for an answer with its evidence, lets
// `verify.js` check that evidence against the registry key pinned in the page, and shows the
// answer in plain words only when the check holds. Texts come from `i18n.json`.

import * as verify from "./verify.js";
import { timeline } from "./timeline.js";

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const pinned = { origin: meta("registry-origin"), keyDer: verify.fromBase64(meta("registry-key")) };

let texts = {};
let lang = document.documentElement.lang || "de";
const state = { check: null, lookup: null, checkpoint: null };

function t(key, ...args) {
  let s = texts[lang]?.[key] ?? texts.en?.[key] ?? key;
  args.forEach((a, i) => (s = s.replaceAll(`{${i}}`, String(a))));
  return s;
}

/** An element with attributes and children (strings become text, never HTML). */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

// ---- formatting --------------------------------------------------------------------------

const time = (us) => (us === null || us === undefined ? "–" : new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "long" }).format(new Date(us / 1000)));
const day = (us) => new Intl.DateTimeFormat(lang, { dateStyle: "medium" }).format(new Date(us / 1000));
const short = (fp) => (fp ? fp.slice(0, 12) : "");
const number = (n, digits) => new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(n);

// ---- the JSON API ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message, violations) {
    super(message);
    this.code = code;
    this.violations = violations;
  }
}

async function call(service, method, body) {
  let response;
  try {
    response = await fetch(`/keyregistry.v1.${service}/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError("unavailable", e.message, []);
  }
  const json = await response.json().catch(() => null);
  if (!response.ok) {
    const violations = (json?.details || []).flatMap((d) => d.debug?.fieldViolations || []);
    throw new ApiError(json?.code ?? String(response.status), json?.message ?? response.statusText, violations);
  }
  return json;
}

// ---- shared pieces -----------------------------------------------------------------------

function errorBox(e) {
  return h(
    "div",
    { class: "box error", role: "alert" },
    h("p", { class: "headline" }, t("serverError")),
    h("p", {}, e.message),
    e.violations?.length ? h("ul", {}, e.violations.map((v) => h("li", {}, h("code", {}, v.field), ": ", v.description))) : null,
  );
}

function refusedBox(reason) {
  return h("div", { class: "box refused", role: "alert" }, h("p", { class: "headline" }, "✗ ", t("refusedHeading")), h("p", {}, t("refusedText")), h("p", {}, h("code", {}, reason)));
}

function checkpointLine(cp) {
  return h("p", { class: "checkpoint" }, t("checkedAgainst", cp.size, verify.toHex(cp.root).slice(0, 16)));
}

const REMEMBERED = `keyregistry.checkpoint.${pinned.origin}`;

/** The last checkpoint this browser accepted from this registry (checked again), or null. */
async function remembered() {
  if (state.checkpoint) return state.checkpoint;
  try {
    const text = localStorage.getItem(REMEMBERED);
    return text ? await verify.openCheckpoint(text, pinned.keyDer, pinned.origin) : null;
  } catch {
    return null;
  }
}

/**
 * Accepts a verified checkpoint only if the registry proves it consistent with the last one
 * this browser saw (RFC 9162 consistency proof), so a registry that rewrote or forked its
 * history is caught; remembers the newer one.
 */
async function accept(cp) {
  const last = await remembered();
  if (last && last.size !== cp.size) {
    const [old, now] = last.size < cp.size ? [last, cp] : [cp, last];
    if (old.size > 0) {
      const proof = await call("AuditService", "GetConsistencyProof", { fromSize: String(old.size), toSize: String(now.size) });
      try {
        await verify.verifyConsistency(old.size, now.size, old.root, now.root, (proof.proof || []).map(verify.fromBase64));
      } catch (e) {
        throw new verify.Refusal(`the registry's checkpoints of ${old.size} and ${now.size} entries are not consistent (${e.message}): its history was rewritten or forked`);
      }
    }
  } else if (last && verify.toHex(last.root) !== verify.toHex(cp.root)) {
    throw new verify.Refusal(`the registry showed two different logs of ${cp.size} entries: its history was forked`);
  }
  if (!last || cp.size >= last.size) {
    state.checkpoint = cp;
    try {
      localStorage.setItem(REMEMBERED, cp.text + cp.signature);
    } catch {
      /* private browsing: remembered for this visit only */
    }
  }
  renderCheckpoint();
}

function renderCheckpoint() {
  const dd = document.getElementById("last-checkpoint");
  const cp = state.checkpoint;
  if (!cp) return;
  dd.removeAttribute("data-i18n");
  dd.replaceChildren(t("checkpointSummary", cp.size, verify.toHex(cp.root)), h("pre", {}, cp.text));
}

// ---- signed meter values -----------------------------------------------------------------

async function check(text) {
  const trimmed = text.trim();
  if (!trimmed) {
    state.check = { empty: true };
    return renderCheck();
  }
  const request = { prove: true };
  let asked;
  if (trimmed.startsWith("{")) {
    request.ocpiSignedData = trimmed;
    asked = { ocpi: trimmed };
  } else {
    asked = trimmed.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
    request.values = asked.map((record, i) => ({ record, label: String(i + 1) }));
  }
  state.check = { busy: true };
  renderCheck();
  try {
    const response = await call("LookupService", "ValidateSignedMeterValues", request);
    try {
      const verified = await verify.checkMeterValues(response, pinned, asked);
      await accept(verified.checkpoint);
      state.check = { response, verified };
    } catch (e) {
      state.check = { response, refusal: e.message };
    }
  } catch (e) {
    state.check = { error: e };
  }
  renderCheck();
}

const CHECK = (c) => c.check.replace("METER_VALUE_CHECK_", "");
const OUTCOME = { CHECK_OUTCOME_PASS: ["✓", "pass"], CHECK_OUTCOME_FAIL: ["✗", "fail"], CHECK_OUTCOME_WARN: ["!", "warn"], CHECK_OUTCOME_SKIP: ["–", "skip"] };

/** Energy between the begin and end readings of the record itself (not the server's copy). */
function energy(readings) {
  const begin = readings.find((r) => r.transaction === "B") ?? readings[0];
  const end = [...readings].reverse().find((r) => r.transaction === "E") ?? readings.at(-1);
  if (!begin || !end || begin === end || begin.unit !== end.unit) return null;
  const digits = Math.max(...[begin.value, end.value].map((v) => (String(v).split(".")[1] || "").length));
  const delta = Number(end.value) - Number(begin.value);
  return isFinite(delta) ? { delta, digits, unit: end.unit, begin, end } : null;
}

function renderValidation(v, mine) {
  // Everything shown comes from the pasted record or the proven entries; the server's words
  // appear only as the reasons of its checks.
  const record = mine.record;
  const failed = (v.checks || []).find((c) => c.outcome === "CHECK_OUTCOME_FAIL");
  const verdict = mine.billable
    ? h("p", { class: "verdict ok" }, "✓ ", t("billable"))
    : h("p", { class: "verdict bad" }, "✗ ", t("notBillable"), failed ? h("span", { class: "why" }, t(`check_${CHECK(failed)}`), ": ", failed.reason) : null);
  const browser = [];
  if (mine.signature === "valid") browser.push(h("li", { class: "pass" }, "✓ ", t("browserSignature", record.algorithm)));
  else if (mine.signature === "invalid") browser.push(h("li", { class: "fail" }, "✗ ", t("browserSignatureInvalid")));
  else if (mine.signature === "server") browser.push(h("li", { class: "skip" }, "– ", t("serverSignature", record.algorithm)));
  if (mine.keyValid === "valid") browser.push(h("li", { class: "pass" }, "✓ ", t("browserKeyValid")));
  else if (mine.keyValid !== "none") browser.push(h("li", { class: "fail" }, "✗ ", t("browserKeyNotValid", t(`verdict_${mine.keyValid}`))));
  if (mine.life) browser.push(h("li", { class: "pass" }, "✓ ", t("browserEntries")));
  const e = energy(record.readings);
  const reg = mine.life?.registration;
  const p = record.payload;
  const facts = [
    [t("chargePoint"), [p.CI || "–", p.CT ? ` (${p.CT})` : ""].join("")],
    [t("operator"), mine.binding?.operatorId || reg?.operatorId || "–"],
    [t("meter"), [p.MS, reg?.manufacturer, reg?.model].filter(Boolean).join(" · ") || "–"],
    [t("energy"), e ? `${number(e.delta, e.digits)} ${e.unit}` : "–"],
    [t("start"), time((e?.begin ?? record.readings[0])?.time)],
    [t("end"), e ? time(e.end.time) : "–"],
    [t("signingKey"), mine.fingerprint ? h("code", {}, short(mine.fingerprint)) : "–"],
  ];
  return h(
    "article",
    { class: "validation" },
    h("h3", {}, t("recordLabel", v.label || "1")),
    verdict,
    h("ul", { class: "browser-checks", "aria-label": t("browserChecks") }, browser),
    h("dl", { class: "facts" }, facts.flatMap(([k, val]) => [h("dt", {}, k), h("dd", {}, val)])),
    h(
      "details",
      {},
      h("summary", {}, t("allChecks")),
      h(
        "ul",
        { class: "checks" },
        (v.checks || []).map((c) => {
          const [icon, cls] = OUTCOME[c.outcome] ?? ["?", "skip"];
          return h("li", { class: cls }, `${icon} `, h("strong", {}, t(`check_${CHECK(c)}`)), c.subject ? ` (${c.subject})` : "", ": ", c.reason);
        }),
      ),
    ),
  );
}

function renderCheck() {
  const out = document.getElementById("check-result");
  const s = state.check;
  if (!s) return out.replaceChildren();
  if (s.empty) return out.replaceChildren(h("p", { class: "box error" }, t("pasteEmpty")));
  if (s.busy) return out.replaceChildren(h("p", { class: "busy" }, t("checking")));
  if (s.error) return out.replaceChildren(errorBox(s.error));
  if (s.refusal) return out.replaceChildren(refusedBox(s.refusal));
  const results = s.response.results || [];
  out.replaceChildren(
    h("p", { class: "box verified" }, "✓ ", t("verifiedInBrowser")),
    ...results.map((v, i) => renderValidation(v, s.verified.results[i])),
    checkpointLine(s.verified.checkpoint),
  );
}

// ---- key history -------------------------------------------------------------------------

const KIND_ENUM = {
  evse: "IDENTIFIER_KIND_EVSE",
  meterSerial: "IDENTIFIER_KIND_METER_SERIAL",
  gatewaySerial: "IDENTIFIER_KIND_GATEWAY_SERIAL",
  key: "IDENTIFIER_KIND_KEY",
};

function guessKind(value) {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return "key";
  if (value.includes("*") || /^[A-Za-z]{2}[A-Za-z0-9]{3}E/.test(value)) return "evse";
  return "meterSerial";
}

async function lookup(value, chosen) {
  value = value.trim();
  if (!value) return;
  const kind = chosen === "auto" ? guessKind(value) : chosen;
  state.lookup = { busy: true };
  renderLookup();
  try {
    const response = await call("LookupService", "GetHistory", { identifier: { kind: KIND_ENUM[kind], value }, prove: true, pageSize: 1000 });
    try {
      const verified = await verify.checkHistory(response, pinned, kind, value);
      await accept(verified.checkpoint);
      state.lookup = { value, kind, verified, authors: await authors(verified.entries), lives: await keyLives(verified.entries, kind) };
    } catch (e) {
      state.lookup = { value, kind, refusal: e.message };
    }
  } catch (e) {
    state.lookup = { error: e };
  }
  renderLookup();
}

/**
 * Which operator each signing key of the entries belongs to, as the registry lists its
 * operators: a name for the author column only (the entries themselves are verified).
 */
async function authors(entries) {
  const operators = new Set(entries.flatMap((e) => e.events.map((ev) => ev.operatorId).filter(Boolean)));
  const out = new Map();
  for (const operatorId of operators) {
    try {
      const op = await call("LookupService", "GetOperator", { operatorId });
      for (const k of op.keys || []) out.set(k.keyId, operatorId);
    } catch {
      /* unknown: the key ID alone is shown */
    }
  }
  return out;
}

/** Per key: what the proven entries say happened to it, oldest first. */
function keysOf(entries) {
  const keys = new Map();
  for (const entry of [...entries].reverse()) {
    for (const ev of entry.events) {
      if (!ev.fingerprint) continue;
      if (!keys.has(ev.fingerprint)) keys.set(ev.fingerprint, []);
      keys.get(ev.fingerprint).push({ ...ev, position: entry.position, recordedAt: entry.recordedAt, signer: entry.signerKeyId });
    }
  }
  return keys;
}

/**
 * Each key's whole life for the picture: an EVSE's or a serial's chain holds only the entries
 * that touched it, while a key's confirmation, rejection or end may link the key alone. So the
 * page asks for each key's own history, proven and checked like the first (at most 20 keys).
 */
async function keyLives(entries, kind) {
  const keys = keysOf(entries);
  if (kind === "key") return keys;
  const lives = new Map();
  for (const fp of [...keys.keys()].slice(0, 20)) {
    const response = await call("LookupService", "GetHistory", { identifier: { kind: KIND_ENUM.key, value: fp }, prove: true, pageSize: 1000 });
    const verified = await verify.checkHistory(response, pinned, "key", fp);
    await accept(verified.checkpoint);
    lives.set(fp, keysOf(verified.entries).get(fp) ?? keys.get(fp));
  }
  return lives;
}

function bindingsOf(events) {
  const first = events[0];
  if (first.kind === "registered") return new verify.KeyLife(first, events).bindings();
  return [];
}

function describe(ev) {
  switch (ev.kind) {
    case "registered":
      return t("evRegistered", ev.operatorId, ev.evseIds.join(", "), [ev.meterSerial, ev.gatewaySerial].filter(Boolean).join(" / "));
    case "ended":
      return t("evEnded", t(`reason_${ev.reason}`), ev.comment || "");
    case "relocated":
      return t("evRelocated", ev.evseIds.join(", "));
    case "takenOver":
      return t("evTakenOver", ev.operatorId, ev.evseIds.join(", "));
    case "released":
      return t("evReleased", ev.toOperatorId);
    case "rejected":
      return t("evRejected", ev.reason);
    default:
      return t(`event_${ev.kind}`);
  }
}

function author(keyId, authors) {
  if (!keyId) return t("authorRegistry");
  const operator = authors?.get(keyId);
  return operator ? t("authorOperator", operator, keyId.slice(0, 8)) : t("authorKey", keyId.slice(0, 8));
}

function renderLookup() {
  const out = document.getElementById("lookup-result");
  const s = state.lookup;
  if (!s) return out.replaceChildren();
  if (s.busy) return out.replaceChildren(h("p", { class: "busy" }, t("checking")));
  if (s.error) return out.replaceChildren(errorBox(s.error));
  if (s.refusal) return out.replaceChildren(refusedBox(s.refusal));
  const { entries, checkpoint } = s.verified;
  if (entries.length === 0) return out.replaceChildren(h("p", { class: "box" }, t("nothingKnown", s.value)), checkpointLine(checkpoint));
  const keys = s.lives ?? keysOf(entries);
  const now = Date.now() * 1000;
  const rows = [...keys.entries()].map(([fp, events]) => ({
    label: short(fp),
    sublabel: [events[0].meterSerial, events[0].manufacturer].filter(Boolean).join(" · "),
    bindings: bindingsOf(events),
    marks: events.map((ev) => ({ at: ev.effectiveAt ?? ev.recordedAt, kind: ev.kind, position: ev.position, title: `#${ev.position} ${t(`event_${ev.kind}`)}: ${describe(ev)}` })),
  }));
  const picture = timeline(rows, { now, formatDay: day, title: t("timelineTitle", s.value) });
  const table = h(
    "table",
    { class: "events" },
    h("caption", {}, t("eventsCaption", s.value)),
    h("thead", {}, h("tr", {}, [t("colEntry"), t("colRecorded"), t("colEvent"), t("colKey"), t("colDetails"), t("colAuthor")].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      entries.flatMap((entry) =>
        entry.events
          .filter((ev) => ev.fingerprint)
          .map((ev) =>
            h(
              "tr",
              {},
              h("td", {}, `#${entry.position}`),
              h("td", {}, time(entry.recordedAt)),
              h("td", {}, t(`event_${ev.kind}`), ev.effectiveAt ? h("div", { class: "small" }, t("effective", time(ev.effectiveAt))) : null),
              h("td", {}, h("code", {}, short(ev.fingerprint))),
              h("td", {}, describe(ev)),
              h("td", {}, author(entry.signerKeyId, s.authors)),
            ),
          ),
      ),
    ),
  );
  out.replaceChildren(
    h("p", { class: "box verified" }, "✓ ", t("historyVerified", entries.length, checkpoint.size)),
    h("div", { class: "picture" }, picture),
    h("ul", { class: "legend" }, h("li", { class: "l-registered" }, t("event_registered")), h("li", { class: "l-confirmed" }, t("event_confirmed")), h("li", { class: "l-move" }, t("legendMove")), h("li", { class: "l-ended" }, t("event_ended"))),
    h("div", { class: "table-wrap" }, table),
    checkpointLine(checkpoint),
  );
}

// ---- language ----------------------------------------------------------------------------

function applyTexts() {
  document.documentElement.lang = lang;
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  for (const b of document.querySelectorAll("[data-lang]")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  renderCheck();
  renderLookup();
  renderCheckpoint();
}

async function start() {
  for (const b of document.querySelectorAll("[data-lang]")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  texts = await (await fetch("/assets/i18n.json")).json();
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked && Object.hasOwn(texts, asked)) {
    lang = asked;
    applyTexts();
  }
  for (const b of document.querySelectorAll("[data-lang]")) {
    b.addEventListener("click", () => {
      lang = b.dataset.lang;
      applyTexts();
    });
  }
  document.getElementById("check-form").addEventListener("submit", (e) => {
    e.preventDefault();
    check(document.getElementById("signed-data").value);
  });
  document.getElementById("lookup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    lookup(document.getElementById("lookup-value").value, document.getElementById("lookup-kind").value);
  });
  document.body.dataset.ready = "true";
}

start();
