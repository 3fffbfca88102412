// The JSON API, called with the session cookie. The CSRF token lives in this module's
// memory only: never in storage, never in a URL.

let csrfToken = null;
let expiredHandler = () => {};

export class ApiError extends Error {
  constructor(status, message, { code = null, param = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
    this.retryAfter = retryAfter;
  }
}

/** Called once when the server stops accepting the session (expired, logged out elsewhere). */
export function onSessionExpired(handler) {
  expiredHandler = handler;
}

function errorFrom(response, body) {
  const error = body && typeof body === "object" ? body.error : null;
  const message =
    (error && error.message) ||
    (response.status >= 500
      ? "The server had a problem answering. Try again in a moment."
      : `The request failed (HTTP ${response.status}).`);
  return new ApiError(response.status, message, {
    code: error ? error.code : null,
    param: error ? error.param : null,
    retryAfter: Number(response.headers.get("retry-after")) || null,
  });
}

export async function request(method, url, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "The server cannot be reached. Check that it is running.");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = errorFrom(response, data);
    if (response.status === 401 && csrfToken && !url.startsWith("/console/")) {
      csrfToken = null;
      expiredHandler();
    }
    throw error;
  }
  return data;
}

export const get = (url) => request("GET", url);
export const post = (url, body = {}) => request("POST", url, body);
export const patch = (url, body) => request("PATCH", url, body);
export const del = (url) => request("DELETE", url);

/** The current session, or null when there is none (401, or a body without a kind). */
export async function loadSession() {
  try {
    const session = await get("/console/session");
    if (!session || !session.kind) return null;
    csrfToken = session.csrf_token;
    return session;
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

export async function login(key) {
  const session = await post("/console/login", { key });
  csrfToken = session.csrf_token;
  return session;
}

export async function logout() {
  try {
    await post("/console/logout");
  } finally {
    csrfToken = null;
  }
}

/** A path segment, escaped: names and ids never change the path's shape. */
export function seg(value) {
  return encodeURIComponent(value);
}

/** `/v1/collections/{name}` plus `rest`. */
export function collectionPath(collection, rest = "") {
  return `/v1/collections/${seg(collection.name)}${rest}`;
}
