// The open tenant's API keys: list, create (the secret is shown once), revoke, rotate.

import { del, get, post, seg } from "./api.js";
import { fmtTime, h, replace } from "./dom.js";
import { busy, button, confirmDialog, copyText, emptyState, field, notice, pill, toast } from "./ui.js";

const ALL_SCOPES = ["embeddings", "search:read", "search:write"];

function scopesCell(scopes) {
  if (ALL_SCOPES.every((scope) => scopes.includes(scope))) return pill("all scopes", "good");
  return h("div", { class: "scopes" }, scopes.map((scope) => pill(scope)));
}

export function keysSection(tenant, onChanged) {
  const base = `/admin/tenants/${seg(tenant.id)}/keys`;
  const nameInput = h("input", { type: "text", autocomplete: "off", maxlength: 200,
    placeholder: "notebooks", "data-testid": "key-name" });
  const submit = button("Create key", { type: "submit", class: "btn primary", "data-testid": "create-key-submit" });
  const reveal = h("div", { class: "secret-box", hidden: true, "data-testid": "new-key-box" });
  const status = notice();
  const rows = h("tbody");

  function showSecret(issued, verb) {
    const code = h("code", { class: "secret", "data-testid": "new-key" }, issued.key);
    const copy = button("Copy", { class: "btn primary small", "data-testid": "copy-key" });
    copy.addEventListener("click", async () => {
      const copied = await copyText(issued.key, code);
      copy.textContent = copied ? "Copied" : "Selected: press Ctrl+C";
    });
    const dismiss = button("Done", { class: "btn ghost small" });
    dismiss.addEventListener("click", () => {
      reveal.hidden = true;
      reveal.replaceChildren(); // the secret leaves the page
    });
    replace(reveal,
      h("p", { class: "secret-title" }, h("strong", {}, `Key ${issued.name ? `“${issued.name}” ` : ""}${verb}.`),
        " Copy it now: it will not be shown again."),
      h("div", { class: "secret-row" }, code, copy, dismiss));
    reveal.hidden = false;
    copy.focus();
  }

  function row(key) {
    const rotate = button("Rotate", { class: "btn ghost small", "data-testid": "key-rotate" });
    const revoke = button("Revoke", { class: "btn danger-ghost small", "data-testid": "key-revoke" });
    rotate.addEventListener("click", async () => {
      const ok = await confirmDialog({ title: `Rotate key ${key.prefix}…?`,
        body: h("p", {}, "A new secret is issued with the same name and scopes; the old key stops working now."),
        confirmLabel: "Rotate" });
      if (!ok) return;
      try {
        const issued = await post(`${base}/${seg(key.id)}/rotate`, { grace_period: 0 });
        showSecret(issued, "rotated");
        await reload();
        onChanged();
      } catch (error) {
        toast(error.message, "error");
      }
    });
    revoke.addEventListener("click", async () => {
      const ok = await confirmDialog({ title: `Revoke key ${key.prefix}…?`,
        body: h("p", {}, "Requests with this key will be refused within seconds. This cannot be undone."),
        confirmLabel: "Revoke", danger: true });
      if (!ok) return;
      try {
        await del(`${base}/${seg(key.id)}`);
        toast("Key revoked.", "success");
        await reload();
        onChanged();
      } catch (error) {
        toast(error.message, "error");
      }
    });
    return h("tr", { "data-testid": "key-row" },
      h("td", {}, h("div", { class: "cell-title" }, key.name || "unnamed"),
        h("code", { class: "cell-sub mono" }, `${key.prefix}…`)),
      h("td", {}, scopesCell(key.scopes ?? [])),
      h("td", { class: "nowrap muted" }, fmtTime(key.created_at)),
      h("td", { class: "nowrap muted" }, key.revoked_at ? `ends ${fmtTime(key.revoked_at)}` : fmtTime(key.last_used_at)),
      h("td", { class: "nowrap actions" }, rotate, revoke));
  }

  async function reload() {
    const keys = (await get(base)).data;
    replace(rows, keys.length ? keys.map(row)
      : h("tr", {}, h("td", { colspan: 5 }, emptyState("No keys", "Create a key for this tenant's applications."))));
  }

  const form = h("form", { class: "inline-form", novalidate: true },
    field("Key name", nameInput, { cls: "grow" }), h("div", { class: "form-actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const issued = await busy(submit, () => post(base, { name: nameInput.value.trim() }));
      nameInput.value = "";
      status.clear();
      showSecret(issued, "created");
      await reload();
      onChanged();
    } catch (error) {
      status.show("error", error.message);
    }
  });

  const el = h("section", { class: "detail-section", "aria-label": "API keys" },
    h("h3", { class: "section-title" }, "API keys"),
    form, status, reveal,
    h("div", { class: "table-wrap" },
      h("table", { class: "table keys-table" },
        h("thead", {}, h("tr", {}, ["Key", "Scopes", "Created", "Last used", ""].map((t) =>
          h("th", { scope: "col" }, t)))),
        rows)));
  return { el, reload };
}
