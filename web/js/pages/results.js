// Results: status tabs, the five regex filters and a row limit, all in
// the URL; an invalid regex shows the backend's 400 message in place.

import { api, withQuery } from '../api.js';
import {
  badge, fmtDuration, fmtTime, h, link, mount, resultStatus, stateBox, table,
} from '../ui.js';

const TABS = [['', 'All'], ['running', 'Running'], ['success', 'Success'], ['failure', 'Failure']];
const FILTERS = [['pc_id', 'PC'], ['job_id', 'Job'], ['exec_id', 'Execution'], ['stdout', 'stdout'], ['stderr', 'stderr']];

function snippet(m) {
  if (!m) return null;
  return h('span', { class: 'mono' }, m.clipped_start ? '…' : '', m.before, h('mark', {}, m.matched), m.after, m.clipped_end ? '…' : '');
}

export default {
  title: 'Results',
  nav: 'results',
  async render(ctx) {
    const q0 = ctx.query;
    const tabs = h('nav', { class: 'seg', 'aria-label': 'Result status' });
    const drawTabs = () => {
      const current = ctx.query.get('status') || '';
      mount(tabs, TABS.map(([v, label]) => {
        const q = new URLSearchParams(ctx.query);
        if (v) q.set('status', v); else q.delete('status');
        const s = q.toString();
        return h('a', { href: `/results${s ? `?${s}` : ''}`, 'aria-current': current === v ? 'page' : undefined }, label);
      }));
    };
    drawTabs();
    const form = h('form', { class: 'inline', role: 'search', 'aria-label': 'Filter results' },
      FILTERS.map(([name, label]) => h('label', {}, `${label} (regex)`,
        h('input', { name, value: q0.get(name) || '', size: name.startsWith('std') ? 18 : 12, spellcheck: 'false' }))),
      h('label', {}, 'Rows', h('select', { name: 'limit' },
        ['50', '100', '500'].map((n) => h('option', { value: n, selected: (q0.get('limit') || '50') === n }, n)))),
      h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('button', { type: 'reset' }, 'Clear'));
    const body = h('div', {}, stateBox('loading'));
    mount(ctx.root,
      h('h1', {}, 'Results'),
      h('div', { class: 'toolbar' }, tabs),
      h('section', { class: 'panel', 'aria-label': 'Filters' }, form),
      h('section', { class: 'panel', 'aria-label': 'Results', id: 'results-table' }, body));

    async function load() {
      const q = ctx.query;
      const params = { status: q.get('status'), limit: q.get('limit') };
      for (const [name] of FILTERS) params[name] = q.get(name);
      const rows = await api(withQuery('/api/results', params), { signal: ctx.signal });
      const filtered = FILTERS.some(([n]) => q.get(n)) || q.get('status');
      mount(body, table([
        { label: 'Result', class: 'mono', value: (r) => link(`/results/${encodeURIComponent(r.result_id)}`, r.result_id) },
        { label: 'Status', value: (r) => { const s = resultStatus(r); return badge(s.text, s.cls); } },
        { label: 'PC', value: (r) => link(`/agents/${encodeURIComponent(r.pc_id)}`, r.pc_id) },
        { label: 'Job', value: (r) => r.job_id ?? '—' },
        { label: 'Started', value: (r) => fmtTime(r.started_at) },
        { label: 'Duration', num: true, value: fmtDuration },
        { label: 'Match', class: 'wrap', value: (r) => snippet(r.stdout_match) || snippet(r.stderr_match) || '' },
      ], rows, { empty: filtered ? 'No result matches these filters.' : 'No results yet.', label: 'Results' }));
    }
    const run = () => load().catch((e) => {
      if (e.name !== 'AbortError') mount(body, stateBox('error', e.message));
    });

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const patch = {};
      for (const [name] of FILTERS) patch[name] = data.get(name).trim();
      patch.limit = data.get('limit') === '50' ? null : data.get('limit');
      ctx.setQuery(patch, { push: true });
      drawTabs();
      run();
    });
    form.addEventListener('reset', () => {
      setTimeout(() => {
        const patch = { limit: null };
        for (const [name] of FILTERS) patch[name] = null;
        ctx.setQuery(patch, { push: true });
        drawTabs();
        run();
      });
    });
    await run();
    ctx.every(15_000, run);
  },
};
