// The knowledge-base column: paste entries or upload a file, then index them in batches.

import { collectionPath, post } from "./api.js";
import { fmtNumber, h, replace, sleep } from "./dom.js";
import { batches, fromFile, fromLines, shortEntries, SHORT, unique } from "./entries.js";
import { button, card, notice, progress, spinner } from "./ui.js";

const BATCH = 64;
const DEFAULT_COLLECTION = "knowledge-base";
const RETRIES = 8;

export function knowledgeBase({ state, onIndexed, ensureCollection }) {
  const input = h("textarea", {
    id: "kb-input",
    rows: 12,
    spellcheck: "false",
    "data-testid": "kb-input",
    "aria-describedby": "kb-help",
    placeholder:
      "Employees get 25 days of paid leave.\nExpenses are reimbursed within 30 days.\n员工每年享有二十五天带薪年假。",
  });
  const counter = h("span", { class: "counter", "aria-live": "polite" }, "0 entries");
  const warning = h("div", { class: "notice warn", "data-testid": "kb-warning", hidden: true,
    role: "status" });
  let fileDocs = [];
  let current = null; // the collection's name
  let fileName = null;
  const fileChip = h("div", { class: "file-chip", hidden: true });
  const fileInput = h("input", { type: "file", id: "kb-file", class: "visually-hidden",
    accept: ".txt,.md,.markdown,.jsonl,.ndjson,text/plain,text/markdown", "data-testid": "kb-file" });
  const fileLabel = h("label", { for: "kb-file", class: "btn ghost file-button" }, "Upload file");
  const submit = button("Index entries", { type: "submit", class: "btn primary", "data-testid": "kb-submit" });
  const bar = progress("Indexing progress");
  const progressText = h("span", { class: "progress-text" });
  const progressBox = h("div", { class: "progress-box", hidden: true, "data-testid": "kb-progress",
    "aria-live": "polite" }, h("div", { class: "progress-line" }, spinner(), progressText), bar);
  const status = notice();
  status.setAttribute("data-testid", "kb-status");
  // Said inline, not on hover: a first-time tenant has no collection, and indexing makes one.
  const firstRun = h("p", { class: "hint first-run", "data-testid": "kb-first-run", hidden: true });

  const allDocs = () => unique([...fromLines(input.value), ...fileDocs]);

  function update() {
    const docs = allDocs();
    counter.textContent = `${fmtNumber(docs.length)} ${docs.length === 1 ? "entry" : "entries"}`;
    const short = shortEntries(docs);
    warning.hidden = !short.length;
    if (short.length) {
      replace(warning,
        h("strong", {}, `${short.length} ${short.length === 1 ? "entry is" : "entries are"} shorter than ${SHORT} characters`),
        " and may match poorly: ",
        h("span", { class: "short-list" }, short.slice(0, 8).map((text) => h("q", {}, text))),
        short.length > 8 ? ` and ${short.length - 8} more` : "");
    }
    submit.disabled = !docs.length;
    firstRun.hidden = Boolean(state.collection);
    replace(firstRun, "No collection yet: ", h("strong", {}, "Index entries"),
      ` creates “${DEFAULT_COLLECTION}” first.`);
  }

  function setFile(name, docs) {
    fileName = name;
    fileDocs = docs;
    fileChip.hidden = !name;
    if (name) {
      const remove = button("Remove", { class: "btn ghost small", "aria-label": `Remove ${name}` });
      remove.addEventListener("click", () => {
        setFile(null, []);
        fileInput.value = "";
      });
      replace(fileChip, h("span", { class: "file-name" }, name),
        h("span", { class: "muted" }, ` · ${fmtNumber(docs.length)} entries`), remove);
    }
    update();
  }

  fileInput.addEventListener("change", async () => {
    const file = fileInput.files[0];
    if (!file) return;
    try {
      setFile(file.name, await fromFile(file));
      status.clear();
    } catch (error) {
      setFile(null, []);
      status.show("error", error.message);
    }
  });
  input.addEventListener("input", update);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  async function upsert(collection, docs) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await post(collectionPath(collection, "/documents"), { documents: docs });
      } catch (error) {
        if (![429, 503].includes(error.status) || attempt >= RETRIES) throw error;
        const wait = error.retryAfter ?? 1;
        progressText.textContent = `Waiting ${wait} s for the rate limit…`;
        await sleep(wait * 1000);
      }
    }
  }

  async function index() {
    const docs = allDocs();
    const counts = { created: 0, updated: 0, unchanged: 0 };
    let tokens = 0;
    let done = 0;
    status.clear();
    progressBox.hidden = false;
    progressBox.classList.remove("done");
    bar.set(0, docs.length);
    submit.disabled = true;
    let collection = state.collection;
    try {
      collection ??= await ensureCollection(DEFAULT_COLLECTION);
      for (const batch of batches(docs, BATCH)) {
        progressText.textContent = `Indexing ${fmtNumber(done)} of ${fmtNumber(docs.length)} entries…`;
        const out = await upsert(collection, batch);
        for (const item of out.data) counts[item.status] = (counts[item.status] ?? 0) + 1;
        tokens += out.usage?.total_tokens ?? 0;
        done += batch.length;
        bar.set(done, docs.length);
      }
      progressBox.hidden = true;
      status.show("success",
        h("strong", {}, `Indexed ${fmtNumber(done)} ${done === 1 ? "entry" : "entries"} into ${collection.name}.`),
        ` ${fmtNumber(counts.created)} new, ${fmtNumber(counts.updated)} updated, ` +
          `${fmtNumber(counts.unchanged)} unchanged · ${fmtNumber(tokens)} tokens.`);
      onIndexed();
    } catch (error) {
      progressBox.hidden = true;
      const where = done ? ` ${fmtNumber(done)} of ${fmtNumber(docs.length)} entries were indexed before it.` : "";
      status.show("error", `${error.message}${where}`);
    } finally {
      update();
    }
  }

  const form = h("form", { class: "kb-form", novalidate: true },
    h("label", { for: "kb-input", class: "sr-label" }, "Entries, one per line"),
    input,
    h("div", { class: "kb-tools" }, counter, h("div", { class: "kb-upload" }, fileInput, fileLabel)),
    fileChip,
    warning,
    progressBox,
    status,
    firstRun,
    h("div", { class: "form-actions" },
      h("span", { class: "hint" }, h("kbd", {}, "Ctrl"), "+", h("kbd", {}, "Enter"), " to index"),
      submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!submit.disabled) index();
  });
  const el = card({
    title: "Knowledge base",
    subtitle: "One entry per line, or upload a .txt, .md or .jsonl file.",
    cls: "kb-card",
    testid: "kb-card",
  }, h("p", { id: "kb-help", class: "visually-hidden" },
    "Each non-empty line becomes one document. Press Control and Enter to index."), form);

  return {
    el,
    setCollection(collection) {
      if (collection?.name !== current) status.clear(); // a reload keeps the last result
      current = collection?.name;
      update();
    },
  };
}
