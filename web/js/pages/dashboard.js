// Dashboard: fleet health, fleet CPU/memory over the picked range, the
// busiest PCs, active investigations and recent failures. Refreshes every
// 30 s (`?refresh=10` for a wall display; at least 5 s) in place: charts
// swap data, tables swap rows, nothing flickers through a loading state.

import { api, request, withQuery } from '../api.js';
import { TimeChart, alignPoints, PALETTE } from '../chart.js';
import { rangeParams, resolveRange } from '../range.js';
import {
  badge, fmtAgo, fmtBytes, fmtInt, fmtPct, fmtTime, h, link, mount, stateBox, table,
} from '../ui.js';
import { panel, rangePicker, zoomTo } from '../widgets.js';

const REFRESH_SECS = 30;
const MIN_REFRESH_SECS = 5;

function statusBadge(status) {
  const cls = { ok: 'ok', degraded: 'bad', unknown: 'muted' }[status] || 'warn';
  return badge(status, cls);
}

function card(label, value, sub) {
  return h('div', { class: 'panel card' },
    h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub && h('div', { class: 'sub' }, sub));
}

function healthCards(body, fleet) {
  const js = fleet.jetstream;
  mount(body, h('div', { class: 'grid cards' },
    card('Status', statusBadge(fleet.status), `checked ${fmtTime(fleet.observed_at)}`),
    card('Agents', fmtInt(fleet.agents.known), `${fmtInt(fleet.agents.active)} active · ${fmtInt(fleet.agents.stale)} stale`),
    card('JetStream', `${js.healthy}/${js.total}`, js.missing.length ? `missing: ${js.missing.join(', ')}` : 'all resources present'),
    card(`Results (${fleet.recent_results.window_hours} h)`, fmtInt(fleet.recent_results.total),
      h('span', { class: fleet.recent_results.failed ? 'error-text' : '' }, `${fmtInt(fleet.recent_results.failed)} failed`))));
}

export default {
  title: 'Dashboard',
  nav: 'dashboard',
  async render(ctx) {
    const picker = rangePicker(ctx, '24h', () => refreshCharts());
    const healthPanel = panel('Fleet health', { id: 'fleet-health' });
    const cpuPanel = panel('Fleet CPU', { id: 'fleet-cpu' });
    const memPanel = panel('Fleet memory used', { id: 'fleet-mem' });
    const topPanel = panel('Busiest PCs (CPU, last 5 min)', { id: 'top-pcs' });
    const invPanel = panel('Active investigations', { id: 'investigations' });
    const failPanel = panel('Recent failed results', { id: 'recent-failures' });
    const updated = h('span', { class: 'hint', 'aria-live': 'polite' });
    mount(ctx.root,
      h('h1', {}, 'Fleet', updated),
      healthPanel.el,
      h('div', { class: 'toolbar', style: 'margin-top:14px' }, picker),
      h('div', { class: 'grid' }, cpuPanel.el, memPanel.el),
      h('div', { class: 'grid' }, topPanel.el, invPanel.el),
      failPanel.el);

    const charts = [];
    const onZoom = zoomTo(ctx, picker, () => refreshCharts());
    const cpuChart = new TimeChart(h('div', { class: 'chart' }), {
      series: [{ label: 'average', color: PALETTE[0] }, { label: 'max', color: PALETTE[1] }],
      fmt: fmtPct, onZoom, sync: 'fleet',
    });
    const memChart = new TimeChart(h('div', { class: 'chart' }), {
      series: [{ label: 'average per PC', color: PALETTE[2] }, { label: 'max', color: PALETTE[3] }],
      fmt: fmtBytes, onZoom, sync: 'fleet',
    });
    charts.push(cpuChart, memChart);
    ctx.onLeave(() => charts.forEach((c) => c.destroy()));

    const fleetSeries = async (metric, agg, range) => api(
      withQuery('/api/perf/fleet', { metric, agg, ...rangeParams(range) }), { signal: ctx.signal });

    async function drawChart(p, chart, metric) {
      await p.load(async (body) => {
        const range = resolveRange(ctx.query, '24h');
        const [avg, max] = await Promise.all([fleetSeries(metric, 'avg', range), fleetSeries(metric, 'max', range)]);
        const maxAt = new Map(max.points.map((pt) => [pt.at, pt.value]));
        if (!avg.points.length) {
          mount(body, stateBox('empty', 'No samples in this range.'));
          return;
        }
        if (!body.contains(chart.el)) mount(body, chart.el);
        chart.update(alignPoints(avg.points, avg.step_seconds, (pt) => [pt.value, maxAt.get(pt.at)], 2));
      });
    }

    async function refreshCharts() {
      await Promise.all([drawChart(cpuPanel, cpuChart, 'cpu'), drawChart(memPanel, memChart, 'mem')]);
    }

    const refreshHealth = () => healthPanel.load(async (body) => {
      const { data } = await request('/api/health/fleet', { signal: ctx.signal, accept: [503] });
      healthCards(body, data);
    });

    const refreshTop = () => topPanel.load(async (body) => {
      const top = await api('/api/perf/top?metric=cpu&window=5m&limit=10', { signal: ctx.signal });
      mount(body, table([
        { label: 'PC', value: (r) => link(`/agents/${encodeURIComponent(r.pc_id)}`, r.pc_id) },
        { label: 'Hostname', value: (r) => r.hostname ?? '—' },
        { label: 'CPU', num: true, value: (r) => fmtPct(r.value) },
      ], top.rows, { empty: 'No samples in the last 5 minutes.', label: 'Busiest PCs' }));
    });

    const refreshInvestigations = () => invPanel.load(async (body) => {
      const inv = await api('/api/perf/active-investigations', { signal: ctx.signal });
      mount(body, table([
        { label: 'PC', value: (r) => link(`/agents/${encodeURIComponent(r.pc_id)}?range=1h`, r.pc_id) },
        { label: 'Hostname', value: (r) => r.hostname ?? '—' },
        { label: 'Latest sample', value: (r) => fmtAgo(r.latest_at) },
      ], inv.rows, { empty: 'No PC is sending process samples.', label: 'Active investigations' }));
    });

    const refreshFailures = () => failPanel.load(async (body) => {
      const rows = await api('/api/results?status=failure&limit=10', { signal: ctx.signal });
      mount(body, table([
        { label: 'Result', value: (r) => link(`/results/${encodeURIComponent(r.result_id)}`, r.result_id), class: 'mono' },
        { label: 'PC', value: (r) => r.pc_id },
        { label: 'Job', value: (r) => r.job_id ?? '—' },
        { label: 'Exit', num: true, value: (r) => String(r.exit_code ?? '—') },
        { label: 'Finished', value: (r) => fmtTime(r.finished_at) },
      ], rows, { empty: 'No failed results.', label: 'Recent failed results' }));
    });

    const refreshAll = async () => {
      await Promise.all([refreshHealth(), refreshCharts(), refreshTop(), refreshInvestigations(), refreshFailures()]);
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    };
    await Promise.all([refreshHealth(), refreshCharts()]);
    performance.mark('kanade:dashboard-data');
    await Promise.all([refreshTop(), refreshInvestigations(), refreshFailures()]);
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    const secs = parseInt(ctx.query.get('refresh') || '', 10);
    const every = Number.isFinite(secs) ? Math.max(MIN_REFRESH_SECS, secs) : REFRESH_SECS;
    ctx.every(every * 1000, refreshAll);
  },
};
