// The backend's HTTP API as the pages use it: bearer token from
// localStorage, JSON in and out, 401 → the login page.

const TOKEN_KEY = 'kanade.token';

export function getToken() {
  try { return localStorage.getItem(TOKEN_KEY); } catch { return null; }
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** The Authorization header for the stored token (none without one). */
export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** An API call that did not succeed; `message` is the backend's `error`. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onUnauthorized = () => {};

/** Called on any 401 (except a failed login): the app sends the user to log in. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/**
 * Calls the API; resolves to `{ data, headers, status }`.
 * `accept` lists non-2xx statuses whose body is still data (fleet health's 503).
 * `text: true` keeps a successful body as text (the YAML endpoints); an
 * error is still read as the backend's JSON.
 * `headers` adds request headers (e.g. `If-Match`).
 */
export async function request(path, {
  method = 'GET', body, signal, accept = [], text: asText = false, headers: extra = {},
} = {}) {
  const headers = {
    Accept: asText ? 'application/yaml, text/plain, application/json' : 'application/json', ...authHeaders(), ...extra,
  };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the backend (${e.message})`);
  }
  const text = await res.text();
  if (asText && (res.ok || accept.includes(res.status))) return { data: text, headers: res.headers, status: res.status };
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (res.ok || accept.includes(res.status)) return { data, headers: res.headers, status: res.status };
  const message = (data && data.error) || (typeof data === 'string' && data) || `${res.status} ${res.statusText}`;
  if (res.status === 401 && path !== '/api/auth/login') onUnauthorized(message);
  throw new ApiError(res.status, message);
}

/** As `request`, resolving to the body only (JSON, or text with `text: true`). */
export async function api(path, options) {
  return (await request(path, options)).data;
}

/** Builds `path?query` from an object, leaving out empty values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
