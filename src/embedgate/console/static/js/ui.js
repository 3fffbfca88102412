// Shared pieces of the interface: header, cards, fields, toasts, dialogs, progress.

import { h, s, uid } from "./dom.js";

export function logo() {
  return s(
    "svg",
    { class: "logo", viewBox: "0 0 32 32", "aria-hidden": "true", focusable: "false" },
    s("rect", { width: 32, height: 32, rx: 8, class: "logo-bg" }),
    s("circle", { cx: 11, cy: 11, r: 3.2, class: "logo-dot a" }),
    s("circle", { cx: 21, cy: 13, r: 2.4, class: "logo-dot b" }),
    s("circle", { cx: 14, cy: 21, r: 2.8, class: "logo-dot c" }),
    s("circle", { cx: 22.5, cy: 22, r: 1.8, class: "logo-dot a" }),
  );
}

/** The top bar: product, the view's name, who is signed in, and logout. */
export function header({ title, who, badges = [], onLogout }) {
  return h(
    "header",
    { class: "topbar" },
    h(
      "div",
      { class: "brand" },
      logo(),
      h("span", { class: "brand-name" }, "embedgate"),
      h("span", { class: "brand-sep", "aria-hidden": "true" }, "/"),
      h("span", { class: "brand-view" }, title),
    ),
    h(
      "div",
      { class: "topbar-right" },
      h("span", { class: "who", "data-testid": "session-who" }, who),
      badges.map((badge) => h("span", { class: "badge" }, badge)),
      button("Log out", { class: "btn ghost small", onclick: onLogout, "data-testid": "logout" }),
    ),
  );
}

export function card({ title, subtitle, actions, cls = "", testid }, ...body) {
  const titleId = uid("card");
  return h(
    "section",
    { class: `card ${cls}`, "aria-labelledby": title ? titleId : null, "data-testid": testid },
    title || actions
      ? h(
          "div",
          { class: "card-head" },
          h(
            "div",
            {},
            title ? h("h2", { id: titleId }, title) : null,
            subtitle ? h("p", { class: "card-sub" }, subtitle) : null,
          ),
          actions ? h("div", { class: "card-actions" }, actions) : null,
        )
      : null,
    body,
  );
}

export function button(label, props = {}) {
  return h("button", { type: "button", class: "btn", ...props }, label);
}

/** A labelled control: returns [wrapper, control]. */
export function field(label, control, { hint, cls = "" } = {}) {
  const id = control.id || uid("field");
  control.id = id;
  const hintEl = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: `field ${cls}` }, h("label", { for: id }, label), control, hintEl);
}

export function spinner(label) {
  return h("span", { class: "spinner", role: label ? "img" : null, "aria-label": label });
}

export function emptyState(title, text) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), h("p", {}, text));
}

export function pill(text, tone = "neutral") {
  return h("span", { class: `pill ${tone}` }, text);
}

/** An inline message area; `.show(kind, text)` / `.clear()`. Announced to screen readers. */
export function notice() {
  const el = h("div", { class: "notice", role: "status", "aria-live": "polite", hidden: true });
  el.show = (kind, ...content) => {
    el.className = `notice ${kind}`;
    el.replaceChildren(...content);
    el.hidden = false;
  };
  el.clear = () => {
    el.hidden = true;
    el.replaceChildren();
  };
  return el;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(item);
  setTimeout(() => item.classList.add("leaving"), 4200);
  setTimeout(() => item.remove(), 4600);
}

/** A progress bar with its label: `.set(done, total, text)`. */
export function progress(label) {
  const fill = h("div", { class: "progress-fill" });
  const bar = h(
    "div",
    {
      class: "progress",
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": 0,
    },
    fill,
  );
  bar.set = (done, total) => {
    const pct = total ? Math.round((done / total) * 100) : 0;
    fill.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(pct));
  };
  return bar;
}

/**
 * A modal dialog; resolves with true (confirmed) or false. With `confirmText`, the confirm
 * button stays disabled until that exact text is typed.
 */
export function confirmDialog({ title, body, confirmLabel = "Confirm", danger = false, confirmText }) {
  return new Promise((resolve) => {
    const confirm = button(confirmLabel, {
      class: `btn ${danger ? "danger" : "primary"}`,
      "data-testid": "dialog-confirm",
    });
    const cancel = button("Cancel", { class: "btn ghost", "data-testid": "dialog-cancel" });
    let input = null;
    if (confirmText) {
      input = h("input", { type: "text", autocomplete: "off", spellcheck: "false",
        "data-testid": "dialog-input" });
      confirm.disabled = true;
      input.addEventListener("input", () => {
        confirm.disabled = input.value !== confirmText;
      });
    }
    const titleId = uid("dlg");
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": titleId },
      h("form", { method: "dialog", class: "dialog-body" },
        h("h2", { id: titleId }, title),
        h("div", { class: "dialog-text" }, body),
        input ? field(`Type ${confirmText} to confirm`, input) : null,
        h("div", { class: "dialog-actions" }, cancel, confirm),
      ),
    );
    const close = (result) => {
      dialog.close();
      dialog.remove();
      resolve(result);
    };
    confirm.addEventListener("click", () => close(true));
    cancel.addEventListener("click", () => close(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      close(false);
    });
    dialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (!confirm.disabled) close(true);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || cancel).focus();
  });
}

/** Copy text; where the Clipboard API is unavailable (plain http off localhost), select it. */
export async function copyText(text, fallbackEl) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // fall through to selecting the text
    }
  }
  if (fallbackEl) {
    const range = document.createRange();
    range.selectNodeContents(fallbackEl);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  return false;
}

/** Run `task` with `btn` disabled and a spinner in it. */
export async function busy(btn, task) {
  const label = btn.textContent;
  btn.disabled = true;
  btn.setAttribute("aria-busy", "true");
  btn.replaceChildren(spinner(), h("span", {}, label));
  try {
    return await task();
  } finally {
    btn.disabled = false;
    btn.removeAttribute("aria-busy");
    btn.replaceChildren(label);
  }
}
