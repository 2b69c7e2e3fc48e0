// Health: per-job scan durations sorted by p95 (each max links to its
// run), over a `since` window kept in the URL, and the JetStream check.

import { api, withQuery } from '../api.js';
import { badge, fmtInt, fmtMs, h, link, mount, table } from '../ui.js';
import { panel } from '../widgets.js';

const WINDOWS = [['24h', 86_400], ['7d', 7 * 86_400], ['30d', 30 * 86_400]];

export default {
  title: 'Health',
  nav: 'health',
  async render(ctx) {
    const windowKey = () => (WINDOWS.find(([k]) => k === ctx.query.get('since')) || WINDOWS[0])[0];
    const seg = h('div', { class: 'seg', role: 'group', 'aria-label': 'Window' });
    const drawSeg = () => mount(seg, WINDOWS.map(([k]) => h('button', {
      type: 'button', 'aria-pressed': String(windowKey() === k),
      onclick: () => { ctx.setQuery({ since: k === '24h' ? null : k }, { push: true }); drawSeg(); loadScans(); },
    }, k)));
    drawSeg();
    const scans = panel('Scan durations', { id: 'scan-durations', extra: seg });
    const js = panel('JetStream resources', { id: 'jetstream' });
    mount(ctx.root, h('h1', {}, 'Health'), scans.el, js.el);

    const loadScans = () => scans.load(async (body) => {
      const seconds = WINDOWS.find(([k]) => k === windowKey())[1];
      const since = new Date(Date.now() - seconds * 1000).toISOString();
      const rows = await api(withQuery('/api/health/scan_durations', { since }), { signal: ctx.signal });
      mount(body, table([
        { label: 'Job', value: (r) => link(`/results?job_id=${encodeURIComponent(`^${r.job_id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`)}`, r.job_id) },
        { label: 'Runs', num: true, value: (r) => fmtInt(r.count) },
        { label: 'Min', num: true, value: (r) => fmtMs(r.min_ms) },
        { label: 'p50', num: true, value: (r) => fmtMs(r.p50_ms) },
        { label: 'p95', num: true, value: (r) => fmtMs(r.p95_ms) },
        { label: 'p99', num: true, value: (r) => fmtMs(r.p99_ms) },
        { label: 'Max', num: true, value: (r) => (r.max_result_id ? link(`/results/${encodeURIComponent(r.max_result_id)}`, fmtMs(r.max_ms)) : fmtMs(r.max_ms)) },
        { label: 'Mean', num: true, value: (r) => fmtMs(r.mean_ms) },
      ], rows, { empty: 'No finished results in this window.', label: 'Scan durations' }));
    });

    const loadJs = () => js.load(async (body) => {
      const s = await api('/api/jetstream/status', { signal: ctx.signal });
      const rows = [
        ...s.streams.map((r) => ({ kind: 'stream', ...r })),
        ...s.kv_buckets.map((r) => ({ kind: 'KV bucket', ...r })),
        ...s.object_stores.map((r) => ({ kind: 'object store', ...r })),
      ];
      mount(body, table([
        { label: 'Kind', value: (r) => r.kind },
        { label: 'Name', class: 'mono', value: (r) => r.name },
        { label: 'State', value: (r) => (r.exists ? badge('present', 'ok') : badge('missing', 'bad')) },
      ], rows, { empty: 'The broker reported no resources.', label: 'JetStream resources' }));
    });
    await Promise.all([loadScans(), loadJs()]);
    ctx.every(60_000, () => { loadScans(); loadJs(); });
  },
};
