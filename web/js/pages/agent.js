// One agent: identity and liveness, host charts (CPU, memory, disk,
// network) over the picked range with drag-to-zoom, the latest process
// table, the stacked per-process timeline with its top-N selector, and
// requests to the agent itself: its log tail, and for operators a ping
// and an ad-hoc command with its output. An agent that does not answer
// is a 504 shown in place.

import { api, ApiError, canOperate, currentUser, withQuery } from '../api.js';
import { TimeChart, alignPoints, colorForName, PALETTE } from '../chart.js';
import { rangeParams, resolveRange } from '../range.js';
import {
  badge, fmtAgo, fmtBytes, fmtDuration, fmtMs, fmtPct, fmtRate, fmtTime, h, link, livenessBadge, mount,
  resultStatus, say, stateBox, table,
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
const SHELLS = ['powershell', 'cmd'];
const RUN_AS = [['system', 'System'], ['user', 'The logged-in user'], ['system_gui', "System, in the user's session"]];
/** What `POST /api/run` waits beyond the command's timeout. */
const RUN_SLACK_SECS = 10;

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

/** Ping: asks the agent for a heartbeat now; shows it, or the 504. */
function pingPanel(ctx, base) {
  const button = h('button', { type: 'button' }, 'Ping');
  const status = h('div', { id: 'agent-ping-status', 'aria-live': 'polite' });
  const p = panel('Ping', { id: 'agent-ping', extra: button });
  mount(p.body, h('p', { class: 'hint' }, 'Asks the agent for a heartbeat now (waits up to 5 s).'), status);
  button.addEventListener('click', async () => {
    button.disabled = true;
    delete status.dataset.answered;
    say(status, 'Pinging…');
    const started = performance.now();
    try {
      const { heartbeat: hb } = await api(`${base}/ping`, { method: 'POST', signal: ctx.signal });
      status.className = '';
      status.removeAttribute('role');
      mount(status, badge('answered', 'ok'),
        ` in ${fmtMs(Math.round(performance.now() - started))}: agent `, h('span', { class: 'mono' }, hb.agent_version),
        hb.hostname ? ` on ${hb.hostname}` : '', h('span', { class: 'hint' }, ` · heartbeat at ${fmtTime(hb.at)}`));
      status.dataset.answered = hb.agent_version;
    } catch (e) {
      if (e.name !== 'AbortError') say(status, e.message, true);
    } finally {
      button.disabled = false;
    }
  });
  return p;
}

/** Logs: the last lines of the agent's own log, fetched on demand. */
function logsPanel(ctx, base, pcId) {
  const tail = h('input', {
    type: 'number', name: 'tail', min: '1', max: '100000', step: '1', value: '200', size: 6, required: true,
  });
  const button = h('button', { type: 'submit' }, 'Fetch');
  const form = h('form', { class: 'inline', 'aria-label': 'Fetch the agent log' }, h('label', {}, 'Last lines', tail), button);
  const p = panel('Agent log', { id: 'agent-logs', extra: form });
  mount(p.body, stateBox('empty', "Fetch the last lines of the agent's log from the PC."));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    await p.load(async (body) => {
      mount(body, stateBox('loading', 'Asking the agent…'));
      const text = await api(withQuery(`${base}/logs`, { tail: tail.value }), { signal: ctx.signal, text: true });
      mount(body, text
        ? h('pre', { class: 'output mono', tabindex: '0', 'aria-label': `${pcId} agent log` }, text)
        : stateBox('empty', 'The log is empty.'));
    });
    button.disabled = false;
  });
  return p;
}

/** Run: one command on this PC, waiting for its exit code and output. */
function runPanel(ctx, pcId) {
  const button = h('button', { type: 'submit', class: 'primary' }, 'Run');
  const result = h('div', { id: 'agent-run-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', 'aria-label': 'Run a command' },
    h('div', { class: 'toolbar' },
      h('label', {}, 'Shell', h('select', { name: 'shell' }, SHELLS.map((s) => h('option', { value: s }, s)))),
      h('label', {}, 'Run as', h('select', { name: 'run_as' }, RUN_AS.map(([v, text]) => h('option', { value: v }, text)))),
      h('label', {}, 'Timeout (s)', h('input', {
        type: 'number', name: 'timeout_secs', min: '1', max: '86400', step: '1', value: '60', size: 6, required: true,
      }))),
    h('label', {}, 'Script', h('textarea', {
      name: 'script', class: 'mono', rows: 4, required: true, spellcheck: 'false', placeholder: 'Get-Service kanade-agent',
    })),
    h('div', {}, button),
    result);
  const p = panel('Run a command', { id: 'agent-run' });
  mount(p.body, form);
  const output = (label, text, object) => [
    h('h3', {}, label),
    object
      ? h('p', { class: 'hint' }, `Stored as the object ${object}; the result page shows it.`)
      : h('pre', { class: 'output mono', tabindex: '0', id: `agent-run-${label}`, 'aria-label': label }, text || '(empty)'),
  ];
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const timeout = Number(data.get('timeout_secs'));
    const body = {
      pc_id: pcId, script: String(data.get('script')), shell: data.get('shell'), timeout_secs: timeout, run_as: data.get('run_as'),
    };
    button.disabled = true;
    delete result.dataset.exitCode;
    say(result, `Running… (waits up to ${fmtMs((timeout + RUN_SLACK_SECS) * 1000)} for the result)`);
    try {
      const out = await api('/api/run', { method: 'POST', body, signal: ctx.signal });
      const s = resultStatus(out);
      result.className = '';
      result.removeAttribute('role');
      mount(result,
        h('p', {}, badge(s.text, s.cls), ` exit code ${out.exit_code} · ${fmtDuration(out)}`,
          out.result_id ? [' · ', link(`/results/${encodeURIComponent(out.result_id)}`, 'its result')] : null),
        output('stdout', out.stdout, out.stdout_object),
        output('stderr', out.stderr, out.stderr_object));
      result.dataset.exitCode = String(out.exit_code);
    } catch (err) {
      if (err.name !== 'AbortError') say(result, err.message, true);
    } finally {
      button.disabled = false;
    }
  });
  return p;
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
    const operator = canOperate((await currentUser()).role);
    mount(ctx.root,
      h('h1', {}, pcId),
      who.el,
      h('div', { class: 'toolbar', style: 'margin-top:14px' }, picker),
      h('div', { class: 'grid charts' }, hostPanels.map((p) => p.el)),
      timelinePanel.el,
      procPanel.el,
      operator ? h('div', { class: 'grid' }, pingPanel(ctx, base).el, runPanel(ctx, pcId).el) : null,
      logsPanel(ctx, base, pcId).el);

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
