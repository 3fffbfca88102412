// Usage per day as an SVG bar chart, drawn here: no chart library, no external URL.

import { get, seg } from "./api.js";
import { fmtCompact, fmtNumber, h, replace, s, uid } from "./dom.js";
import { button } from "./ui.js";

const DAYS = 30;
const W = 640;
const H = 200;
const PAD = { top: 12, right: 8, bottom: 26, left: 44 };

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

/** The last DAYS UTC days, oldest first, each with the report's row or zeros. */
function fillDays(rows, now = new Date()) {
  const byDay = new Map(rows.map((row) => [row.start.slice(0, 10), row]));
  const days = [];
  for (let i = DAYS - 1; i >= 0; i -= 1) {
    const day = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - i));
    const key = isoDay(day);
    const row = byDay.get(key);
    days.push({ day: key, tokens: row?.tokens ?? 0, requests: row?.requests ?? 0,
      errors: row?.errors ?? 0, inputs: row?.inputs ?? 0 });
  }
  return days;
}

/** A "nice" axis maximum: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= value);
}

export function barChart(days, metric, label) {
  const max = niceMax(Math.max(...days.map((d) => d[metric])));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / days.length;
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  const titleId = uid("chart");
  const grid = [0, 0.5, 1].map((f) => [
    s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(max * f), y2: y(max * f), class: "grid" }),
    s("text", { x: PAD.left - 6, y: y(max * f) + 4, class: "axis-label end" }, fmtCompact(max * f)),
  ]);
  const bars = days.map((d, i) => {
    const height = Math.max((d[metric] / max) * plotH, d[metric] > 0 ? 1.5 : 0);
    return s("rect", { x: PAD.left + i * step + step * 0.15, y: PAD.top + plotH - height,
      width: step * 0.7, height, rx: 2, class: d.errors && metric === "requests" ? "bar has-errors" : "bar" },
      s("title", {}, `${d.day}: ${fmtNumber(d.tokens)} tokens, ${fmtNumber(d.requests)} requests, ${fmtNumber(d.errors)} errors`));
  });
  const ticks = days.map((d, i) => ((days.length - 1 - i) % 7 === 0
    ? s("text", { x: PAD.left + i * step + step / 2, y: H - 8, class: "axis-label mid" }, d.day.slice(5))
    : null));
  return s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": titleId,
    "data-testid": "usage-chart" },
    s("title", { id: titleId }, label), grid, bars, ticks);
}

export function usageSection(tenant) {
  const holder = h("div", { class: "chart-holder" }, h("p", { class: "muted" }, "Loading usage…"));
  const totals = h("div", { class: "chart-totals" });
  let metric = "tokens";
  let days = null;
  const switches = ["tokens", "requests"].map((name) => {
    const b = button(name === "tokens" ? "Tokens" : "Requests", { class: "seg-btn", "aria-pressed": String(name === metric) });
    b.addEventListener("click", () => {
      metric = name;
      switches.forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
      draw();
    });
    return b;
  });

  function draw() {
    if (!days) return;
    replace(holder, barChart(days, metric, `${metric} per day for ${tenant.id}, last ${DAYS} days`));
  }

  async function reload() {
    const start = new Date(Date.now() - (DAYS - 1) * 86400000);
    const report = await get(`/admin/usage?tenant=${seg(tenant.id)}&start=${isoDay(start)}&granularity=day`);
    days = fillDays(report.data ?? []);
    const sum = (key) => days.reduce((total, d) => total + d[key], 0);
    replace(totals,
      h("span", {}, h("strong", {}, fmtNumber(sum("tokens"))), " tokens"),
      h("span", {}, h("strong", {}, fmtNumber(sum("requests"))), " requests"),
      h("span", {}, h("strong", {}, fmtNumber(sum("errors"))), " errors"));
    draw();
  }

  const el = h("section", { class: "detail-section", "aria-label": "Usage" },
    h("div", { class: "section-head" },
      h("h3", { class: "section-title" }, `Usage · last ${DAYS} days`),
      h("div", { class: "segmented", role: "group", "aria-label": "Metric" }, switches)),
    totals, holder);
  return { el, reload };
}
