// Health: per-job scan durations sorted by p95 (each max links to its
// run), over a `since` window kept in the URL, the JetStream check, and
// the backend's own key metrics (from /metrics).

import { api, withQuery } from '../api.js';
import { badge, fmtBytes, fmtInt, fmtMs, h, link, mount, table } from '../ui.js';
import { panel } from '../widgets.js';

/** OpenMetrics text as samples `{ name, labels, value }` (comments skipped). */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || line.startsWith('#')) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v.replace(/\\(.)/g, '$1');
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Rows keyed by one label, with one column per metric (or per value of a second label). */
function pivot(samples, key, pick) {
  const rows = new Map();
  for (const s of samples) {
    const col = pick(s);
    if (!col || s.labels[key] === undefined) continue;
    const row = rows.get(s.labels[key]) || { key: s.labels[key] };
    row[col] = (row[col] || 0) + s.value;
    rows.set(s.labels[key], row);
  }
  return [...rows.values()].sort((a, b) => a.key.localeCompare(b.key));
}

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
    const backend = panel('Backend', { id: 'backend-metrics' });
    mount(ctx.root, h('h1', {}, 'Health'), scans.el, js.el, backend.el);

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
    const loadBackend = () => backend.load(async (body) => {
      const samples = parseMetrics(await api('/metrics', { signal: ctx.signal, text: true }));
      const one = (name) => samples.find((s) => s.name === name)?.value;
      const ingest = pivot(samples, 'source', (s) => s.name === 'kanade_ingest_messages_total' && s.labels.outcome);
      const streams = pivot(samples, 'consumer', (s) => ({
        kanade_stream_consumer_position: 'position', kanade_stream_consumer_lag: 'lag',
      })[s.name]);
      const tables = pivot(samples, 'table', (s) => ({
        kanade_storage_head_rows: 'head_rows', kanade_storage_wal_bytes: 'wal_bytes',
        kanade_storage_files: 'files', kanade_storage_file_bytes: 'file_bytes',
      })[s.name]);
      const n = (v) => fmtInt(v || 0);
      mount(body,
        h('p', { class: 'hint', id: 'backend-broker' },
          one('kanade_nats_connected') === 1 ? badge('broker connected', 'ok') : badge('broker disconnected', 'bad'),
          ` · ${n(one('kanade_nats_reconnects_total'))} connection(s) made · ${n(one('kanade_scheduler_fires_total'))} schedule fire(s) by this backend`),
        table([
          { label: 'Source', class: 'mono', value: (r) => r.key },
          { label: 'Received', num: true, value: (r) => n(r.received) },
          { label: 'Stored rows', num: true, value: (r) => n(r.inserted) },
          { label: 'Duplicate', num: true, value: (r) => n(r.duplicate) },
          { label: 'Malformed', num: true, value: (r) => n(r.malformed) },
          { label: 'Refused', num: true, value: (r) => n(r.rejected) },
        ], ingest, { empty: 'Nothing received yet.', label: 'Ingest' }),
        table([
          { label: 'Consumer', class: 'mono', value: (r) => r.key },
          { label: 'Applied up to', num: true, value: (r) => n(r.position) },
          { label: 'Lag', num: true, value: (r) => (r.lag === undefined ? '—' : n(r.lag)) },
        ], streams, { empty: 'No stream consumers.', label: 'Stream consumers' }),
        table([
          { label: 'Table', class: 'mono', value: (r) => r.key },
          { label: 'Head rows', num: true, value: (r) => n(r.head_rows) },
          { label: 'WAL', num: true, value: (r) => fmtBytes(r.wal_bytes || 0) },
          { label: 'Files', num: true, value: (r) => n(r.files) },
          { label: 'On disk', num: true, value: (r) => fmtBytes(r.file_bytes || 0) },
        ], tables, { empty: 'No tables.', label: 'Perf tables' }));
    });
    await Promise.all([loadScans(), loadJs(), loadBackend()]);
    ctx.every(60_000, () => { loadScans(); loadJs(); loadBackend(); });
  },
};
