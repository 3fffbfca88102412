// The audit log, newest first, filtered by tenant and event.

import { get } from "./api.js";
import { fmtTime, h, replace } from "./dom.js";
import { busy, button, card, emptyState, field, notice, pill } from "./ui.js";

const EVENTS = [
  "tenant.created", "tenant.updated", "tenant.deleted", "key.created", "key.rotated",
  "key.revoked", "auth.failed", "policy.denied", "limit.exceeded", "console.login",
  "console.logout",
];

function tone(event) {
  if (event.endsWith(".deleted") || event.endsWith(".revoked") || event === "auth.failed") return "bad";
  if (event.endsWith(".denied") || event.endsWith(".exceeded")) return "warn";
  if (event.endsWith(".created")) return "good";
  return "neutral";
}

function detailText(detail) {
  if (!detail || (typeof detail === "object" && !Object.keys(detail).length)) return "";
  return typeof detail === "string" ? detail : JSON.stringify(detail);
}

export function auditCard() {
  const tenant = h("input", { type: "text", autocomplete: "off", spellcheck: "false",
    placeholder: "any tenant", "data-testid": "audit-tenant" });
  const listId = "audit-events";
  const event = h("input", { type: "text", autocomplete: "off", list: listId, spellcheck: "false",
    placeholder: "any event", "data-testid": "audit-event" });
  const limit = h("select", { "data-testid": "audit-limit" },
    [50, 100, 500].map((n) => h("option", { value: n }, `${n} events`)));
  const apply = button("Apply", { type: "submit", class: "btn primary", "data-testid": "audit-apply" });
  const rows = h("tbody");
  const status = notice();

  async function reload() {
    const params = new URLSearchParams({ limit: limit.value });
    if (tenant.value.trim()) params.set("tenant", tenant.value.trim());
    if (event.value.trim()) params.set("event", event.value.trim());
    const events = (await get(`/admin/audit?${params}`)).data;
    replace(rows, events.length
      ? events.map((e) => h("tr", { "data-testid": "audit-row" },
          h("td", { class: "nowrap muted" }, fmtTime(e.at)),
          h("td", {}, pill(e.event, tone(e.event))),
          h("td", {}, e.tenant_id ?? "—"),
          h("td", {}, e.actor ?? "—"),
          h("td", { class: "mono small" }, e.key_prefix ?? ""),
          h("td", { class: "mono small" }, e.client_ip ?? ""),
          h("td", { class: "detail-cell" }, detailText(e.detail))))
      : h("tr", {}, h("td", { colspan: 7 }, emptyState("No events", "Nothing matches these filters."))));
  }

  const form = h("form", { class: "filters", novalidate: true },
    field("Tenant", tenant), field("Event", event), field("Show", limit),
    h("datalist", { id: listId }, EVENTS.map((name) => h("option", { value: name }))),
    h("div", { class: "form-actions" }, apply));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await busy(apply, reload);
      status.clear();
    } catch (error) {
      status.show("error", error.message);
    }
  });

  const el = card({ title: "Audit log", subtitle: "Who changed what, newest first. Never secrets or request content.",
    cls: "audit-card", testid: "audit-card" },
    form, status,
    h("div", { class: "table-wrap" },
      h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ["Time", "Event", "Tenant", "Actor", "Key", "Client", "Detail"].map((t) =>
          h("th", { scope: "col" }, t)))),
        rows)));
  return { el, reload };
}
