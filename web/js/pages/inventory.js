// Inventory: the fleet list of every inventory job with its summary
// columns (`?job=&offset=` page one job), one PC's facts (`?pc=`) with a
// history timeline per job (`?history=<job>&since=7d&kind=`), and the
// software search across the fleet (/inventory/search: manifest, explode
// field, filters and page all in the URL; CSV and Parquet downloads).

import { api, download, withQuery } from '../api.js';
import {
  badge, debounce, fmtBytes, fmtInt, fmtTime, h, link, mount, say, stateBox, table,
} from '../ui.js';
import { panel } from '../widgets.js';

const REFRESH_MS = 30_000;
const PAGE = 50;

/** A fact value as its display type says (`bytes`, `number`, `timestamp`, `table`). */
export function fmtFact(v, type) {
  if (v === null || v === undefined) return '—';
  if (type === 'table') return Array.isArray(v) ? `${fmtInt(v.length)} row(s)` : '—';
  if (type === 'bytes') return typeof v === 'number' && v > 0 ? fmtBytes(v) : String(v);
  if (type === 'number') return typeof v === 'number' ? fmtInt(v) : String(v);
  if (type === 'timestamp') return typeof v === 'string' && !Number.isNaN(Date.parse(v)) ? fmtTime(v) : String(v);
  return typeof v === 'string' ? v : JSON.stringify(v);
}

const pcHref = (pc) => withQuery('/inventory', { pc });

function tabs(active) {
  return h('nav', { class: 'seg', 'aria-label': 'Inventory views' },
    h('a', { href: '/inventory', class: 'seg-btn', 'aria-current': active === 'overview' ? 'page' : null }, 'Overview'),
    h('a', { href: '/inventory/search', class: 'seg-btn', 'aria-current': active === 'search' ? 'page' : null }, 'Software search'));
}

/** One job's fleet list, paged by 50. */
function fleetPanel(ctx, job) {
  const columns = job.summary ?? job.display ?? [];
  const p = panel(h('span', {}, job.manifest_id, job.description ? h('span', { class: 'hint' }, ` — ${job.description}`) : null),
    { id: `inventory-job-${job.manifest_id}` });
  p.el.dataset.job = job.manifest_id;
  async function load(offset) {
    await p.load(async (body) => {
      const page = await api(withQuery(`/api/inventory/by-job/${encodeURIComponent(job.manifest_id)}`, { limit: PAGE, offset }), { signal: ctx.signal });
      const end = offset + page.rows.length;
      const nav = h('div', { class: 'toolbar' },
        h('span', { class: 'hint' }, `${fmtInt(page.total)} PC(s) reported${page.total > PAGE ? ` · showing ${fmtInt(offset + 1)}–${fmtInt(end)}` : ''}`),
        offset > 0 ? h('button', { type: 'button', onclick: () => load(Math.max(0, offset - PAGE)) }, '← Previous') : null,
        end < page.total ? h('button', { type: 'button', onclick: () => load(end) }, 'Next →') : null);
      mount(body, nav, table([
        { label: 'PC', value: (r) => link(pcHref(r.pc_id), r.pc_id) },
        ...columns.map((c) => ({ label: c.label, num: c.type === 'number' || c.type === 'bytes', value: (r) => fmtFact(r.facts?.[c.field], c.type) })),
        { label: 'Collected', value: (r) => fmtTime(r.collected_at) },
      ], page.rows, { empty: `No facts yet. Run the job (kanade exec ${job.manifest_id}) to collect some.`, label: `Facts of ${job.manifest_id}` }));
    });
  }
  return { el: p.el, load };
}

/** A nested table of a `table` display field. */
function nested(value, columns) {
  if (!Array.isArray(value)) return '— (expected an array)';
  if (!value.length) return '— (none)';
  return table(columns.map((c) => ({
    label: c.label,
    value: (row) => (c.type === 'table' && c.columns ? nested(row?.[c.field], c.columns) : fmtFact(row?.[c.field], c.type)),
  })), value, { label: 'Rows' });
}

