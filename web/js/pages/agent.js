// One agent: identity and liveness, host charts (CPU, memory, disk,
// network) over the picked range with drag-to-zoom, the latest process
// table, and the stacked per-process timeline with its top-N selector.

import { api, ApiError, withQuery } from '../api.js';
import { TimeChart, alignPoints, colorForName, PALETTE } from '../chart.js';
import { rangeParams, resolveRange } from '../range.js';
import {
  fmtAgo, fmtBytes, fmtPct, fmtRate, fmtTime, h, livenessBadge, mount, stateBox, table,
} from '../ui.js';
import { panel, rangePicker, zoomTo } from '../widgets.js';

const HOST_CHARTS = [
  { id: 'cpu', title: 'CPU', fmt: fmtPct, series: [['cpu_pct', 'cpu']] },
  { id: 'mem', title: 'Memory', fmt: fmtBytes, series: [['mem_used_bytes', 'used'], ['mem_total_bytes', 'total']] },
  { id: 'disk', title: 'Disk', fmt: fmtRate, series: [['disk_read_bytes_per_sec', 'read'], ['disk_written_bytes_per_sec', 'write']] },
  { id: 'net', title: 'Network', fmt: fmtRate, series: [['net_rx_bytes_per_sec', 'rx'], ['net_tx_bytes_per_sec', 'tx']] },
];

const PROCESS_METRICS = [
  ['cpu', 'CPU', fmtPct], ['rss', 'Memory (RSS)', fmtBytes],
  ['disk_read', 'Disk read', fmtRate], ['disk_written', 'Disk write', fmtRate],
];
const TOP_CHOICES = [3, 5, 10, 20];

function identity(a) {
  return h('dl', { class: 'kv' },
    h('dt', {}, 'Hostname'), h('dd', {}, a.hostname ?? '—'),
    h('dt', {}, 'Status'), h('dd', {}, livenessBadge(a),
      ' ', h('span', { class: 'hint' }, `last heartbeat ${fmtAgo(a.last_heartbeat)}`)),
    h('dt', {}, 'OS'), h('dd', {}, a.os_family ?? '—'),
    h('dt', {}, 'Agent version'), h('dd', {}, a.agent_version ?? '—'),
    h('dt', {}, 'Agent footprint'), h('dd', {}, `${fmtPct(a.agent_cpu_pct)} CPU · ${fmtBytes(a.agent_rss_bytes)} RSS`));
}

function selectFromQuery(ctx, name, label, options, fallback, onChange) {
  const current = ctx.query.get(name) || fallback;
  const select = h('select', { name, 'aria-label': label },
    options.map(([v, text]) => h('option', { value: v, selected: String(v) === current }, text)));
  select.addEventListener('change', () => {
    ctx.setQuery({ [name]: select.value }, { push: true });
    onChange();
  });
  return h('label', {}, label, select);
}

