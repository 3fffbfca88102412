// Entry point: restore the session and show the login, tenant or admin view.

import { loadSession, logout, onSessionExpired } from "./api.js";
import { h } from "./dom.js";
import { renderLogin } from "./login.js";
import { toast } from "./ui.js";

const root = document.getElementById("app");
let expiryTimer = null;
// setTimeout fires at once beyond 2^31-1 ms; re-check at most daily instead.
const MAX_TIMER_MS = 24 * 3600 * 1000;

function scheduleExpiry(session) {
  clearTimeout(expiryTimer);
  const at = Date.parse(session.expires_at);
  if (Number.isNaN(at)) return;
  const wait = Math.min(Math.max(at - Date.now(), 0), MAX_TIMER_MS);
  expiryTimer = setTimeout(() => {
    if (Date.now() >= at) showLogin("Your session has expired. Sign in again.");
    else scheduleExpiry(session);
  }, wait);
}

function showLogin(message) {
  clearTimeout(expiryTimer);
  root.setAttribute("aria-busy", "false");
  document.title = "Sign in · embedgate";
  renderLogin(root, { message, onSession: showSession });
}

async function signOut() {
  try {
    await logout();
  } catch (error) {
    // The session is gone either way; say so only when the server could not be told.
    if (error.status !== 401) toast(error.message, "error");
  }
  showLogin("You have logged out.");
}

async function showSession(session) {
  scheduleExpiry(session);
  root.setAttribute("aria-busy", "true");
  const view =
    session.kind === "admin" ? await import("./admin.js") : await import("./tenant.js");
  root.replaceChildren();
  view.render(root, { session, onLogout: signOut });
  root.setAttribute("aria-busy", "false");
}

async function boot() {
  onSessionExpired(() => showLogin("Your session has expired. Sign in again."));
  try {
    const session = await loadSession();
    if (session) await showSession(session);
    else showLogin();
  } catch (error) {
    root.replaceChildren(h("div", { class: "boot error", role: "alert" }, error.message));
  }
}

boot();