const SINCE = [['24h', 1], ['7d', 7], ['30d', 30], ['90d', 90], ['all', null]];
const KIND_CLASS = { added: 'ok', removed: 'bad', changed: 'warn' };

/** One PC's changes of one job, grouped by day, newest first. */
async function historyView(ctx, pc, jobId) {
  const since = ctx.query.get('since') || '7d';
  const kind = ctx.query.get('kind') || '';
  const days = SINCE.find(([k]) => k === since)?.[1];
  const from = days ? new Date(Date.now() - days * 86_400_000).toISOString() : null;
  const events = await api(withQuery(`/api/inventory/${encodeURIComponent(jobId)}/history/pc/${encodeURIComponent(pc)}`, { since: from }), { signal: ctx.signal });
  const shown = kind ? events.filter((e) => e.change_kind === kind) : events;
  const choose = (patch) => () => { ctx.setQuery(patch); ctx.rerender(); };
  const controls = h('div', { class: 'toolbar' },
    h('span', { class: 'seg', role: 'group', 'aria-label': 'Since' }, SINCE.map(([k]) => h('button', {
      type: 'button', class: 'seg-btn', 'aria-pressed': String(k === since), onclick: choose({ since: k }),
    }, k))),
    h('span', { class: 'seg', role: 'group', 'aria-label': 'Kind' }, ['', 'added', 'removed', 'changed'].map((k) => h('button', {
      type: 'button', class: 'seg-btn', 'aria-pressed': String(k === kind), onclick: choose({ kind: k }),
    }, k || 'any'))));
  if (!shown.length) return [controls, stateBox('empty', 'No change in this window.')];
  const byDay = new Map();
  for (const e of shown) {
    const day = new Date(e.observed_at).toLocaleDateString();
    if (!byDay.has(day)) byDay.set(day, []);
    byDay.get(day).push(e);
  }
  const text = (v) => (v === null || v === undefined ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
  const describe = (e) => {
    const before = e.before_json ? JSON.parse(e.before_json) : null;
    const after = e.after_json ? JSON.parse(e.after_json) : null;
    if (e.change_kind === 'added') return Object.entries(after || {}).map(([k, v]) => `${k}: ${text(v)}`).join(' · ');
    if (e.change_kind === 'removed') return Object.entries(before || {}).map(([k, v]) => `${k}: ${text(v)}`).join(' · ');
    const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])];
    return keys.filter((k) => JSON.stringify(before?.[k]) !== JSON.stringify(after?.[k]))
      .map((k) => `${k}: ${text(before?.[k])} → ${text(after?.[k])}`).join(' · ');
  };
  return [controls, h('ol', { class: 'timeline', 'aria-label': `History of ${jobId} on ${pc}` }, [...byDay].map(([day, list]) => h('li', {},
    h('details', { open: true },
      h('summary', {}, `${day} · ${fmtInt(list.length)} event(s)`),
      h('ul', {}, list.map((e) => h('li', { class: 'event', 'data-kind': e.change_kind },
        badge(e.change_kind, KIND_CLASS[e.change_kind] || 'muted'), ' ',
        h('code', {}, e.field_path), ' ',
        e.identity_json ? h('span', {}, Object.entries(JSON.parse(e.identity_json)).map(([k, v]) => `${k}: ${text(v)}`).join(' · ')) : null,
        ' ', h('span', { class: 'hint' }, describe(e)),
        ' ', h('time', { class: 'hint', datetime: e.observed_at }, fmtTime(e.observed_at)))))))))];
}

