// The search column: query, top-k, mode, threshold and an optional rerank stage; ranked
// results with a score bar (the rerank score too, when reranked); a click on a result shows
// the first 50 dimensions of that document's vector.

import { collectionPath, get, post } from "./api.js";
import { fmtNumber, h, replace, s, uid } from "./dom.js";
import { busy, button, card, emptyState, field, notice, spinner } from "./ui.js";

const DIMS_SHOWN = 50;
// The default bar per model, from where its right answers score (cosine): all-MiniLM-L6-v2
// scored right answers 0.34-0.84 and wrong ones 0.00-0.36 on a small handbook (docs/console.md).
const THRESHOLDS = { "all-minilm-l6-v2": 0.3 };
const THRESHOLD = 0.4;
const MODES = [
  ["vector", "Vector (meaning)"],
  ["keyword", "Keyword (BM25)"],
  ["hybrid", "Hybrid"],
];

export function searchPanel({ state, onSearched }) {
  const query = h("input", { type: "search", id: "query-input", autocomplete: "off",
    placeholder: "Ask a question about your knowledge base", "data-testid": "query-input" });
  const topK = h("input", { type: "number", min: 1, max: 100, value: "5", inputmode: "numeric",
    "data-testid": "top-k" });
  const mode = h("select", { "data-testid": "search-mode" },
    MODES.map(([value, label]) => h("option", { value }, label)));
  const threshold = h("input", { type: "number", min: 0, max: 1, step: 0.05, value: String(THRESHOLD),
    inputmode: "decimal", "data-testid": "threshold" });
  const thresholdNote = h("p", { class: "hint threshold-note", "data-testid": "threshold-note" });
  const rerank = rerankOptions();
  let thresholdTouched = false;
  const submit = button("Search", { type: "submit", class: "btn primary", "data-testid": "search-submit" });
  const summary = h("p", { class: "results-summary", "aria-live": "polite" });
  const results = h("ol", { class: "results", "aria-label": "Search results" });
  const status = notice();
  const placeholder = emptyState("No results yet",
    "Index a few entries, then ask a question. Results are ranked by score, best first.");
  const resultsBox = h("div", { class: "results-box" }, placeholder);
  let last = null; // {hits, mode, collection, reranked}

  function thresholdValue() {
    const value = Number.parseFloat(threshold.value);
    return Number.isFinite(value) ? value : THRESHOLD;
  }

  function paint() {
    if (!last) return;
    const cut = thresholdValue();
    const best = Math.max(...last.hits.map((hit) => hit.score), 0);
    results.querySelectorAll("[data-testid=search-result]").forEach((item, index) => {
      const hit = last.hits[index];
      // Cosine scores are read as they are; keyword and fusion scores have no fixed scale,
      // so their bars (and the threshold) use the score relative to the best hit. Reranked
      // results are ranked by the rerank score (a relevance between 0 and 1): the bar's.
      const value = last.reranked ? hit.rerank_score
        : last.mode === "vector" ? hit.score : best > 0 ? hit.score / best : 0;
      const fill = item.querySelector(".score-fill");
      fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
      const above = value >= cut;
      item.classList.toggle("above", above);
      item.classList.toggle("below", !above);
      item.dataset.above = String(above);
    });
  }

  function scoreBox(hit) {
    const bar = h("div", { class: "score-bar", "aria-hidden": "true" }, h("div", { class: "score-fill" }));
    if (hit.rerank_score === undefined) {
      return h("div", { class: "score" },
        h("span", { class: "score-value", "data-testid": "score" }, hit.score.toFixed(3)), bar);
    }
    return h("div", { class: "score reranked" },
      h("span", { class: "score-value", "data-testid": "rerank-score", title: "Rerank score" },
        hit.rerank_score.toFixed(3)),
      bar,
      h("span", { class: "score-retrieval", title: "Retrieval score of the mode" }, "retrieval ",
        h("span", { "data-testid": "score" }, hit.score.toFixed(3))));
  }

  function resultItem(hit, rank, collection) {
    const detail = h("div", { class: "vector-panel", hidden: true });
    const item = h("li", {
      class: "result",
      tabindex: 0,
      role: "button",
      "aria-expanded": "false",
      "data-testid": "search-result",
      "data-score": String(hit.score),
      "data-rerank-score": hit.rerank_score === undefined ? null : String(hit.rerank_score),
      "data-id": hit.id,
    },
      h("div", { class: "result-main" },
        h("span", { class: "rank", "aria-label": `Rank ${rank}` }, String(rank)),
        h("div", { class: "result-body" },
          h("p", { class: "result-text" }, hit.text),
          h("div", { class: "result-meta" },
            h("span", { class: "doc-id" }, hit.id),
            Object.entries(hit.metadata ?? {}).slice(0, 3).map(([key, value]) =>
              h("span", { class: "tag" }, `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)),
          ),
        ),
        scoreBox(hit),
      ),
      detail,
    );
    const toggle = () => openVector(item, detail, hit, collection);
    item.addEventListener("click", (event) => {
      if (!detail.contains(event.target)) toggle();
    });
    item.addEventListener("keydown", (event) => {
      if ((event.key === "Enter" || event.key === " ") && event.target === item) {
        event.preventDefault();
        toggle();
      }
    });
    return item;
  }

  async function openVector(item, detail, hit, collection) {
    const open = item.getAttribute("aria-expanded") === "true";
    item.setAttribute("aria-expanded", String(!open));
    detail.hidden = open;
    if (open || detail.dataset.loaded) return;
    replace(detail, h("p", { class: "muted" }, spinner(), " Loading the vector…"));
    try {
      const doc = await get(collectionPath(collection, `/documents/${encodeURIComponent(hit.id)}?include_vector=true`));
      replace(detail, vectorView(doc.embedding));
      detail.dataset.loaded = "1";
    } catch (error) {
      replace(detail, h("p", { class: "error-text", role: "alert" }, error.message));
    }
  }

  async function run() {
    const collection = state.collection;
    const text = query.value.trim();
    if (!collection) return status.show("error", "Create or pick a collection first.");
    if (!text) {
      query.focus();
      return status.show("error", "Type a question or a few words to search for.");
    }
    const k = Math.min(100, Math.max(1, Number.parseInt(topK.value, 10) || 5));
    const body = { query: text, top_k: k, mode: mode.value };
    const stage = rerank.value();
    if (stage) body.rerank = stage;
    status.clear();
    resultsBox.classList.add("loading");
    const started = performance.now();
    try {
      const out = await busy(submit, () => post(collectionPath(collection, "/search"), body));
      const ms = Math.round(performance.now() - started);
      last = { hits: out.data, mode: mode.value, collection: collection.name, reranked: Boolean(stage) };
      replace(results, out.data.map((hit, index) => resultItem(hit, index + 1, collection)));
      const usage = out.usage ?? {};
      const reranked = stage ? ` (${fmtNumber(usage.rerank_tokens ?? 0)} reranking)` : "";
      replace(summary, out.data.length
        ? `${out.data.length} ${out.data.length === 1 ? "result" : "results"} · ${ms} ms · ${fmtNumber(usage.total_tokens ?? 0)} tokens${reranked}`
        : "");
      replace(resultsBox, out.data.length ? results
        : emptyState("Nothing found", "The collection has no documents yet, or none match these keywords."));
      paint();
      onSearched();
    } catch (error) {
      status.show("error", error.message);
    } finally {
      resultsBox.classList.remove("loading");
    }
  }

  const form = h("form", { class: "search-form", novalidate: true, role: "search" },
    h("div", { class: "query-row" },
      h("label", { for: "query-input", class: "sr-label" }, "Query"),
      query,
      submit),
    h("div", { class: "search-options" },
      field("Top-k", topK, { cls: "compact" }),
      field("Mode", mode, { cls: "compact" }),
      field("Threshold", threshold, { cls: "compact" }),
      h("div", { class: "legend", "aria-hidden": "true" },
        h("span", { class: "swatch above" }), "at or above",
        h("span", { class: "swatch below" }), "below"),
    ),
    rerank.el,
    thresholdNote,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  threshold.addEventListener("input", () => {
    thresholdTouched = true;
    paint();
  });

  function defaultThreshold(collection) {
    const model = collection?.model;
    const value = THRESHOLDS[model] ?? THRESHOLD;
    if (!thresholdTouched) threshold.value = String(value);
    thresholdNote.textContent = `Green: score at or above the threshold. In vector mode the score is the cosine similarity, whose scale depends on the model${model ? `: the default ${value} suits ${model}` : ""}.`;
  }

  const el = card({
    title: "Search",
    subtitle: "Ranked by similarity to your query. Click a result to see its vector.",
    cls: "search-card",
    testid: "search-card",
  }, form, status, summary, resultsBox);

  return {
    el,
    setCollection(collection) {
      submit.disabled = !collection;
      defaultThreshold(collection);
      rerank.setModels(state.models);
      if (last && last.collection !== collection?.name) {
        last = null;
        summary.textContent = "";
        replace(resultsBox, placeholder);
      }
    },
  };
}

/** The rerank stage's options: off, or a rerank model the tenant may use (from /v1/models)
 * and how many candidates to rerank. Disabled, with the reason, when there is none. */
function rerankOptions() {
  const model = h("select", { "data-testid": "rerank-model" }, h("option", { value: "" }, "Off"));
  const candidates = h("input", { type: "number", min: 1, inputmode: "numeric",
    placeholder: "4 × top-k", "data-testid": "rerank-candidates", disabled: true });
  const note = h("p", { class: "hint rerank-note", "data-testid": "rerank-note" });
  let known = null;
  model.addEventListener("change", () => {
    candidates.disabled = !model.value;
    describe();
  });

  function describe() {
    note.textContent = !model.options.length || model.disabled
      ? "Rerank is not available: this server has no rerank model your plan allows."
      : model.value
        ? "Retrieves the candidates by the mode, then reranks them with the model: results are ranked by the rerank score (shown with the retrieval score)."
        : "Rerank: off. Pick a rerank model to rerank the retrieved candidates.";
  }

  function setModels(models) {
    const names = models.filter((m) => m.task === "rerank").map((m) => m.id);
    if (known !== null && names.join("\n") === known) return;
    known = names.join("\n");
    const keep = model.value;
    replace(model, h("option", { value: "" }, "Off"), names.map((name) => h("option", { value: name }, name)));
    model.value = names.includes(keep) ? keep : "";
    model.disabled = !names.length;
    candidates.disabled = !model.value;
    describe();
  }

  function value() {
    if (model.disabled || !model.value) return null;
    const stage = { model: model.value };
    const count = Number.parseInt(candidates.value, 10);
    if (Number.isFinite(count)) stage.candidates = count;
    return stage;
  }

  describe();
  const el = h("div", { class: "search-options rerank-options" },
    field("Rerank", model, { cls: "compact rerank-model" }),
    field("Candidates", candidates, { cls: "compact" }),
    note);
  return { el, setModels, value };
}

/** The first dimensions of a vector: a small bar chart around zero, then the numbers. */
function vectorView(vector) {
  const shown = vector.slice(0, DIMS_SHOWN);
  const peak = Math.max(...shown.map(Math.abs), 1e-9);
  const width = 500;
  const height = 80;
  const step = width / shown.length;
  const mid = height / 2;
  const titleId = uid("vec");
  const chart = s("svg", { class: "vector-chart", viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-labelledby": titleId },
    s("title", { id: titleId }, `First ${shown.length} dimensions as bars`),
    s("line", { x1: 0, x2: width, y1: mid, y2: mid, class: "axis" }),
    shown.map((value, i) => {
      const bar = (Math.abs(value) / peak) * (mid - 2);
      return s("rect", { x: i * step + 1, width: Math.max(step - 2, 1), y: value >= 0 ? mid - bar : mid,
        height: Math.max(bar, 0.5), class: value >= 0 ? "pos" : "neg" });
    }),
  );
  return h("div", { class: "vector", "data-testid": "vector-view" },
    h("p", { class: "vector-title" },
      h("strong", {}, `First ${shown.length} of ${vector.length} dimensions`),
      h("span", { class: "muted" }, " · unit length, so each value is between -1 and 1")),
    chart,
    h("ol", { class: "dims", "data-testid": "vector-dims" },
      shown.map((value, i) => h("li", { class: value >= 0 ? "dim pos" : "dim neg", title: `dimension ${i}` },
        value.toFixed(4)))),
  );
}
