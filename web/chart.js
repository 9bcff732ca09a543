// Small SVG charts drawn by hand (no library): horizontal bars and time lines.
// Colours come from CSS classes so both themes apply.

import { s } from "./dom.js";

/** Horizontal bars: rows of {label, value, text}; one bar per row. */
export function barChart(rows, { width = 640, barHeight = 18, gap = 6, labelWidth = 180 } = {}) {
  const max = Math.max(0, ...rows.map((r) => r.value || 0)) || 1;
  const height = rows.length * (barHeight + gap) + gap;
  const svg = s("svg", {
    class: "chart bars",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
  });
  const plot = width - labelWidth - 90;
  rows.forEach((r, i) => {
    const y = gap + i * (barHeight + gap);
    const w = Math.max(1, ((r.value || 0) / max) * plot);
    const label = r.label.length > 26 ? `${r.label.slice(0, 25)}…` : r.label;
    svg.append(
      s("text", { x: labelWidth - 8, y: y + barHeight * 0.72, "text-anchor": "end", class: "label" }, label),
      s("rect", { x: labelWidth, y, width: w, height: barHeight, rx: 2, class: r.cls || "bar" }, s("title", {}, `${r.label}: ${r.text}`)),
      s("text", { x: labelWidth + w + 6, y: y + barHeight * 0.72, class: "value" }, r.text),
    );
  });
  return svg;
}

/**
 * Lines over time. `series`: [{name, cls, points: [{t (ms), v (0..1)}]}]; `marks`:
 * times (ms) drawn as red ticks (429s). The y axis is a percentage of the limit.
 */
export function timeChart(series, marks, { width = 640, height = 180, from, to } = {}) {
  const pad = { l: 44, r: 10, t: 10, b: 24 };
  const all = series.flatMap((x) => x.points.map((p) => p.t)).concat(marks);
  const t0 = from ?? Math.min(...all);
  const t1 = Math.max(to ?? Math.max(...all), t0 + 1);
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - Math.max(0, Math.min(1, v))) * (height - pad.t - pad.b);
  const svg = s("svg", { class: "chart time", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(
      s("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, `${v * 100}%`),
    );
  }
  const long = t1 - t0 > 20 * 3600_000;
  const fmt = (t) => new Date(t).toLocaleString(undefined, long
    ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }
    : { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  svg.append(
    s("text", { x: pad.l, y: height - 6, class: "axis" }, fmt(t0)),
    s("text", { x: width - pad.r, y: height - 6, "text-anchor": "end", class: "axis" }, fmt(t1)),
  );
  for (const m of marks) {
    svg.append(s("line", { x1: x(m), x2: x(m), y1: pad.t, y2: height - pad.b, class: "mark-429" }, s("title", {}, `429 at ${new Date(m).toLocaleString()}`)));
  }
  for (const line of series) {
    if (!line.points.length) continue;
    const d = line.points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: `line ${line.cls}`, fill: "none" }, s("title", {}, line.name)));
    if (line.points.length === 1) {
      const p = line.points[0];
      svg.append(s("circle", { cx: x(p.t), cy: y(p.v), r: 3, class: `dot ${line.cls}` }));
    }
  }
  return svg;
}
