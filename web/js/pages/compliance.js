// Compliance: the latest state of each fleet check on each PC. The counts
// per check cover every status; the rows leave out the OK ones unless
// "Include OK" is ticked. `?check=&include_ok=1` keep the filter in the URL.

import { api, withQuery } from '../api.js';
import {
  badge, fmtInt, fmtTime, h, link, mount, stateBox, table,
} from '../ui.js';
import { panel } from '../widgets.js';

const REFRESH_MS = 60_000;
/** Every status, worst first: `[status, badge class, column label]`. */
const STATUSES = [['fail', 'bad', 'Fail'], ['warn', 'warn', 'Warn'], ['unknown', 'muted', 'Unknown'], ['ok', 'ok', 'OK']];

function statusBadge(status) {
  const found = STATUSES.find(([s]) => s === status);
  return badge(status, found ? found[1] : 'muted');
}

const checkHref = (check, includeOk) => withQuery('/compliance', { check, include_ok: includeOk ? '1' : null });

export default {
  title: 'Compliance',
  nav: 'compliance',
  async render(ctx) {
    const q0 = ctx.query;
    const totals = h('span', { class: 'hint', 'aria-live': 'polite', id: 'compliance-totals' });
    const names = h('datalist', { id: 'compliance-check-names' });
    const checkInput = h('input', {
      name: 'check', list: 'compliance-check-names', value: q0.get('check') || '', spellcheck: 'false',
      autocomplete: 'off', placeholder: 'all checks',
    });
    const includeOk = h('input', { type: 'checkbox', name: 'include_ok', checked: q0.get('include_ok') === '1' });
    const form = h('form', { class: 'inline', role: 'search', 'aria-label': 'Filter checks' },
      h('label', {}, 'Check', checkInput),
      h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('label', { class: 'check' }, includeOk, 'Include OK rows'),
      names);
    const countsPanel = panel('Checks', { id: 'compliance-counts' });
    const rowsPanel = panel('PCs', { id: 'compliance-rows' });
    mount(ctx.root,
      h('h1', {}, 'Compliance', totals),
      h('section', { class: 'panel', 'aria-label': 'Filters' }, form),
      countsPanel.el,
      rowsPanel.el);

    const known = new Set();
    async function load() {
      const q = ctx.query;
      const check = q.get('check') || '';
      const withOk = q.get('include_ok') === '1';
      const data = await api(withQuery('/api/checks', { check, include_ok: withOk ? 'true' : null }), { signal: ctx.signal });
      for (const c of data.counts) known.add(c.check_name);
      mount(names, [...known].sort().map((n) => h('option', { value: n })));
      const sum = (s) => data.counts.reduce((n, c) => n + c[s], 0);
      totals.textContent = `${STATUSES.map(([s]) => `${fmtInt(sum(s))} ${s}`).join(' · ')} `
        + `across ${fmtInt(data.counts.length)} check(s)`;
      mount(countsPanel.body, table([
        { label: 'Check', value: (c) => link(checkHref(c.check_name, withOk), c.check_name) },
        ...STATUSES.map(([s, , label]) => ({ label, num: true, value: (c) => fmtInt(c[s]) })),
        { label: 'PCs', num: true, value: (c) => fmtInt(STATUSES.reduce((n, [s]) => n + c[s], 0)) },
      ], data.counts, {
        empty: check ? `No PC has reported the check ${check}.` : 'No check reported yet (a job with a fleet check reports one).',
        label: 'Checks',
      }));
      const hidden = withOk ? 0 : sum('ok');
      mount(rowsPanel.body,
        hidden ? h('p', { class: 'hint' }, `${fmtInt(hidden)} OK row(s) not shown.`) : null,
        table([
          { label: 'PC', value: (r) => link(`/agents/${encodeURIComponent(r.pc_id)}`, r.pc_id) },
          { label: 'Check', value: (r) => r.check_name },
          { label: 'Status', value: (r) => statusBadge(r.status) },
          { label: 'Detail', class: 'wrap', value: (r) => r.detail ?? '—' },
          { label: 'Recorded', value: (r) => fmtTime(r.recorded_at) },
        ], data.rows, { empty: withOk ? 'No row.' : 'Every PC is OK on this filter.', label: 'Check states' }));
    }
    const run = () => load().catch((e) => {
      if (e.name === 'AbortError') return;
      mount(countsPanel.body, stateBox('error', e.message));
      mount(rowsPanel.body, stateBox('error', e.message));
    });

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      ctx.setQuery({ check: checkInput.value.trim() }, { push: true });
      run();
    });
    includeOk.addEventListener('change', () => {
      ctx.setQuery({ include_ok: includeOk.checked ? '1' : null }, { push: true });
      run();
    });
    await run();
    ctx.every(REFRESH_MS, run);
  },
};
