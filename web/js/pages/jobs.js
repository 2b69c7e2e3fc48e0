// Jobs: the catalog with live counts and script status (`?q=` filters it);
// one job shows its fields, an exec form whose target stays in the URL
// (`?all=1&groups=&pcs=&jitter=`), kill / revoke, its recent executions
// and its YAML. Mutations need the operator role: a refusal shows in place.

import { api, withQuery } from '../api.js';
import {
  badge, commaList, debounce, fmtInt, fmtTime, h, link, mount, say, stateBox, table,
} from '../ui.js';
import { panel } from '../widgets.js';

const REFRESH_MS = 15_000;

/** `ACTIVE` / `REVOKED` from `/api/scripts/status`; a missing job is active. */
function scriptBadge(status) {
  return status === 'REVOKED' ? badge('revoked', 'bad') : badge('active', 'ok');
}

function executionBadge(x) {
  if (x.status === 'completed') return badge(x.failure_count ? 'completed with failures' : 'completed', x.failure_count ? 'bad' : 'ok');
  if (x.status === 'running') return badge('running', 'warn');
  return badge(x.status, 'muted');
}

const jobHref = (id) => `/jobs/${encodeURIComponent(id)}`;

export default {
  title: 'Jobs',
  nav: 'jobs',
  async render(ctx) {
    const search = h('input', {
      type: 'search', name: 'q', placeholder: 'id or description', value: ctx.query.get('q') || '', 'aria-label': 'Search jobs',
    });
    const counts = h('span', { class: 'hint', 'aria-live': 'polite' });
    const body = h('div', {}, stateBox('loading'));
    mount(ctx.root,
      h('h1', {}, 'Jobs', counts),
      h('div', { class: 'toolbar' }, h('label', {}, 'Search', search)),
      h('section', { class: 'panel', 'aria-label': 'Jobs', id: 'jobs-table' }, body));

    async function load() {
      const [jobs, scripts] = await Promise.all([
        api('/api/jobs', { signal: ctx.signal }),
        api('/api/scripts/status', { signal: ctx.signal }),
      ]);
      const q = (ctx.query.get('q') || '').toLowerCase();
      const rows = q
        ? jobs.filter((j) => j.id.toLowerCase().includes(q) || (j.description || '').toLowerCase().includes(q))
        : jobs;
      counts.textContent = q ? `${fmtInt(rows.length)} of ${fmtInt(jobs.length)}` : `${fmtInt(jobs.length)} registered`;
      mount(body, table([
        { label: 'Job', value: (j) => link(jobHref(j.id), j.id) },
        { label: 'Version', class: 'mono', value: (j) => j.version },
        { label: 'Description', class: 'wrap', value: (j) => j.description ?? '—' },
        { label: 'Running', num: true, value: (j) => fmtInt(j.live?.running) },
        { label: 'Pending', num: true, value: (j) => fmtInt(j.live?.pending) },
        { label: 'Script', value: (j) => scriptBadge(scripts[j.id]) },
      ], rows, {
        empty: q ? 'No job matches.' : 'No job registered yet (kanade job create <manifest.yaml>).',
        label: 'Jobs',
      }));
    }
    const run = () => load().catch((e) => {
      if (e.name !== 'AbortError') mount(body, stateBox('error', e.message));
    });

    search.addEventListener('input', debounce(() => {
      ctx.setQuery({ q: search.value.trim() });
      run();
    }, 250));
    await load();
    ctx.every(REFRESH_MS, run);
  },
};

