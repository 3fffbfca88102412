// Tenants: the list with its create form, and the open tenant's detail panel.

import { del, get, patch, post, seg } from "./api.js";
import { keysSection } from "./admin_keys.js";
import { usageSection } from "./chart.js";
import { fmtTime, h, replace } from "./dom.js";
import { busy, button, card, confirmDialog, emptyState, field, notice, pill, toast } from "./ui.js";

const TENANT_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const POLICY_FIELDS = [
  "allowed_models", "max_dimensions", "allow_instructions", "instruction_allowlist",
  "blocked_terms", "max_inputs_per_request", "max_tokens_per_input", "rpm", "tpm", "key_rpm",
  "key_tpm", "monthly_token_quota", "max_concurrency", "ip_allowlist", "priority",
];

const statusPill = (status) => pill(status, status === "active" ? "good" : "warn");

export function tenantList({ onOpen }) {
  const idInput = h("input", { type: "text", autocomplete: "off", spellcheck: "false",
    maxlength: 63, placeholder: "team-a", "data-testid": "create-tenant-id" });
  const nameInput = h("input", { type: "text", autocomplete: "off", placeholder: "optional",
    maxlength: 200, "data-testid": "create-tenant-name" });
  const planInput = h("input", { type: "text", autocomplete: "off", placeholder: "the default plan",
    maxlength: 63, "data-testid": "create-tenant-plan" });
  const submit = button("Create tenant", { type: "submit", class: "btn primary",
    "data-testid": "create-tenant-submit" });
  const status = notice();
  const rows = h("tbody");
  const count = h("span", { class: "count" });
  let openId = null;

  const form = h("form", { class: "create-tenant", novalidate: true },
    field("Tenant id", idInput, { hint: "a-z, 0-9 and -" }),
    field("Name", nameInput),
    field("Plan", planInput),
    h("div", { class: "form-actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = idInput.value.trim();
    if (!TENANT_ID.test(id)) {
      status.show("error", "A tenant id is 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit.");
      idInput.focus();
      return;
    }
    const body = { id };
    if (nameInput.value.trim()) body.name = nameInput.value.trim();
    if (planInput.value.trim()) body.plan = planInput.value.trim();
    try {
      const tenant = await busy(submit, () => post("/admin/tenants", body));
      status.clear();
      form.reset();
      toast(`Tenant ${tenant.id} created.`, "success");
      await reload(tenant.id);
      onOpen(tenant);
    } catch (error) {
      status.show("error", error.message);
    }
  });

  function row(tenant) {
    const tr = h("tr", { class: `tenant-row ${tenant.id === openId ? "selected" : ""}`, tabindex: 0,
      "data-testid": "tenant-row", "data-tenant": tenant.id,
      "aria-selected": String(tenant.id === openId) },
      h("td", {}, h("div", { class: "cell-title" }, tenant.id),
        tenant.name ? h("div", { class: "cell-sub" }, tenant.name) : null),
      h("td", {}, tenant.plan || "default"),
      h("td", {}, statusPill(tenant.status)),
      h("td", { class: "nowrap muted" }, fmtTime(tenant.created_at)));
    const open = () => {
      openId = tenant.id;
      rows.querySelectorAll("tr").forEach((r) => {
        r.classList.toggle("selected", r === tr);
        r.setAttribute("aria-selected", String(r === tr));
      });
      onOpen(tenant);
    };
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        open();
      }
    });
    return tr;
  }

  async function reload(selectId) {
    if (selectId !== undefined) openId = selectId;
    const tenants = [];
    let after = null;
    for (;;) { // every page: an operator's list is small, but must be complete
      const page = await get(`/admin/tenants?limit=1000${after ? `&after=${seg(after)}` : ""}`);
      tenants.push(...page.data);
      if (!page.has_more || !page.data.length) break;
      after = page.data[page.data.length - 1].id;
    }
    count.textContent = String(tenants.length);
    replace(rows, tenants.length ? tenants.map(row)
      : h("tr", {}, h("td", { colspan: 4 }, emptyState("No tenants yet", "Create the first one above."))));
  }

  const el = card({ title: "Tenants", subtitle: "Teams or customers sharing this server.",
    actions: count, cls: "tenants-card", testid: "tenants-card" },
    form, status,
    h("div", { class: "table-wrap" },
      h("table", { class: "table" },
        h("caption", { class: "visually-hidden" }, "Tenants; select a row to open it"),
        h("thead", {}, h("tr", {}, ["Tenant", "Plan", "Status", "Created"].map((t) => h("th", { scope: "col" }, t)))),
        rows)));
  return { el, reload };
}

