// One result: its fields and output; while the run is in flight the live
// tail is polled every 2 s until the result lands.

import { api, ApiError } from '../api.js';
import {
  badge, fmtDuration, fmtTime, h, link, mount, resultStatus, stateBox,
} from '../ui.js';

const TAIL_MS = 2000;

function output(title, text, truncated) {
  return h('section', { class: 'panel', 'aria-label': title },
    h('h2', {}, title, truncated ? h('span', { class: 'hint' }, ' (truncated by the agent)') : null),
    text ? h('pre', { class: 'output mono' }, text) : stateBox('empty', `No ${title}.`));
}

function fields(r) {
  const s = resultStatus(r);
  return h('section', { class: 'panel' }, h('dl', { class: 'kv' },
    h('dt', {}, 'Status'), h('dd', {}, badge(s.text, s.cls)),
    h('dt', {}, 'PC'), h('dd', {}, link(`/agents/${encodeURIComponent(r.pc_id)}`, r.pc_id)),
    h('dt', {}, 'Job'), h('dd', {}, r.job_id ?? '—', r.version ? h('span', { class: 'hint' }, ` v${r.version}`) : null),
    h('dt', {}, 'Execution'), h('dd', { class: 'mono' }, r.exec_id ?? '—'),
    h('dt', {}, 'Request'), h('dd', { class: 'mono' }, r.request_id),
    h('dt', {}, 'Started'), h('dd', {}, fmtTime(r.started_at)),
    h('dt', {}, 'Finished'), h('dd', {}, fmtTime(r.finished_at)),
    h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(r)),
    h('dt', {}, 'Exit code'), h('dd', {}, r.finished_at ? String(r.exit_code ?? '—') : '—')));
}

export default {
  title: 'Result',
  nav: 'results',
  async render(ctx) {
    const id = ctx.params[0];
    const base = `/api/results/${encodeURIComponent(id)}`;
    let r;
    try {
      r = await api(base, { signal: ctx.signal });
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        mount(ctx.root, h('h1', {}, id), stateBox('empty', 'No result with this id.'));
        return;
      }
      throw e;
    }
    document.title = `${id} · kanade`;
    if (r.finished_at) {
      mount(ctx.root, h('h1', { class: 'mono' }, id), fields(r),
        output('stdout', r.stdout, r.stdout_truncated), output('stderr', r.stderr, r.stderr_truncated));
      return;
    }
    const live = h('span', { class: 'hint', 'aria-live': 'polite' }, 'waiting for the agent…');
    const outs = h('div', { class: 'stack-gap' });
    mount(ctx.root,
      h('h1', {}, h('span', { class: 'mono' }, id), h('span', { class: 'live-dot', title: 'live' }), live),
      fields(r), outs);
    let stopped = false;
    const poll = async () => {
      if (stopped) return;
      const t = await api(`${base}/tail`, { signal: ctx.signal });
      if (!t.running) {
        stopped = true;
        ctx.navigate(`/results/${encodeURIComponent(id)}`, { replace: true });
        return;
      }
      live.textContent = t.live ? `live output, ${new Date().toLocaleTimeString()}` : 'waiting for the agent…';
      mount(outs, output('stdout', t.stdout, t.stdout_truncated), output('stderr', t.stderr, t.stderr_truncated));
    };
    const tick = () => poll().catch((e) => {
      if (e.name !== 'AbortError') live.textContent = `tail failed: ${e.message}`;
    });
    await tick();
    ctx.every(TAIL_MS, tick);
  },
};