/** Every job's facts of one PC; `?history=<job>` shows that job's timeline. */
async function pcView(ctx, pc, body) {
  const facts = await api(`/api/inventory/${encodeURIComponent(pc)}`, { signal: ctx.signal });
  if (!facts.length) {
    mount(body, stateBox('empty', `No facts yet for ${pc}: it has not run an inventory job successfully.`));
    return;
  }
  const open = ctx.query.get('history');
  const cards = await Promise.all(facts.map(async (f) => {
    const showHistory = open === f.job_id;
    const toggle = h('span', { class: 'seg', role: 'group', 'aria-label': 'View' },
      h('button', { type: 'button', class: 'seg-btn', 'aria-pressed': String(!showHistory), onclick: () => { ctx.setQuery({ history: null }); ctx.rerender(); } }, 'Now'),
      h('button', { type: 'button', class: 'seg-btn', 'aria-pressed': String(showHistory), onclick: () => { ctx.setQuery({ history: f.job_id }); ctx.rerender(); } }, 'History'));
    const now = f.display.length
      ? table([
        { label: 'Field', value: (d) => d.label },
        { label: 'Value', class: 'wrap', value: (d) => (d.type === 'table' && d.columns ? nested(f.facts?.[d.field], d.columns) : h('code', {}, fmtFact(f.facts?.[d.field], d.type))) },
      ], f.display, { label: `Facts of ${f.job_id}` })
      : h('details', {}, h('summary', {}, 'raw JSON'), h('pre', {}, JSON.stringify(f.facts, null, 2)));
    return h('section', { class: 'panel', 'aria-label': f.job_id, 'data-job': f.job_id },
      h('div', { class: 'chart-title' }, h('h2', {}, f.job_id, h('span', { class: 'hint' }, ` · collected ${fmtTime(f.collected_at)}`)), toggle),
      h('div', { class: 'panel-body' }, showHistory ? await historyView(ctx, pc, f.job_id) : now));
  }));
  mount(body, h('p', {}, link('/inventory', '← back to the fleet view')), cards);
}

export default {
  title: 'Inventory',
  nav: 'inventory',
  async render(ctx) {
    const count = h('span', { class: 'hint', 'aria-live': 'polite' });
    const pcInput = h('input', { type: 'search', name: 'pc', placeholder: 'fleet (all PCs)', value: ctx.query.get('pc') || '', 'aria-label': 'PC' });
    const form = h('form', { class: 'inline', role: 'search', 'aria-label': 'Choose a PC' },
      h('label', {}, 'PC', pcInput), h('button', { type: 'submit', class: 'primary' }, 'Show'));
    const body = h('div', { id: 'inventory-body' }, stateBox('loading'));
    mount(ctx.root, h('h1', {}, 'Inventory ', count), tabs('overview'),
      h('section', { class: 'panel', 'aria-label': 'PC' }, form), body);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      ctx.setQuery({ pc: pcInput.value.trim(), history: null }, { push: true });
      ctx.rerender();
    });
    const run = async () => {
      try {
        const jobs = await api('/api/inventory/jobs', { signal: ctx.signal });
        count.textContent = `${fmtInt(jobs.length)} inventory job(s)`;
        const pc = ctx.query.get('pc');
        if (pc) {
          await pcView(ctx, pc, body);
          return;
        }
        if (!jobs.length) {
          mount(body, stateBox('empty', 'No inventory job registered (a job with an inventory: block).'));
          return;
        }
        const panels = jobs.map((j) => fleetPanel(ctx, j));
        mount(body, panels.map((p) => p.el));
        await Promise.all(panels.map((p) => p.load(0)));
      } catch (e) {
        if (e.name !== 'AbortError') mount(body, stateBox('error', e.message));
      }
    };
    ctx.rerender = run;
    await run();
    ctx.every(REFRESH_MS, () => { if (!ctx.query.get('history')) run(); });
  },
};

const OPS = {
  text: [['eq', '='], ['contains', 'contains'], ['prefix', 'starts with'], ['suffix', 'ends with'], ['ne', '≠']],
  number: [['eq', '='], ['lt', '<'], ['le', '≤'], ['gt', '>'], ['ge', '≥'], ['ne', '≠']],
};
const opsOf = (type) => (type === 'integer' || type === 'real' ? OPS.number : OPS.text);
const PAGE_SIZES = [50, 100, 250, 500, 1000];

