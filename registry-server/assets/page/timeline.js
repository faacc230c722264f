// The timeline picture of the lookup page: one row per key, its bindings as bars coloured by
// operator, its events as marks with their entry numbers. Built as SVG from the entries the
// verifier proved; the table under it says the same in words for screen readers.

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1b6ca8", "#c06014", "#2e8540", "#7b3fa0", "#a8321b", "#4a6670"];

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * rows: [{ label, bindings: [{ from, until, operatorId, evseIds }], marks: [{ at, kind, title }] }]
 * with times in microseconds; `format(t)` writes a time for axis ticks, `title` names the picture.
 */
export function timeline(rows, { now, formatDay, title }) {
  const times = rows.flatMap((r) => [...r.bindings.flatMap((b) => [b.from, b.until ?? now]), ...r.marks.map((m) => m.at)]).filter((t) => t !== null && t !== undefined);
  let start = Math.min(...times);
  let end = Math.max(now, ...times);
  if (!isFinite(start) || end <= start) {
    start = now - 86400e6;
    end = now;
  }
  const pad = (end - start) * 0.03;
  start -= pad;
  end += pad;
  const left = 190;
  const width = 900;
  const rowHeight = 46;
  const top = 10;
  const height = top + rows.length * rowHeight + 34;
  const x = (t) => left + ((t - start) / (end - start)) * (width - left - 10);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "timeline", "aria-label": title });
  svg.append(el("title", {}, title));
  const operators = [...new Set(rows.flatMap((r) => r.bindings.map((b) => b.operatorId)))];
  const colour = (op) => COLOURS[operators.indexOf(op) % COLOURS.length];

  // Axis: about five ticks on whole days.
  const axisY = top + rows.length * rowHeight + 6;
  svg.append(el("line", { x1: left, x2: width - 10, y1: axisY, y2: axisY, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const t = start + ((end - start) * i) / 4;
    svg.append(el("line", { x1: x(t), x2: x(t), y1: top, y2: axisY + 4, class: "grid" }));
    svg.append(el("text", { x: x(t), y: axisY + 20, class: "tick", "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, formatDay(t)));
  }
  svg.append(el("line", { x1: x(now), x2: x(now), y1: top, y2: axisY, class: "now" }));

  rows.forEach((row, i) => {
    const y = top + i * rowHeight;
    svg.append(el("text", { x: 4, y: y + 18, class: "row-label" }, row.label));
    if (row.sublabel) svg.append(el("text", { x: 4, y: y + 34, class: "row-sublabel" }, row.sublabel));
    for (const b of row.bindings) {
      const x0 = x(b.from);
      const x1 = x(b.until ?? now);
      const bar = el("rect", { x: x0, y: y + 8, width: Math.max(2, x1 - x0), height: 18, rx: 3, fill: colour(b.operatorId), class: "binding" });
      bar.append(el("title", {}, `${b.operatorId}: ${b.evseIds.join(", ")}`));
      svg.append(bar);
      if (x1 - x0 > 120) svg.append(el("text", { x: x0 + 6, y: y + 21, class: "bar-label" }, b.evseIds.join(", ")));
    }
    for (const m of row.marks) {
      const cx = x(m.at);
      const cy = y + 34;
      const shape =
        m.kind === "ended" || m.kind === "rejected"
          ? el("rect", { x: cx - 5, y: cy - 5, width: 10, height: 10, class: `mark mark-${m.kind}` })
          : el("circle", { cx, cy, r: 5, class: `mark mark-${m.kind}` });
      shape.append(el("title", {}, m.title));
      svg.append(shape);
      svg.append(el("text", { x: cx + 7, y: cy + 4, class: "mark-label" }, `#${m.position}`));
    }
  });
  return svg;
}
