// Schedules: every schedule with its coverage counts and an enable /
// disable button (`?status=enabled|disabled` filters the list); one
// schedule shows its status, next fires, per-PC coverage (`?state=` filters
// it), its YAML and the disable form with its two cascades. Mutations need
// the operator role: a refusal shows in place.

import { api, ApiError, withQuery } from '../api.js';
import {
  badge, fmtInt, fmtTime, h, link, mount, resultStatus, say, stateBox, table,
} from '../ui.js';
import { panel } from '../widgets.js';

const REFRESH_MS = 30_000;
const TABS = [['', 'All'], ['enabled', 'Enabled'], ['disabled', 'Disabled']];
const STATES = [['ok', 'ok'], ['fail', 'bad'], ['running', 'warn'], ['pending', 'muted']];

/**
 * A schedule's `when` object in one line, as the backend prints it:
 * `per_pc once`, `per_pc every 6h`, `at 09:00 [mon-fri]`, `on [startup]`.
 */
export function whenText(when) {
  if (!when || typeof when !== 'object') return when ? String(when) : '—';
  const policy = (p) => {
    if (p === 'once') return 'once';
    if (p && typeof p === 'object' && p.every) return `every ${p.every}`;
    return JSON.stringify(p);
  };
  if ('per_pc' in when) return `per_pc ${policy(when.per_pc)}`;
  if ('per_target' in when) return `per_target ${policy(when.per_target)}`;
  if (when.calendar) {
    const { at, days } = when.calendar;
    return days && days.length ? `at ${at} [${days.join(',')}]` : `at ${at}`;
  }
  if (Array.isArray(when.on)) return `on [${when.on.join(',')}]`;
  return JSON.stringify(when);
}

function enabledBadge(enabled) {
  return enabled ? badge('enabled', 'ok') : badge('disabled', 'muted');
}

function stateBadge(state) {
  const found = STATES.find(([s]) => s === state);
  return badge(state, found ? found[1] : 'muted');
}

const scheduleHref = (id) => `/schedules/${encodeURIComponent(id)}`;
const enablePath = (id) => `/api/schedules/${encodeURIComponent(id)}/enable`;
const disablePath = (id, cascade = false, cascadeKill = false) => withQuery(
  `/api/schedules/${encodeURIComponent(id)}/disable`, { cascade: String(cascade), cascade_kill: String(cascadeKill) },
);

export default {
  title: 'Schedules',
  nav: 'schedules',
  async render(ctx) {
    const filter = TABS.some(([v]) => v === ctx.query.get('status')) ? ctx.query.get('status') : '';
    const tabs = h('nav', { class: 'seg', 'aria-label': 'Schedule status' }, TABS.map(([v, label]) => h('a', {
      href: withQuery('/schedules', { status: v }), 'aria-current': filter === v ? 'page' : undefined,
    }, label)));
    const counts = h('span', { class: 'hint', 'aria-live': 'polite' });
    const status = h('div', { id: 'schedules-status', 'aria-live': 'polite' });
    const body = h('div', {}, stateBox('loading'));
    mount(ctx.root,
      h('h1', {}, 'Schedules', counts),
      h('div', { class: 'toolbar' }, tabs),
      h('section', { class: 'panel', 'aria-label': 'Schedules', id: 'schedules-table' }, status, body));

    async function toggle(button, s) {
      button.disabled = true;
      say(status, `${s.enabled ? 'Disabling' : 'Enabling'} ${s.id}…`);
      try {
        await api(s.enabled ? disablePath(s.id) : enablePath(s.id), { method: 'POST', signal: ctx.signal });
        say(status, `${s.id} ${s.enabled ? 'disabled' : 'enabled'}.`);
        await load();
      } catch (e) {
        if (e.name === 'AbortError') return;
        say(status, e.message, true);
        button.disabled = false;
      }
    }

    async function load() {
      const [schedules, coverage] = await Promise.all([
        api('/api/schedules', { signal: ctx.signal }),
        api('/api/schedules/coverage', { signal: ctx.signal }),
      ]);
      const byId = new Map(coverage.map((c) => [c.id, c]));
      const rows = schedules.filter((s) => !filter || (filter === 'enabled') === Boolean(s.enabled));
      const on = schedules.filter((s) => s.enabled).length;
      counts.textContent = `${fmtInt(schedules.length)} schedule(s) · ${fmtInt(on)} enabled`;
      const count = (key) => (s) => fmtInt(byId.get(s.id)?.[key]);
      mount(body, table([
        { label: 'Schedule', value: (s) => link(scheduleHref(s.id), s.id) },
        { label: 'Job', value: (s) => link(`/jobs/${encodeURIComponent(s.job_id)}`, s.job_id) },
        { label: 'When', class: 'mono', value: (s) => whenText(s.when) },
        { label: 'TZ', value: (s) => s.tz ?? 'local' },
        { label: 'Status', value: (s) => enabledBadge(s.enabled) },
        { label: 'OK', num: true, value: count('ok') },
        { label: 'Fail', num: true, value: count('fail') },
        { label: 'Running', num: true, value: count('running') },
        { label: 'Pending', num: true, value: count('pending') },
        { label: 'PCs', num: true, value: count('total') },
        {
          label: 'Action',
          value: (s) => {
            const button = h('button', {
              type: 'button', 'aria-label': `${s.enabled ? 'Disable' : 'Enable'} ${s.id}`,
            }, s.enabled ? 'Disable' : 'Enable');
            button.addEventListener('click', () => toggle(button, s));
            return button;
          },
        },
      ], rows, {
        empty: filter ? `No ${filter} schedule.` : 'No schedule yet (kanade schedule create <schedule.yaml>).',
        label: 'Schedules',
      }));
    }
    const run = () => load().catch((e) => {
      if (e.name !== 'AbortError') mount(body, stateBox('error', e.message));
    });
    await load();
    ctx.every(REFRESH_MS, run);
  },
};

