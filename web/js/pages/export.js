// Export: pick a table, a time range and optionally a PC; the Parquet file
// is fetched with the bearer token and saved under the backend's file name
// (a 401 sends the user to log in, as every call does).

import { api, download, withQuery } from '../api.js';
import { fmtBytes, h, mount } from '../ui.js';

function localInput(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export default {
  title: 'Export',
  nav: 'export',
  async render(ctx) {
    const q = ctx.query;
    const now = new Date();
    const from = q.get('from') ? new Date(q.get('from')) : new Date(now.getTime() - 86_400_000);
    const to = q.get('to') ? new Date(q.get('to')) : now;
    const status = h('p', { 'aria-live': 'polite', id: 'export-status' });
    const agents = h('datalist', { id: 'export-agents' });
    const form = h('form', { class: 'stack', 'aria-label': 'Export' },
      h('label', {}, 'Table', h('select', { name: 'table' },
        ['host_perf', 'process_perf'].map((t) => h('option', { value: t, selected: (q.get('table') || 'host_perf') === t }, t)))),
      h('div', { class: 'toolbar' },
        h('label', {}, 'From', h('input', { type: 'datetime-local', name: 'from', value: localInput(from), required: true })),
        h('label', {}, 'To', h('input', { type: 'datetime-local', name: 'to', value: localInput(to), required: true })),
        h('label', {}, 'PC (optional)', h('input', { name: 'pc_id', list: 'export-agents', value: q.get('pc_id') || '', spellcheck: 'false' }))),
      h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Download Parquet')),
      status, agents);
    mount(ctx.root, h('h1', {}, 'Export'),
      h('section', { class: 'panel', style: 'max-width:720px' },
        h('p', { class: 'muted' }, 'A Parquet file of the raw samples, for DuckDB, Polars or Spark.'), form));

    // Suggestions only: the form works without them.
    api('/api/agents?limit=500', { signal: ctx.signal })
      .then((rows) => mount(agents, rows.map((a) => h('option', { value: a.pc_id }, a.hostname || ''))))
      .catch(() => {});

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const params = {
        table: data.get('table'),
        from: new Date(data.get('from')).toISOString(),
        to: new Date(data.get('to')).toISOString(),
        pc_id: data.get('pc_id').trim(),
      };
      ctx.setQuery(params);
      const button = form.querySelector('button[type=submit]');
      button.disabled = true;
      status.className = '';
      status.textContent = 'Starting…';
      try {
        const url = withQuery(`/api/export/${params.table}`, { from: params.from, to: params.to, pc_id: params.pc_id });
        const { name, bytes } = await download(url, `${params.table}.parquet`, {
          signal: ctx.signal,
          onProgress: (received) => { status.textContent = `Downloading… ${fmtBytes(received)}`; },
        });
        status.textContent = `Saved ${name} (${fmtBytes(bytes)}).`;
        status.dataset.done = name;
      } catch (e2) {
        if (e2.name === 'AbortError') return;
        status.className = 'error-text';
        status.textContent = e2.message;
      } finally {
        button.disabled = false;
      }
    });
  },
};
