// System status: model, device (GPU memory on CUDA), queue depth, embedding cache.

import { get } from "./api.js";
import { fmtBytes, fmtDuration, fmtNumber, h, replace } from "./dom.js";
import { button, pill } from "./ui.js";

const REFRESH_MS = 30000;

function plural(n, one, many = `${one}s`) {
  return `${fmtNumber(n ?? 0)} ${n === 1 ? one : many}`;
}

function tile(label, value, sub, extra, testid) {
  return h("div", { class: "tile", "data-testid": testid },
    h("span", { class: "tile-label" }, label),
    h("span", { class: "tile-value" }, value),
    sub ? h("span", { class: "tile-sub" }, sub) : null,
    extra ?? null);
}

function meterBar(fraction) {
  const fill = h("div", { class: "meter-fill" });
  fill.style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
  return h("div", { class: `meter ${fraction > 0.9 ? "hot" : ""}`, "aria-hidden": "true" }, fill);
}

/** A GPU memory figure in bytes, whether reported as `<name>_bytes` or `<name>_mb` (MiB). */
function gpuBytes(memory, name) {
  if (memory[`${name}_bytes`] !== undefined) return memory[`${name}_bytes`];
  if (memory[`${name}_mb`] !== undefined) return memory[`${name}_mb`] * 2 ** 20;
  return null;
}

function deviceTile(device) {
  const gpu = device?.gpu_memory;
  if (device?.type === "none") {
    return tile("Device", "Upstream", "models run on upstream servers", null, "system-device");
  }
  const type = String(device?.type ?? "—").toUpperCase();
  if (!gpu) return tile("Device", type, device?.name ?? "No GPU in use", null, "system-device");
  const used = gpuBytes(gpu, "used") ?? gpuBytes(gpu, "allocated") ?? 0;
  const total = gpuBytes(gpu, "total") ?? 0;
  return tile("Device", type, device.name ?? device.id ?? "GPU", [
    total ? meterBar(used / total) : null,
    h("span", { class: "tile-sub" }, `GPU memory: ${fmtBytes(used)} of ${fmtBytes(total)} used`),
  ], "system-device");
}

function cacheTile(cache) {
  if (!cache) return tile("Cache hit ratio", "—", "not reported", null, "system-cache");
  if (cache.enabled === false) {
    return tile("Cache hit ratio", "Off", "the embedding cache is disabled", null, "system-cache");
  }
  return tile("Cache hit ratio", `${((cache.hit_ratio ?? 0) * 100).toFixed(1)}%`,
    `${plural(cache.hits, "hit")} · ${plural(cache.misses, "miss", "misses")} · ${fmtBytes(cache.bytes)}`,
    meterBar(cache.hit_ratio ?? 0), "system-cache");
}

export function systemStrip() {
  const tiles = h("div", { class: "tiles" }, h("div", { class: "tile skeleton" }));
  const refreshBtn = button("Refresh", { class: "btn ghost small", "aria-label": "Refresh system status" });
  const title = h("div", { class: "strip-head" },
    h("h2", { id: "system-title" }, "System status"), h("span", { class: "strip-meta" }), refreshBtn);
  const el = h("section", { class: "system-strip", "aria-labelledby": "system-title",
    "data-testid": "system-status" }, title, tiles);
  let timer = null;

  async function refresh() {
    if (!el.isConnected && timer) {
      clearInterval(timer);
      return;
    }
    let sys;
    try {
      sys = await get("/admin/system");
    } catch (error) {
      replace(tiles, h("p", { class: "error-text" }, `System status unavailable: ${error.message}`));
      return;
    }
    const models = sys.models ?? [];
    const first = models[0];
    const ready = models.every((m) => m.ready !== false);
    replace(title.querySelector(".strip-meta"),
      pill(ready ? "All models ready" : "Not ready", ready ? "good" : "bad"),
      ` embedgate ${sys.version ?? ""}`,
      sys.uptime_s === null || sys.uptime_s === undefined ? "" : ` · up ${fmtDuration(sys.uptime_s)}`);
    replace(tiles,
      tile("Model", first?.name ?? "—",
        first ? `${first.backend ?? "local"} · ${first.dimensions} dims${models.length > 1 ? ` · +${models.length - 1} more` : ""}` : "",
        null, "system-model"),
      deviceTile(sys.device),
      tile("Queue depth", fmtNumber(sys.queue_depth ?? 0), "inputs waiting or in flight", null, "system-queue"),
      cacheTile(sys.cache),
    );
  }
  refreshBtn.addEventListener("click", refresh);
  timer = setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, REFRESH_MS);
  return { el, refresh };
}
