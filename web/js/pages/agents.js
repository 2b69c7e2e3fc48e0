// Agents: search (pc_id or hostname), online/stale filter and paging, all
// in the URL (`?q=&status=&page=`); each row links to the agent's page.

import { request, withQuery } from '../api.js';
import {
  debounce, fmtAgo, fmtInt, fmtPct, fmtBytes, h, link, livenessBadge, mount, stateBox, table,
} from '../ui.js';

const PAGE_SIZE = 50;

export default {
  title: 'Agents',
  nav: 'agents',
  async render(ctx) {
    const q0 = ctx.query;
    const search = h('input', {
      type: 'search', name: 'q', placeholder: 'pc_id or hostname', value: q0.get('q') || '', 'aria-label': 'Search agents',
    });
    const status = h('select', { name: 'status', 'aria-label': 'Liveness' },
      [['', 'all'], ['online', 'online'], ['offline', 'stale']].map(([v, label]) =>
        h('option', { value: v, selected: (q0.get('status') || '') === v }, label)));
    const counts = h('span', { class: 'hint', 'aria-live': 'polite' });
    const body = h('div', {}, stateBox('loading'));
    const pager = h('div', { class: 'pager' });
    mount(ctx.root,
      h('h1', {}, 'Agents', counts),
      h('div', { class: 'toolbar' },
        h('label', {}, 'Search', search), h('label', {}, 'Status', status)),
      h('section', { class: 'panel', 'aria-label': 'Agents' }, body, pager));

    async function load() {
      const q = ctx.query;
      const page = Math.max(1, parseInt(q.get('page') || '1', 10) || 1);
      const { data, headers } = await request(withQuery('/api/agents', {
        q: q.get('q'), status: q.get('status'), limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE,
      }), { signal: ctx.signal });
      const total = parseInt(headers.get('X-Total-Count') || `${data.length}`, 10);
      const online = headers.get('X-Online-Count');
      const offline = headers.get('X-Offline-Count');
      counts.textContent = online !== null
        ? `${fmtInt(total)} shown by the filter · ${fmtInt(+online)} online · ${fmtInt(+offline)} stale`
        : `${fmtInt(total)}`;
      const now = Date.now();
      mount(body, table([
        { label: 'PC', value: (a) => link(`/agents/${encodeURIComponent(a.pc_id)}`, a.pc_id) },
        { label: 'Hostname', value: (a) => a.hostname ?? '—' },
        { label: 'Status', value: (a) => livenessBadge(a, now) },
        { label: 'Last heartbeat', value: (a) => fmtAgo(a.last_heartbeat, now) },
        { label: 'OS', value: (a) => a.os_family ?? '—' },
        { label: 'Agent', value: (a) => a.agent_version ?? '—' },
        { label: 'Agent CPU', num: true, value: (a) => fmtPct(a.agent_cpu_pct) },
        { label: 'Agent RSS', num: true, value: (a) => fmtBytes(a.agent_rss_bytes) },
      ], data, { empty: q.get('q') || q.get('status') ? 'No agent matches.' : 'No agent has sent a heartbeat yet.', label: 'Agents' }));
      const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
      const go = (p) => { ctx.setQuery({ page: p === 1 ? null : p }, { push: true }); run(); };
      mount(pager,
        h('button', { type: 'button', disabled: page <= 1, onclick: () => go(page - 1) }, '← Previous'),
        h('span', { class: 'hint' }, `page ${page} of ${pages}`),
        h('button', { type: 'button', disabled: page >= pages, onclick: () => go(page + 1) }, 'Next →'));
    }
    const run = () => load().catch((e) => {
      if (e.name !== 'AbortError') mount(body, stateBox('error', e.message));
    });

    search.addEventListener('input', debounce(() => {
      ctx.setQuery({ q: search.value.trim(), page: null });
      run();
    }, 250));
    status.addEventListener('change', () => {
      ctx.setQuery({ status: status.value, page: null }, { push: true });
      run();
    });
    await load();
    ctx.every(30_000, run);
  },
};