function statusFields(st, cov) {
  const last = st.last_run;
  let lastRun = '—';
  if (last) {
    const s = resultStatus(last);
    lastRun = [link(`/agents/${encodeURIComponent(last.pc_id)}`, last.pc_id), ' ', badge(s.text, s.cls),
      h('span', { class: 'hint' }, ` started ${fmtTime(last.started_at)}`)];
  }
  return h('dl', { class: 'kv' },
    h('dt', {}, 'When'), h('dd', { class: 'mono' }, st.when),
    h('dt', {}, 'Job'), h('dd', {}, link(`/jobs/${encodeURIComponent(cov.job_id)}`, cov.job_id)),
    h('dt', {}, 'Time zone'), h('dd', {}, st.tz),
    h('dt', {}, 'Runs on'), h('dd', {}, cov.runs_on),
    h('dt', {}, 'Status'), h('dd', {}, enabledBadge(st.enabled)),
    h('dt', {}, 'Next run'), h('dd', {}, st.next_run ? fmtTime(st.next_run) : '—'),
    h('dt', {}, 'Last run'), h('dd', {}, lastRun),
    h('dt', {}, `Last ${st.recent.window_hours} h`),
    h('dd', {}, `${fmtInt(st.recent.ok)} ok · ${fmtInt(st.recent.fail)} failed`));
}