function fields(job, revoked) {
  const ex = job.execute || {};
  const script = ex.script_object ? h('span', { class: 'mono' }, `object ${ex.script_object}`) : 'inline';
  return h('dl', { class: 'kv' },
    h('dt', {}, 'Version'), h('dd', { class: 'mono' }, job.version),
    h('dt', {}, 'Description'), h('dd', {}, job.description ?? '—'),
    h('dt', {}, 'Shell'), h('dd', {}, ex.shell ?? '—'),
    h('dt', {}, 'Script'), h('dd', {}, script, ' ', scriptBadge(revoked ? 'REVOKED' : 'ACTIVE')),
    h('dt', {}, 'Timeout'), h('dd', {}, ex.timeout ?? '—'),
    h('dt', {}, 'Run as'), h('dd', {}, ex.run_as ?? '—'),
    ex.cwd ? [h('dt', {}, 'Working directory'), h('dd', { class: 'mono' }, ex.cwd)] : null,
    h('dt', {}, 'Under way'),
    h('dd', {}, `${fmtInt(job.live?.running ?? 0)} running · ${fmtInt(job.live?.pending ?? 0)} pending`));
}

export const jobDetail = {
  title: 'Job',
  nav: 'jobs',
  async render(ctx) {
    const id = ctx.params[0];
    const enc = encodeURIComponent(id);
    document.title = `${id} · kanade`;

    async function fetchJob() {
      const [jobs, scripts] = await Promise.all([
        api('/api/jobs', { signal: ctx.signal }),
        api('/api/scripts/status', { signal: ctx.signal }),
      ]);
      return { job: jobs.find((j) => j.id === id) || null, revoked: scripts[id] === 'REVOKED' };
    }
    let current = await fetchJob();
    if (!current.job) {
      mount(ctx.root, h('h1', { class: 'mono' }, id), stateBox('empty', 'No job with this id in the catalog.'));
      return;
    }

    // Fields, kill and revoke.
    const scriptEl = h('span', { id: 'job-script' });
    const killButton = h('button', { type: 'button' }, 'Kill');
    const revokeButton = h('button', { type: 'button' }, 'Revoke');
    const actionStatus = h('div', { id: 'job-action-status', 'aria-live': 'polite' });
    const info = panel('Job', {
      id: 'job-info',
      extra: h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Job actions' }, killButton, revokeButton),
    });
    info.el.append(actionStatus);
    const drawInfo = () => {
      mount(scriptEl, scriptBadge(current.revoked ? 'REVOKED' : 'ACTIVE'));
      revokeButton.textContent = current.revoked ? 'Unrevoke' : 'Revoke';
      mount(info.body, fields(current.job, current.revoked));
    };
    const refreshInfo = () => info.load(async (body) => {
      current = await fetchJob();
      if (!current.job) {
        mount(body, stateBox('empty', 'This job is no longer in the catalog.'));
        return;
      }
      drawInfo();
    });

    // The exec form: its target is kept in the URL, so a link can prefill it.
    const q0 = ctx.query;
    const agents = h('datalist', { id: 'job-exec-agents' });
    const execResult = h('p', { id: 'exec-result', 'aria-live': 'polite' });
    const execButton = h('button', { type: 'submit', class: 'primary' }, 'Exec');
    const form = h('form', { class: 'stack', 'aria-label': 'Exec this job' },
      h('fieldset', {},
        h('legend', {}, 'Target'),
        h('label', { class: 'check' },
          h('input', { type: 'checkbox', name: 'all', checked: q0.get('all') === '1' }), 'All PCs'),
        h('label', {}, 'Groups (comma-separated)',
          h('input', { name: 'groups', value: q0.get('groups') || '', spellcheck: 'false', placeholder: 'canary, wave1' })),
        h('label', {}, 'PCs (comma-separated)',
          h('input', { name: 'pcs', list: 'job-exec-agents', value: q0.get('pcs') || '', spellcheck: 'false', autocomplete: 'off' }))),
      h('label', {}, 'Jitter (optional, e.g. 30s)',
        h('input', { name: 'jitter', value: q0.get('jitter') || '', size: 8, spellcheck: 'false', placeholder: '30s' })),
      h('div', {}, execButton),
      execResult, agents);
    const execPanel = panel('Exec', { id: 'job-exec' });
    mount(execPanel.body, form);

    const executions = panel('Recent executions', { id: 'job-executions' });
    const refreshExecutions = () => executions.load(async (body) => {
      const rows = await api(withQuery('/api/executions', { job_id: id, limit: 20 }), { signal: ctx.signal });
      mount(body, table([
        { label: 'Execution', class: 'mono', value: (x) => link(withQuery('/results', { exec_id: x.exec_id }), x.exec_id) },
        { label: 'Status', value: executionBadge },
        { label: 'Version', class: 'mono', value: (x) => x.version },
        { label: 'By', value: (x) => x.initiated_by },
        { label: 'Initiated', value: (x) => fmtTime(x.initiated_at) },
        { label: 'Targets', num: true, value: (x) => fmtInt(x.target_count) },
        { label: 'Success', num: true, value: (x) => fmtInt(x.success_count) },
        { label: 'Failure', num: true, value: (x) => fmtInt(x.failure_count) },
      ], rows, { empty: 'This job has not been executed yet.', label: 'Recent executions' }));
    });

    const yaml = panel('YAML', { id: 'job-yaml' });

    mount(ctx.root,
      h('h1', {}, h('span', { class: 'mono' }, id), scriptEl),
      h('div', { class: 'grid' }, info.el, execPanel.el),
      executions.el,
      yaml.el);
    drawInfo();

    // Suggestions only: the form works without them.
    api('/api/agents?limit=500', { signal: ctx.signal })
      .then((rows) => mount(agents, rows.map((a) => h('option', { value: a.pc_id }, a.hostname || ''))))
      .catch(() => {});

    async function act(button, path, done, question) {
      if (question && !window.confirm(question)) return;
      button.disabled = true;
      say(actionStatus, 'Sending…');
      try {
        await api(path, { method: 'POST', signal: ctx.signal });
        say(actionStatus, done);
        await Promise.all([refreshInfo(), refreshExecutions()]);
      } catch (e) {
        if (e.name !== 'AbortError') say(actionStatus, e.message, true);
      } finally {
        button.disabled = false;
      }
    }
    killButton.addEventListener('click', () => act(killButton, `/api/jobs/${enc}/kill`,
      'Kill sent to every pending and running execution of this job.',
      `Kill every pending and running execution of ${id}?`));
    revokeButton.addEventListener('click', () => (current.revoked
      ? act(revokeButton, `/api/scripts/${enc}/unrevoke`, 'Script unrevoked: agents run it again.')
      : act(revokeButton, `/api/scripts/${enc}/revoke`, 'Script revoked: agents refuse to run it.',
        `Revoke the script of ${id}? Agents refuse to run it until it is unrevoked.`)));

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const all = data.get('all') === 'on';
      const groups = commaList(data.get('groups'));
      const pcs = commaList(data.get('pcs'));
      const jitter = String(data.get('jitter') || '').trim();
      ctx.setQuery({ all: all ? '1' : null, groups: groups.join(','), pcs: pcs.join(','), jitter });
      const body = { target: { all, groups, pcs } };
      if (jitter) body.jitter = jitter;
      execButton.disabled = true;
      delete execResult.dataset.execId;
      say(execResult, 'Sending…');
      try {
        const out = await api(`/api/exec/${enc}`, { method: 'POST', body, signal: ctx.signal });
        execResult.className = '';
        execResult.removeAttribute('role');
        mount(execResult,
          'Exec ', h('span', { class: 'mono' }, out.exec_id),
          ` sent to ${fmtInt(out.target_count)} target(s): `,
          h('span', { class: 'mono' }, out.subjects.join(', ')), ' · ',
          link(withQuery('/results', { exec_id: out.exec_id }), 'its results'));
        execResult.dataset.execId = out.exec_id;
        refreshExecutions();
      } catch (err) {
        if (err.name !== 'AbortError') say(execResult, err.message, true);
      } finally {
        execButton.disabled = false;
      }
    });

    yaml.load(async (body) => {
      const text = await api(`/api/jobs/${enc}/yaml`, { signal: ctx.signal, text: true });
      mount(body, h('pre', { class: 'output mono', tabindex: '0', 'aria-label': `${id} manifest (YAML)` }, text));
    });
    await refreshExecutions();
    ctx.every(REFRESH_MS, () => {
      refreshInfo();
      refreshExecutions();
    });
  },
};