export default {
  title: 'Agent',
  nav: 'agents',
  async render(ctx) {
    const pcId = ctx.params[0];
    document.title = `${pcId} · kanade`;
    const base = `/api/agents/${encodeURIComponent(pcId)}`;
    const picker = rangePicker(ctx, '24h', () => refreshRanged());
    const who = panel('Agent', { id: 'agent-info' });
    const hostPanels = HOST_CHARTS.map((c) => panel(c.title, { id: `host-${c.id}` }));
    const procPanel = panel('Latest processes', { id: 'latest-processes' });
    const timelineControls = h('div', { class: 'toolbar' },
      selectFromQuery(ctx, 'metric', 'Metric', PROCESS_METRICS.map(([v, t]) => [v, t]), 'cpu', () => refreshTimeline()),
      selectFromQuery(ctx, 'top', 'Top', TOP_CHOICES.map((n) => [String(n), `top ${n}`]), '5', () => refreshTimeline()));
    const timelinePanel = panel('Processes over time', { id: 'process-timeline', extra: timelineControls });
    mount(ctx.root,
      h('h1', {}, pcId),
      who.el,
      h('div', { class: 'toolbar', style: 'margin-top:14px' }, picker),
      h('div', { class: 'grid charts' }, hostPanels.map((p) => p.el)),
      timelinePanel.el,
      procPanel.el);

    const onZoom = zoomTo(ctx, picker, () => refreshRanged());
    const hostCharts = HOST_CHARTS.map((c) => new TimeChart(h('div', { class: 'chart' }), {
      series: c.series.map(([, label], i) => ({ label, color: PALETTE[i] })), fmt: c.fmt, onZoom, sync: 'host',
    }));
    const timelineChart = new TimeChart(h('div', { class: 'chart' }), {
      series: [], fmt: fmtPct, onZoom, stacked: true, height: 260,
    });
    ctx.onLeave(() => [...hostCharts, timelineChart].forEach((c) => c.destroy()));

    const refreshIdentity = () => who.load(async (body) => {
      try {
        mount(body, identity(await api(base, { signal: ctx.signal })));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) mount(body, stateBox('empty', 'No heartbeat from this PC yet; perf data below is what is stored.'));
        else throw e;
      }
    });

    async function refreshHost() {
      const range = resolveRange(ctx.query, '24h');
      let perf;
      try {
        perf = await api(withQuery(`${base}/perf`, rangeParams(range)), { signal: ctx.signal });
      } catch (e) {
        if (e.name === 'AbortError') return;
        hostPanels.forEach((p) => mount(p.body, stateBox('error', e.message)));
        return;
      }
      HOST_CHARTS.forEach((c, i) => {
        const { body } = hostPanels[i];
        if (!perf.points.length) {
          mount(body, stateBox('empty', 'No samples in this range.'));
          return;
        }
        const chart = hostCharts[i];
        if (!body.contains(chart.el)) mount(body, chart.el);
        chart.update(alignPoints(perf.points, perf.step_seconds, (p) => c.series.map(([col]) => p[col]), c.series.length));
      });
    }

    const refreshTimeline = () => timelinePanel.load(async (body) => {
      const range = resolveRange(ctx.query, '24h');
      const metric = ctx.query.get('metric') || 'cpu';
      const top = ctx.query.get('top') || '5';
      const tl = await api(withQuery(`${base}/processes/timeline`, { metric, top, ...rangeParams(range) }), { signal: ctx.signal });
      if (!tl.points.length) {
        mount(body, stateBox('empty', 'No process samples in this range (the PC is not under investigation).'));
        return;
      }
      timelineChart.fmt = (PROCESS_METRICS.find(([m]) => m === metric) || PROCESS_METRICS[0])[2];
      const series = tl.names.map((name) => ({ label: name, color: colorForName(name) }));
      if (!body.contains(timelineChart.el)) mount(body, timelineChart.el);
      const data = alignPoints(tl.points, tl.step_seconds, (p) => tl.names.map((n) => p.values[n] ?? null), tl.names.length);
      // The formatter is baked into the axes: rebuild when the metric changes.
      if (timelineChart.metric !== metric) timelineChart.series = [];
      timelineChart.metric = metric;
      timelineChart.update(data, series);
      body.dataset.names = tl.names.join(',');
    });

    const refreshProcesses = () => procPanel.load(async (body) => {
      const latest = await api(`${base}/processes`, { signal: ctx.signal });
      mount(body,
        latest.latest_at ? h('p', { class: 'hint' }, `tick at ${fmtTime(latest.latest_at)} (${fmtAgo(latest.latest_at)})`) : null,
        table([
          { label: 'PID', num: true, value: (p) => String(p.pid) },
          { label: 'Name', value: (p) => p.name },
          { label: 'CPU', num: true, value: (p) => fmtPct(p.cpu_pct) },
          { label: 'RSS', num: true, value: (p) => fmtBytes(p.rss_bytes) },
          { label: 'Disk read', num: true, value: (p) => fmtRate(p.disk_read_bytes_per_sec) },
          { label: 'Disk write', num: true, value: (p) => fmtRate(p.disk_written_bytes_per_sec) },
        ], latest.processes, { empty: 'No process samples: this PC is not under investigation.', label: 'Latest processes' }));
    });

    function refreshRanged() {
      return Promise.all([refreshHost(), refreshTimeline()]);
    }
    await Promise.all([refreshIdentity(), refreshRanged(), refreshProcesses()]);
    ctx.every(60_000, () => {
      refreshIdentity();
      refreshProcesses();
      if (!ctx.query.get('from')) refreshRanged();
    });
  },
};
