// The single-page app: a History-API router over the pages in ./pages.
// Every page's state (range, filters, selection) lives in its URL, so
// back, reload and a pasted link all land on the same view.

import { currentUser, getToken, setToken, setUnauthorizedHandler } from './api.js';
import { mount, stateBox } from './ui.js';
import dashboard from './pages/dashboard.js';
import agents from './pages/agents.js';
import agent from './pages/agent.js';
import results from './pages/results.js';
import resultDetail from './pages/result.js';
import jobs, { jobDetail } from './pages/jobs.js';
import schedules, { scheduleDetail } from './pages/schedules.js';
import config from './pages/config.js';
import rollout from './pages/rollout.js';
import packages from './pages/packages.js';
import compliance from './pages/compliance.js';
import inventory, { inventorySearch } from './pages/inventory.js';
import notifications from './pages/notifications.js';
import health from './pages/health.js';
import exportPage from './pages/export.js';
import login from './pages/login.js';
import passwordSetup from './pages/password_setup.js';
import security from './pages/security.js';
import account from './pages/account.js';

const ROUTES = [
  [/^\/$/, dashboard],
  [/^\/login$/, login],
  [/^\/password-setup\/([^/]+)$/, passwordSetup],
  [/^\/agents$/, agents],
  [/^\/agents\/([^/]+)$/, agent],
  [/^\/results$/, results],
  [/^\/results\/([^/]+)$/, resultDetail],
  [/^\/jobs$/, jobs],
  [/^\/jobs\/([^/]+)$/, jobDetail],
  [/^\/schedules$/, schedules],
  [/^\/schedules\/([^/]+)$/, scheduleDetail],
  [/^\/config$/, config],
  [/^\/rollout$/, rollout],
  [/^\/packages$/, packages],
  [/^\/compliance$/, compliance],
  [/^\/inventory$/, inventory],
  [/^\/inventory\/search$/, inventorySearch],
  [/^\/notifications$/, notifications],
  [/^\/scan-health$/, health],
  [/^\/export$/, exportPage],
  [/^\/security$/, security],
  [/^\/account$/, account],
];

const root = document.getElementById('app');
let current = null; // { ctx, page, path }

function match(path) {
  for (const [re, page] of ROUTES) {
    const m = re.exec(path);
    if (m) return { page, params: m.slice(1).map(decodeURIComponent) };
  }
  return null;
}

/** Goes to `url` (path + query) and renders it. */
export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

function leave() {
  if (!current) return;
  current.ctx.controller.abort();
  for (const fn of current.ctx.cleanups) {
    try { fn(); } catch (e) { console.warn('cleanup failed', e); }
  }
  current = null;
}

function makeContext(params) {
  const controller = new AbortController();
  const ctx = {
    root,
    params,
    controller,
    signal: controller.signal,
    cleanups: [],
    get query() { return new URLSearchParams(location.search); },
    navigate,
    refreshIdentity,
    /** Merges `patch` into the URL query without re-rendering the page. */
    setQuery(patch, { push = false } = {}) {
      const q = new URLSearchParams(location.search);
      for (const [k, v] of Object.entries(patch)) {
        if (v === undefined || v === null || v === '') q.delete(k);
        else q.set(k, String(v));
      }
      const s = q.toString();
      const url = `${location.pathname}${s ? `?${s}` : ''}`;
      if (push) history.pushState(null, '', url);
      else history.replaceState(null, '', url);
      return q;
    },
    onLeave(fn) { ctx.cleanups.push(fn); },
    /** Runs `fn` every `ms` while the page is shown and the tab visible. */
    every(ms, fn) {
      const id = setInterval(() => {
        if (document.visibilityState === 'visible' && !controller.signal.aborted) fn();
      }, ms);
      ctx.cleanups.push(() => clearInterval(id));
    },
  };
  return ctx;
}

async function render() {
  leave();
  const found = match(location.pathname);
  if (!found) {
    document.title = 'Not found · kanade';
    mount(root, stateBox('error', `No page at ${location.pathname}.`));
    return;
  }
  const { page, params } = found;
  document.title = `${page.title} · kanade`;
  for (const a of document.querySelectorAll('header nav a')) {
    if (a.dataset.nav === page.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const ctx = makeContext(params);
  current = { ctx, page };
  mount(root, stateBox('loading'));
  try {
    await page.render(ctx);
  } catch (e) {
    if (e.name === 'AbortError' || ctx.signal.aborted) return;
    console.warn(e);
    mount(root, stateBox('error', e.message || String(e)));
  }
}

function onUnauthorized() {
  // The public pages need no session.
  if (location.pathname === '/login' || location.pathname.startsWith('/password-setup/')) return;
  setToken(null);
  const next = `${location.pathname}${location.search}`;
  navigate(`/login?next=${encodeURIComponent(next)}`, { replace: true });
}

/** Shows who is logged in; sends a must-change-password account to the form. */
export async function refreshIdentity() {
  const who = document.getElementById('whoami');
  const logout = document.getElementById('logout');
  try {
    const me = await currentUser({ fresh: true });
    who.textContent = `${me.username} · ${me.role}`;
    logout.hidden = !getToken();
    // An account limited to some pages (its permission group or its own
    // list) sees only their menu entries; the backend refuses the rest.
    const allowed = Array.isArray(me.allowed_features) ? me.allowed_features : null;
    for (const a of document.querySelectorAll('header nav a[data-nav]')) {
      a.hidden = (allowed !== null && !allowed.includes(a.dataset.feature))
        || (a.dataset.role === 'admin' && me.role !== 'admin');
    }
    if (me.must_change_pw && location.pathname !== '/login') navigate('/login?change=1', { replace: true });
  } catch {
    who.textContent = '';
    logout.hidden = true;
  }
}

function interceptLinks(e) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  e.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
  root.focus({ preventScroll: true });
}

function toggleTheme() {
  const el = document.documentElement;
  const dark = el.dataset.theme
    ? el.dataset.theme === 'dark'
    : window.matchMedia('(prefers-color-scheme: dark)').matches;
  el.dataset.theme = dark ? 'light' : 'dark';
  localStorage.setItem('kanade.theme', el.dataset.theme);
  render(); // charts read their colours from the theme when built
}

setUnauthorizedHandler(onUnauthorized);
document.addEventListener('click', interceptLinks);
window.addEventListener('popstate', render);
document.getElementById('theme-toggle').addEventListener('click', toggleTheme);
document.getElementById('logout').addEventListener('click', () => {
  setToken(null);
  refreshIdentity();
  navigate('/login');
});
render();
refreshIdentity();
