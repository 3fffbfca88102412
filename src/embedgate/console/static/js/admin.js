// The admin view: system status, tenants and their keys, usage and the audit log.

import { auditCard } from "./admin_audit.js";
import { systemStrip } from "./admin_system.js";
import { tenantDetail, tenantList } from "./admin_tenants.js";
import { h } from "./dom.js";
import { header, toast } from "./ui.js";

export function render(root, { onLogout }) {
  document.title = "Operator · embedgate";
  const system = systemStrip();
  const audit = auditCard();
  const detail = tenantDetail({
    onChanged: (tenant) => {
      list.reload(tenant?.id);
      audit.reload();
    },
  });
  const list = tenantList({ onOpen: (tenant) => detail.open(tenant) });

  root.append(
    header({ title: "Operator console", who: "Admin", badges: ["operator"], onLogout }),
    h("main", { class: "page admin-page" },
      system.el,
      h("div", { class: "admin-grid" }, list.el, detail.el),
      audit.el),
  );
  Promise.all([system.refresh(), list.reload(), audit.reload()]).catch((error) =>
    toast(error.message, "error"));
}