export const scheduleDetail = {
  title: 'Schedule',
  nav: 'schedules',
  async render(ctx) {
    const id = ctx.params[0];
    const base = `/api/schedules/${encodeURIComponent(id)}`;
    document.title = `${id} · kanade`;
    let st;
    let cov;
    try {
      [st, cov] = await Promise.all([
        api(`${base}/status`, { signal: ctx.signal }),
        api(`${base}/coverage`, { signal: ctx.signal }),
      ]);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        mount(ctx.root, h('h1', { class: 'mono' }, id), stateBox('empty', 'No schedule with this id.'));
        return;
      }
      throw e;
    }

    const enabledEl = h('span', { id: 'schedule-enabled' });
    const statusPanel = panel('Status', { id: 'schedule-status' });
    const firesPanel = panel('Next fires', { id: 'schedule-fires' });
    const stateSeg = h('div', { class: 'seg', role: 'group', 'aria-label': 'Coverage state' });
    const coveragePanel = panel('Coverage', { id: 'schedule-coverage', extra: stateSeg });
    const yamlPanel = panel('YAML', { id: 'schedule-yaml' });
    const toggleBox = h('section', { class: 'panel', id: 'schedule-toggle', 'aria-label': 'Enable or disable' });
    const toggleStatus = h('p', { id: 'schedule-toggle-status', 'aria-live': 'polite' });

    // Coverage: the state filter lives in `?state=`; the rows are redrawn
    // from the last answer, without a new request.
    const currentState = () => {
      const s = ctx.query.get('state') || '';
      return STATES.some(([v]) => v === s) ? s : '';
    };
    function drawCoverage() {
      const filter = currentState();
      mount(stateSeg, [['', 'all', cov.total], ...STATES.map(([s]) => [s, s, cov[s]])].map(([v, label, n]) => h('button', {
        type: 'button',
        'data-filter': v || 'all',
        'aria-pressed': String(filter === v),
        onclick: () => {
          ctx.setQuery({ state: v || null }, { push: true });
          drawCoverage();
        },
      }, `${label} ${fmtInt(n)}`)));
      const rows = filter ? cov.agents.filter((a) => a.state === filter) : cov.agents;
      mount(coveragePanel.body,
        h('p', { class: 'hint' },
          `${fmtInt(cov.total)} PC(s) targeted: ${fmtInt(cov.ok)} ok · ${fmtInt(cov.fail)} failed · `
          + `${fmtInt(cov.running)} running · ${fmtInt(cov.pending)} pending`),
        table([
          { label: 'PC', value: (a) => link(`/agents/${encodeURIComponent(a.pc_id)}`, a.pc_id) },
          { label: 'State', value: (a) => stateBadge(a.state) },
          { label: 'Version', class: 'mono', value: (a) => a.version ?? '—' },
          { label: 'Finished', value: (a) => fmtTime(a.finished_at) },
        ], rows, { empty: filter ? `No PC in state ${filter}.` : 'The target has no PC.', label: 'Coverage' }));
    }

    // Enable, or disable with its two cascades; redrawn only when the
    // state flips, so a poll never clears a ticked box.
    let drawnEnabled = null;
    function drawToggle() {
      if (drawnEnabled === st.enabled) return;
      drawnEnabled = st.enabled;
      if (!st.enabled) {
        const button = h('button', { type: 'button', class: 'primary' }, 'Enable');
        button.addEventListener('click', () => mutate(button, `${base}/enable`, 'Enabled.'));
        mount(toggleBox, h('h2', {}, 'Enable'),
          h('p', { class: 'hint' }, 'This schedule is disabled: it fires nothing until it is enabled.'),
          button, toggleStatus);
        return;
      }
      const button = h('button', { type: 'submit' }, 'Disable');
      const form = h('form', { class: 'stack', 'aria-label': 'Disable this schedule' },
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'cascade' }),
          "also revoke the job's script (cascade)"),
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'cascade_kill' }),
          'also kill runs in flight (cascade_kill)'),
        h('div', {}, button));
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const cascade = form.elements.cascade.checked;
        const cascadeKill = form.elements.cascade_kill.checked;
        const also = [cascade && `revoke the script of ${cov.job_id}`, cascadeKill && 'kill its runs in flight'].filter(Boolean);
        if (also.length && !window.confirm(`Disable ${id} and ${also.join(' and ')}?`)) return;
        mutate(button, withQuery(`${base}/disable`, { cascade: String(cascade), cascade_kill: String(cascadeKill) }), 'Disabled.');
      });
      mount(toggleBox, h('h2', {}, 'Disable'), form, toggleStatus);
    }

    function drawStatus() {
      mount(enabledEl, enabledBadge(st.enabled));
      mount(statusPanel.body, statusFields(st, cov));
      drawToggle();
    }

    const refreshStatus = () => statusPanel.load(async () => {
      st = await api(`${base}/status`, { signal: ctx.signal });
      drawStatus();
    });
    const refreshCoverage = () => coveragePanel.load(async () => {
      cov = await api(`${base}/coverage`, { signal: ctx.signal });
      drawCoverage();
      drawStatus(); // the job link and runs_on come from the coverage
    });
    const refreshFires = () => firesPanel.load(async (body) => {
      const p = await api(withQuery(`${base}/preview`, { count: 5 }), { signal: ctx.signal });
      const head = h('p', { class: 'hint' }, h('span', { class: 'mono' }, p.when), ` (${p.tz})`);
      if (!p.fires.length) {
        mount(body, head, stateBox('empty', p.note || 'No upcoming fires.'));
        return;
      }
      mount(body, head, h('ol', { class: 'fires', 'aria-label': 'Next fires' }, p.fires.map((iso) => h('li', {},
        h('time', { datetime: iso }, fmtTime(iso)), ' ', h('span', { class: 'hint mono' }, iso)))));
    });
    const refreshYaml = () => yamlPanel.load(async (body) => {
      const text = await api(`${base}/yaml`, { signal: ctx.signal, text: true });
      mount(body, h('pre', { class: 'output mono', tabindex: '0', 'aria-label': `${id} schedule (YAML)` }, text));
    });

    async function mutate(button, path, done) {
      button.disabled = true;
      say(toggleStatus, 'Sending…');
      try {
        await api(path, { method: 'POST', signal: ctx.signal });
        say(toggleStatus, done);
        await Promise.all([refreshStatus(), refreshYaml()]);
      } catch (e) {
        if (e.name !== 'AbortError') say(toggleStatus, e.message, true);
      } finally {
        button.disabled = false;
      }
    }

    mount(ctx.root,
      h('h1', {}, h('span', { class: 'mono' }, id), enabledEl),
      h('div', { class: 'grid' }, statusPanel.el, firesPanel.el),
      toggleBox,
      coveragePanel.el,
      yamlPanel.el);
    drawStatus();
    drawCoverage();
    await Promise.all([refreshFires(), refreshYaml()]);
    ctx.every(REFRESH_MS, () => {
      refreshStatus();
      refreshCoverage();
      refreshFires();
    });
  },
};
