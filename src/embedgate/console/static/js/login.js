// The login view: an API key is exchanged for a session cookie and then forgotten.

import { login } from "./api.js";
import { h } from "./dom.js";
import { busy, button, logo, notice } from "./ui.js";

export function renderLogin(root, { message, onSession }) {
  // The input has no name and the form posts nowhere useful: even if this script failed
  // half-way, a submitted form could not put the key into a URL.
  const key = h("input", {
    id: "login-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    autocapitalize: "off",
    required: true,
    placeholder: "tenant_… or the admin key",
    "data-testid": "login-key",
    "aria-describedby": "login-help",
  });
  const submit = button("Sign in", { type: "submit", class: "btn primary wide", "data-testid": "login-submit" });
  const reveal = button("Show", { class: "btn ghost small reveal", "aria-pressed": "false",
    "aria-controls": "login-key" });
  reveal.addEventListener("click", () => {
    const shown = key.type === "text";
    key.type = shown ? "password" : "text";
    reveal.textContent = shown ? "Show" : "Hide";
    reveal.setAttribute("aria-pressed", String(!shown));
  });
  const status = notice();
  if (message) status.show("info", message);

  const form = h(
    "form",
    { class: "login-form", method: "post", action: "#", novalidate: true },
    h("label", { for: "login-key" }, "API key"),
    h("div", { class: "input-with-button" }, key, reveal),
    h("p", { class: "hint", id: "login-help" },
      "A tenant key opens your knowledge bases; the admin key opens the operator view. " +
        "The key is exchanged for a session and is not kept in this browser."),
    status,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = key.value.trim();
    if (!value) {
      status.show("error", "Paste an API key to sign in.");
      key.focus();
      return;
    }
    status.clear();
    try {
      const session = await busy(submit, () => login(value));
      key.value = "";
      await onSession(session);
    } catch (error) {
      status.show("error", error.status === 401 ? "This key is not valid. Check it and try again." : error.message);
      key.select();
    }
  });

  root.replaceChildren(
    h(
      "main",
      { class: "login-page" },
      h(
        "div",
        { class: "login-card card" },
        h("div", { class: "login-brand" }, logo(), h("span", { class: "brand-name" }, "embedgate")),
        h("h1", {}, "Sign in to the console"),
        h("p", { class: "login-lead" },
          "Build a knowledge base and watch semantic search rank it, or run the gateway's tenants, keys and usage."),
        form,
      ),
      h("p", { class: "login-foot" }, "One embedding model, shared safely by many teams."),
    ),
  );
  key.focus();
}
