// The tenant view: pick or create a collection; knowledge base on the left, search on the
// right; the plan's limits and this month's usage alongside.

import { get, post } from "./api.js";
import { fmtNumber, h, replace } from "./dom.js";
import { knowledgeBase } from "./kb.js";
import { searchPanel } from "./search.js";
import { busy, button, card, field, header, notice, toast } from "./ui.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function render(root, { session, onLogout }) {
  document.title = `${session.tenant_id} · embedgate`;
  const state = { collection: null, collections: [], models: [] };
  const limits = planCard();
  const picker = collectionPicker(state, (collection) => select(collection));
  const kb = knowledgeBase({ state, onIndexed: () => refresh(), ensureCollection: (name) => picker.create(name) });
  const search = searchPanel({ state, onSearched: () => limits.refresh() });

  function select(collection) {
    state.collection = collection;
    kb.setCollection(collection);
    search.setCollection(collection);
  }

  async function refresh() {
    await picker.reload();
    limits.refresh();
  }

  root.append(
    header({ title: "Search playground", who: session.tenant_id, badges: ["tenant"], onLogout }),
    h(
      "main",
      { class: "page tenant-page" },
      picker.el,
      h("div", { class: "workspace" }, kb.el, search.el, h("aside", { class: "side" }, limits.el)),
    ),
  );
  Promise.all([picker.reload(), limits.refresh()]).catch((error) => toast(error.message, "error"));
}

function collectionPicker(state, onSelect) {
  const selectEl = h("select", { "data-testid": "collection-select" });
  const summary = h("p", { class: "collection-summary", "aria-live": "polite" });
  const nameInput = h("input", { type: "text", value: "knowledge-base", autocomplete: "off",
    spellcheck: "false", maxlength: 128, "data-testid": "collection-name" });
  const modelSelect = h("select", { "data-testid": "collection-model" });
  const createBtn = button("Create", { type: "submit", class: "btn primary", "data-testid": "collection-create" });
  const status = notice();
  const form = h("form", { class: "inline-form create-collection", hidden: true },
    field("New collection name", nameInput, { hint: "Letters, digits, . _ -" }),
    field("Model", modelSelect),
    h("div", { class: "form-actions" }, createBtn),
  );
  const toggle = button("New collection", { class: "btn ghost", "aria-expanded": "false",
    "data-testid": "collection-new" });
  const setFormOpen = (open) => {
    form.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) nameInput.focus();
  };
  toggle.addEventListener("click", () => setFormOpen(form.hidden));
  selectEl.addEventListener("change", () => {
    const chosen = state.collections.find((c) => c.name === selectEl.value) ?? null;
    describe(chosen);
    onSelect(chosen);
  });

  function describe(collection) {
    replace(summary, collection
      ? [h("strong", {}, fmtNumber(collection.document_count)), " documents · ",
          collection.model, " · ", String(collection.dimensions), " dimensions"]
      : "No collection yet: create one to start.");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!NAME.test(name)) {
      status.show("error", "Use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit.");
      nameInput.focus();
      return;
    }
    status.clear();
    try {
      const created = await busy(createBtn, () =>
        post("/v1/collections", { name, model: modelSelect.value || undefined }));
      toast(`Collection ${created.name} created.`, "success");
      setFormOpen(false);
      await reload(created.name);
    } catch (error) {
      status.show("error", error.message);
    }
  });

  async function reload(preferred) {
    const [list, models] = await Promise.all([
      get("/v1/collections"),
      state.models.length ? { data: state.models } : get("/v1/models"),
    ]);
    state.collections = list.data;
    state.models = models.data;
    // A collection embeds: rerank models (the search's rerank option) are not offered.
    replace(modelSelect, state.models.filter((m) => m.task !== "rerank").map((m) =>
      h("option", { value: m.id }, `${m.id} (${m.dimensions} dims)`)));
    const keep = preferred ?? state.collection?.name;
    replace(selectEl, state.collections.length
      ? state.collections.map((c) => h("option", { value: c.name }, c.name))
      : h("option", { value: "" }, "No collections"));
    selectEl.disabled = !state.collections.length;
    const chosen = state.collections.find((c) => c.name === keep) ?? state.collections[0] ?? null;
    if (chosen) selectEl.value = chosen.name;
    describe(chosen);
    onSelect(chosen);
    if (!chosen) setFormOpen(true);
  }

  const el = h("section", { class: "card collection-bar", "aria-label": "Collection" },
    h("div", { class: "collection-row" },
      field("Collection", selectEl, { cls: "grow" }),
      summary,
      toggle,
    ),
    form,
    status,
  );
  /** The first index of a tenant with no collection: make one, with the default model. */
  async function create(name) {
    const created = await post("/v1/collections", { name });
    toast(`Collection ${created.name} created.`, "success");
    setFormOpen(false);
    await reload(created.name);
    return state.collection;
  }

  return { el, reload, create };
}

const LIMITS = [
  ["rpm", "Requests / minute"],
  ["tpm", "Tokens / minute"],
  ["monthly_token_quota", "Monthly tokens"],
  ["max_inputs_per_request", "Inputs / request"],
  ["max_tokens_per_input", "Tokens / input"],
  ["max_dimensions", "Max dimensions"],
  ["max_concurrency", "Concurrent requests"],
];

function planCard() {
  const body = h("div", { class: "plan-body" }, h("p", { class: "muted" }, "Loading…"));
  const el = card({ title: "Plan & usage", cls: "plan-card", testid: "plan-card" }, body);

  async function refresh() {
    const me = await get("/v1/me");
    const usage = me.usage ?? {};
    const policy = me.policy ?? {};
    const quota = usage.quota ?? policy.monthly_token_quota ?? null;
    const used = usage.tokens ?? 0;
    const pct = quota ? Math.min(100, Math.round((used / quota) * 100)) : null;
    const meter = h("div", { class: "quota-fill" });
    if (pct !== null) meter.style.width = `${pct}%`;
    replace(body,
      h("div", { class: "plan-name" }, h("span", { class: "muted" }, "Plan"),
        h("strong", {}, me.plan || "default")),
      h("h3", { class: "section-title" }, `Usage · ${usage.period ?? "this month"}`),
      h("div", { class: "stats" },
        stat("Tokens", fmtNumber(usage.tokens)),
        stat("Requests", fmtNumber(usage.requests)),
        stat("Inputs", fmtNumber(usage.inputs)),
      ),
      pct === null
        ? h("p", { class: "muted small" }, "No monthly token quota.")
        : h("div", { class: "quota" },
            h("div", { class: `quota-bar ${pct >= 90 ? "hot" : ""}` }, meter),
            h("p", { class: "small" }, `${fmtNumber(used)} of ${fmtNumber(quota)} tokens (${pct}%)`)),
      h("h3", { class: "section-title" }, "Limits"),
      h("dl", { class: "limits" }, LIMITS.map(([key, label]) => [
        h("dt", {}, label),
        h("dd", {}, policy[key] === undefined || policy[key] === null ? "No limit" : fmtNumber(policy[key])),
      ])),
      policy.allowed_models
        ? h("p", { class: "small" }, "Models: ", policy.allowed_models.join(", "))
        : null,
    );
  }
  return { el, refresh };
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "stat-value" }, value),
    h("span", { class: "stat-label" }, label));
}