/** The search's filters from the URL: `f=<column>__<op>:<value>` each. */
function filtersOf(q) {
  return q.getAll('f').map((s) => {
    const i = s.indexOf(':');
    const [column, op] = s.slice(0, i).split('__');
    return { column, op: op || 'eq', value: s.slice(i + 1) };
  }).filter((f) => f.column);
}

export const inventorySearch = {
  title: 'Software search',
  nav: 'inventory',
  async render(ctx) {
    const body = h('div', { id: 'search-body' }, stateBox('loading'));
    mount(ctx.root, h('h1', {}, 'Inventory'), tabs('search'), body);
    const jobs = (await api('/api/inventory/jobs', { signal: ctx.signal })).filter((j) => j.explode?.length);
    if (!jobs.length) {
      mount(body, stateBox('empty', 'No inventory manifest has an explode spec yet.'));
      return;
    }
    const q0 = ctx.query;
    const job = jobs.find((j) => j.manifest_id === q0.get('job')) || jobs[0];
    const spec = job.explode.find((s) => s.field === q0.get('field')) || job.explode[0];
    const typeOf = (col) => spec.columns.find((c) => c.field === col)?.type || 'text';
    let filters = filtersOf(q0).filter((f) => spec.columns.some((c) => c.field === f.column));
    const size = PAGE_SIZES.includes(Number(q0.get('size'))) ? Number(q0.get('size')) : 100;
    let offset = Math.max(0, Number(q0.get('offset')) || 0);

    const jobSelect = h('select', { name: 'job', 'aria-label': 'Manifest' }, jobs.map((j) => h('option', { value: j.manifest_id, selected: j === job }, j.manifest_id)));
    const fieldSelect = h('select', { name: 'field', 'aria-label': 'Explode field' }, job.explode.map((s) => h('option', { value: s.field, selected: s === spec }, s.field)));
    const sizeSelect = h('select', { name: 'size', 'aria-label': 'Page size' }, PAGE_SIZES.map((n) => h('option', { value: n, selected: n === size }, String(n))));
    const rowsBox = h('div', { class: 'filters' });
    const results = panel(`${job.manifest_id} · ${spec.field}`, { id: 'search-results' });
    const status = h('p', { class: 'hint', 'aria-live': 'polite' });
    /** The API's filter parameters: `column=value` or `column__op=value`. */
    const params = () => {
      const out = new URLSearchParams();
      for (const f of filters) if (f.value !== '') out.append(f.op === 'eq' ? f.column : `${f.column}__${f.op}`, f.value);
      return out;
    };
    const saveUrl = () => {
      const q = new URLSearchParams({ job: job.manifest_id, field: spec.field, size: String(size) });
      if (offset) q.set('offset', String(offset));
      for (const f of filters) q.append('f', `${f.column}__${f.op}:${f.value}`);
      history.replaceState(null, '', `/inventory/search?${q}`);
    };
    const exportButton = (format) => h('button', {
      type: 'button',
      onclick: async () => {
        say(status, `Preparing ${format.toUpperCase()}…`);
        try {
          const p = params();
          p.set('format', format);
          const { name, bytes } = await download(`/api/inventory/${encodeURIComponent(job.manifest_id)}/search/${encodeURIComponent(spec.field)}/export?${p}`,
            `${spec.table}.${format}`, { signal: ctx.signal });
          say(status, `Downloaded ${name} (${fmtBytes(bytes)}).`);
        } catch (e) {
          if (e.name !== 'AbortError') say(status, e.message, true);
        }
      },
    }, `Download ${format.toUpperCase()}`);

    function drawFilters() {
      mount(rowsBox, filters.map((f, i) => {
        const type = typeOf(f.column);
        const col = h('select', { 'aria-label': `Column of filter ${i + 1}` }, spec.columns.map((c) => h('option', { value: c.field, selected: c.field === f.column }, `${c.field} (${c.type || 'text'})`)));
        const op = h('select', { 'aria-label': `Operator of filter ${i + 1}` }, opsOf(type).map(([k, label]) => h('option', { value: k, selected: k === f.op }, label)));
        const value = h('input', { type: type === 'text' ? 'text' : 'number', step: 'any', value: f.value, 'aria-label': `Value of filter ${i + 1}` });
        col.addEventListener('change', () => { f.column = col.value; f.op = opsOf(typeOf(f.column))[0][0]; drawFilters(); search(); });
        op.addEventListener('change', () => { f.op = op.value; search(); });
        value.addEventListener('input', debounce(() => { f.value = value.value; offset = 0; search(); }, 300));
        return h('div', { class: 'inline filter-row' }, col, op, value,
          h('button', { type: 'button', 'aria-label': `Remove filter ${i + 1}`, onclick: () => { filters.splice(i, 1); drawFilters(); search(); } }, '×'));
      }));
    }

    async function search() {
      saveUrl();
      await results.load(async (box) => {
        const p = params();
        p.set('limit', String(size));
        if (offset) p.set('offset', String(offset));
        const rows = await api(`/api/inventory/${encodeURIComponent(job.manifest_id)}/search/${encodeURIComponent(spec.field)}?${p}`, { signal: ctx.signal });
        const nav = h('div', { class: 'toolbar' },
          h('span', { class: 'hint', id: 'search-count' }, rows.length ? `Rows ${fmtInt(offset + 1)}–${fmtInt(offset + rows.length)}${rows.length === size ? ' (more may follow)' : ''}` : ''),
          offset > 0 ? h('button', { type: 'button', onclick: () => { offset = Math.max(0, offset - size); search(); } }, '← Previous') : null,
          rows.length === size ? h('button', { type: 'button', onclick: () => { offset += size; search(); } }, 'Next →') : null);
        mount(box, h('p', { class: 'hint' }, `Table ${spec.table}: ${spec.columns.map((c) => c.field).join(', ')}`), nav, table([
          { label: 'PC', value: (r) => link(pcHref(r.pc_id), r.pc_id) },
          { label: 'Collected', value: (r) => fmtTime(r.collected_at) },
          ...spec.columns.map((c) => ({
            label: c.field,
            num: c.type === 'integer' || c.type === 'real',
            value: (r) => (r[c.field] === null || r[c.field] === undefined ? '—' : typeof r[c.field] === 'string' ? r[c.field] : JSON.stringify(r[c.field])),
          })),
        ], rows, { empty: 'No row matches these filters.', label: 'Search results' }));
      });
    }

    const pick = (patch) => {
      const q = new URLSearchParams({ job: patch.job ?? job.manifest_id, size: String(size) });
      if (patch.field) q.set('field', patch.field);
      ctx.navigate(`/inventory/search?${q}`);
    };
    jobSelect.addEventListener('change', () => pick({ job: jobSelect.value }));
    fieldSelect.addEventListener('change', () => pick({ field: fieldSelect.value }));
    sizeSelect.addEventListener('change', () => {
      ctx.navigate(`/inventory/search?${new URLSearchParams({ job: job.manifest_id, field: spec.field, size: sizeSelect.value })}`);
    });
    mount(body,
      h('section', { class: 'panel', 'aria-label': 'Search' },
        h('div', { class: 'inline' },
          h('label', {}, 'Manifest', jobSelect),
          h('label', {}, 'Field', fieldSelect),
          h('label', {}, 'Page size', sizeSelect)),
        rowsBox,
        h('div', { class: 'toolbar' },
          h('button', {
            type: 'button',
            onclick: () => { const c = spec.columns[0]; filters.push({ column: c.field, op: opsOf(c.type || 'text')[0][0], value: '' }); drawFilters(); },
          }, '+ add filter'),
          h('button', { type: 'button', onclick: () => { filters = []; offset = 0; drawFilters(); search(); } }, 'clear all'),
          exportButton('csv'), exportButton('parquet')),
        status),
      results.el);
    drawFilters();
    await search();
  },
};