export function tenantDetail({ onChanged }) {
  const body = h("div", { class: "detail-body" },
    emptyState("No tenant open", "Select a tenant in the list to manage its keys, plan and usage."));
  const el = card({ cls: "detail-card", testid: "tenant-detail" }, body);
  let current = null;

  async function open(tenant) {
    current = tenant;
    const keys = keysSection(tenant, () => onChanged(current));
    const usage = usageSection(tenant);
    replace(body, detailHead(tenant), keys.el, usage.el, policySection(tenant, changed));
    el.scrollIntoView({ block: "nearest", behavior: "smooth" });
    await Promise.all([keys.reload(), usage.reload()]).catch((error) => toast(error.message, "error"));
  }

  async function changed(tenant) {
    onChanged(tenant);
    if (tenant) await open(tenant);
    else {
      current = null;
      replace(body, emptyState("No tenant open", "Select a tenant in the list to manage its keys, plan and usage."));
    }
  }

  function detailHead(tenant) {
    const suspended = tenant.status === "suspended";
    const toggle = button(suspended ? "Resume" : "Suspend", {
      class: `btn ${suspended ? "primary" : "ghost"}`, "data-testid": "tenant-suspend" });
    toggle.addEventListener("click", async () => {
      try {
        const next = await busy(toggle, () =>
          patch(`/admin/tenants/${seg(tenant.id)}`, { status: suspended ? "active" : "suspended" }));
        toast(`${tenant.id} ${suspended ? "resumed" : "suspended"}.`, "success");
        await changed(next);
      } catch (error) {
        toast(error.message, "error");
      }
    });
    const remove = button("Delete", { class: "btn danger-ghost", "data-testid": "tenant-delete" });
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog({
        title: `Delete tenant ${tenant.id}?`,
        body: h("p", {}, "This erases the tenant, its keys, and all of its collections and documents. It cannot be undone."),
        confirmLabel: "Delete tenant",
        danger: true,
        confirmText: tenant.id,
      });
      if (!ok) return;
      try {
        await del(`/admin/tenants/${seg(tenant.id)}`);
        toast(`Tenant ${tenant.id} deleted.`, "success");
        await changed(null);
      } catch (error) {
        toast(error.message, "error");
      }
    });
    return h("div", { class: "detail-head" },
      h("div", {},
        h("h2", { class: "detail-title" }, tenant.id, " ", statusPill(tenant.status)),
        h("p", { class: "card-sub" }, `${tenant.name || "No display name"} · plan ${tenant.plan || "default"} · created ${fmtTime(tenant.created_at)}`)),
      h("div", { class: "card-actions" }, toggle, remove));
  }

  return { el, open };
}

/** Parse the policy editor: an object of known fields, or an error message. */
function parsePolicy(text) {
  let value;
  try {
    value = text.trim() ? JSON.parse(text) : {};
  } catch (error) {
    return { error: `Not valid JSON: ${error.message}` };
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    return { error: "The policy must be a JSON object, like {\"rpm\": 600}." };
  }
  const unknown = Object.keys(value).filter((key) => !POLICY_FIELDS.includes(key));
  if (unknown.length) return { error: `Unknown policy field: ${unknown.join(", ")}.` };
  return { value };
}

function policySection(tenant, changed) {
  const name = h("input", { type: "text", value: tenant.name ?? "", maxlength: 200, "data-testid": "tenant-name" });
  const plan = h("input", { type: "text", value: tenant.plan ?? "", maxlength: 63, "data-testid": "tenant-plan" });
  const editor = h("textarea", { class: "code", rows: 5, spellcheck: "false", "data-testid": "tenant-policy",
    value: JSON.stringify(tenant.policy ?? {}, null, 2) });
  const check = h("p", { class: "hint", "aria-live": "polite" });
  const save = button("Save changes", { type: "submit", class: "btn primary", "data-testid": "tenant-save" });
  const status = notice();
  const validate = () => {
    const parsed = parsePolicy(editor.value);
    check.textContent = parsed.error ?? "Valid policy. Unset fields fall back to the plan.";
    check.classList.toggle("error-text", Boolean(parsed.error));
    editor.setAttribute("aria-invalid", String(Boolean(parsed.error)));
    save.disabled = Boolean(parsed.error);
    return parsed;
  };
  editor.addEventListener("input", validate);
  validate();
  const form = h("form", { class: "policy-form", novalidate: true },
    h("div", { class: "two" }, field("Display name", name), field("Plan", plan)),
    field("Policy overrides (JSON)", editor),
    check, status,
    h("div", { class: "form-actions" }, save));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const parsed = validate();
    if (parsed.error) return;
    const body = { policy: parsed.value };
    if (name.value.trim() !== (tenant.name ?? "")) body.name = name.value.trim();
    if (plan.value.trim()) body.plan = plan.value.trim();
    try {
      const next = await busy(save, () => patch(`/admin/tenants/${seg(tenant.id)}`, body));
      toast(`${tenant.id} saved.`, "success");
      await changed(next);
    } catch (error) {
      status.show("error", error.message);
    }
  });
  const effective = Object.entries(tenant.effective_policy ?? {});
  return h("section", { class: "detail-section", "aria-label": "Plan and policy" },
    h("h3", { class: "section-title" }, "Plan & policy"),
    form,
    h("details", { class: "effective" },
      h("summary", {}, "Effective policy (plan defaults with these overrides)"),
      effective.length
        ? h("dl", { class: "limits" }, effective.map(([key, value]) => [h("dt", {}, key),
            h("dd", {}, typeof value === "object" ? JSON.stringify(value) : String(value))]))
        : h("p", { class: "muted small" }, "No limits: every field is unset.")));
}
