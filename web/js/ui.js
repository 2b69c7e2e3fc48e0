// Small DOM and formatting helpers shared by the pages.

/** `h('a', {href: '/x', class: 'y'}, 'text', child)` → an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The loading / empty / error placeholder every data panel shows. */
export function stateBox(kind, message) {
  const text = message || { loading: 'Loading…', empty: 'Nothing here yet.', error: 'Failed.' }[kind];
  return h('div', { class: `state ${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-state': kind }, text);
}

/**
 * A table: `columns` are `{ label, value(row) → Node|string, num? }`.
 * Returns the empty state when there are no rows.
 */
export function table(columns, rows, { empty = 'No rows.', label } = {}) {
  if (!rows.length) return stateBox('empty', empty);
  return h('div', { class: 'table-scroll' },
    h('table', { 'aria-label': label },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : c.class, scope: 'col' }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {},
        columns.map((c) => h('td', { class: c.num ? 'num' : c.class }, c.value(r))))))));
}

export function link(href, text) {
  return h('a', { href }, text);
}

const NUM = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const INT = new Intl.NumberFormat();

export function fmtNum(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  return digits === 1 ? NUM.format(v) : v.toFixed(digits);
}

export function fmtInt(v) {
  return v === null || v === undefined ? '—' : INT.format(v);
}

export function fmtPct(v) {
  return v === null || v === undefined ? '—' : `${NUM.format(v)} %`;
}

export function fmtBytes(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let n = Math.abs(v);
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${v < 0 ? '-' : ''}${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

export function fmtRate(v) {
  return v === null || v === undefined ? '—' : `${fmtBytes(v)}/s`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} m ${Math.round((ms % 60_000) / 1000)} s`;
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} m`;
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleString(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

/** "3 min ago" style, for heartbeats and latest samples. */
export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return 'never';
  const s = Math.round((now - new Date(iso).getTime()) / 1000);
  if (s < 5) return 'just now';
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172_800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const ALIVE_MS = 2 * 60 * 1000; // the backend's heartbeat threshold

/** Online/stale badge of an agent, as the backend's liveness rule has it. */
export function livenessBadge(agent, now = Date.now()) {
  const online = agent.last_heartbeat && now - Date.parse(agent.last_heartbeat) <= ALIVE_MS;
  return online ? badge('online', 'ok') : badge('stale', 'warn');
}

/** How long a finished run took; `—` while it runs. */
export function fmtDuration(r) {
  if (!r.started_at || !r.finished_at) return '—';
  return fmtMs(Math.max(0, Date.parse(r.finished_at) - Date.parse(r.started_at)));
}

/** Result status from its exit code and end time. */
export function resultStatus(r) {
  if (!r.finished_at) return { text: 'running', cls: 'warn' };
  if (r.exit_code === 0) return { text: 'success', cls: 'ok' };
  return { text: `failure (${r.exit_code ?? '?'})`, cls: 'bad' };
}

/** Shows `text` in a status line; an error is announced as an alert. */
export function say(el, text, error = false) {
  el.className = error ? 'error-text' : 'hint';
  if (error) el.setAttribute('role', 'alert');
  else el.removeAttribute('role');
  el.textContent = text;
}

/** `a, b,,c ` → `['a', 'b', 'c']`. */
export function commaList(value) {
  return String(value || '').split(',').map((s) => s.trim()).filter(Boolean);
}

export function badge(text, cls) {
  return h('span', { class: `badge ${cls}` }, text);
}

export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
