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
  const data = parseBody(text);
  if (res.ok || accept.includes(res.status)) return { data, headers: res.headers, status: res.status };
  throw failure(path, res.status, res.statusText, data);
}

/** A body as JSON, or as text when it is not JSON (`null` when empty). */
function parseBody(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

/** The error of a failed call: the backend's `error`; a 401 (but a failed login) sends the user to log in. */
function failure(path, status, statusText, data) {
  const message = (data && data.error) || (typeof data === 'string' && data) || `${status} ${statusText}`;
  if (status === 401 && path !== '/api/auth/login') onUnauthorized(message);
  return new ApiError(status, message);
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

/**
 * POSTs `file` as the multipart field `file`; resolves to the JSON answer.
 * XMLHttpRequest, not fetch: only it reports upload progress, given to
 * `onProgress(sent, total)` in bytes. Aborting `signal` cancels the upload.
 */
export function upload(path, file, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [k, v] of Object.entries({ Accept: 'application/json', ...authHeaders() })) xhr.setRequestHeader(k, v);
    if (onProgress) {
      const report = (e) => {
        if (e.lengthComputable) onProgress(e.loaded, e.total);
      };
      xhr.upload.addEventListener('progress', report);
      xhr.upload.addEventListener('load', report);
    }
    xhr.addEventListener('load', () => {
      const data = parseBody(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(failure(path, xhr.status, xhr.statusText, data));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0,
      'the upload was cut off before the backend answered (unreachable, or it refused a file over its size limit)')));
    xhr.addEventListener('abort', () => reject(new DOMException('upload aborted', 'AbortError')));
    if (signal) {
      if (signal.aborted) {
        reject(new DOMException('upload aborted', 'AbortError'));
        return;
      }
      signal.addEventListener('abort', () => xhr.abort(), { once: true });
    }
    const form = new FormData();
    form.append('file', file);
    xhr.send(form);
  });
}

/**
 * GETs `path` with the bearer token and saves the body under the
 * backend's file name (`Content-Disposition`), else `fallback`;
 * `onProgress(received)` follows the bytes. Resolves to `{ name, bytes }`.
 */
export async function download(path, fallback, { signal, onProgress } = {}) {
  let res;
  try {
    res = await fetch(path, { headers: authHeaders(), signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the backend (${e.message})`);
  }
  if (!res.ok) throw failure(path, res.status, res.statusText, parseBody(await res.text()));
  // Read chunk by chunk (not res.blob()) to report progress as it comes.
  const reader = res.body.getReader();
  const chunks = [];
  let bytes = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    bytes += value.length;
    if (onProgress) onProgress(bytes);
  }
  const named = /filename="([^"]+)"/.exec(res.headers.get('Content-Disposition') || '');
  const name = named ? named[1] : fallback;
  const blob = new Blob(chunks, { type: res.headers.get('Content-Type') || 'application/octet-stream' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  return { name, bytes };
}

let me = null; // { token, answer }: `/api/auth/me` for the token it was asked with

/**
 * The caller as `/api/auth/me` has it (`{ username, role, must_change_pw }`),
 * asked once per token; `fresh` asks again.
 */
export function currentUser({ fresh = false } = {}) {
  const token = getToken();
  if (fresh || !me || me.token !== token) {
    const answer = api('/api/auth/me');
    me = { token, answer };
    answer.catch(() => {
      if (me && me.answer === answer) me = null;
    });
  }
  return me.answer;
}

/** Whether `role` may call the mutating routes (viewer < operator < admin). */
export function canOperate(role) {
  return role === 'operator' || role === 'admin';
}
