// Config: the agents' configuration scopes. `?scope=global|group|pc&name=`
// picks the scope to edit; the editor replaces it with a compare-and-set
// (`If-Match` from the GET's ETag), so a concurrent edit is refused (409)
// instead of overwritten. A PC scope also shows the PC's effective config,
// where each field comes from, and its group memberships. Mutations need
// the operator role: a refusal shows in place.

import { api, ApiError, request, withQuery } from '../api.js';
import {
  badge, fmtInt, h, link, mount, say, stateBox, table,
} from '../ui.js';
import { panel } from '../widgets.js';

const SCOPES = [['global', 'Global'], ['group', 'Group'], ['pc', 'PC']];

/** The fields of a scope: `[name, input type, placeholder]`. */
const FIELDS = [
  ['target_version', 'text', 'e.g. 0.43.56'],
  ['target_version_jitter', 'text', 'e.g. 30m'],
  ['heartbeat_interval', 'text', 'e.g. 30s'],
  ['host_perf_interval', 'text', 'e.g. 1m'],
  ['process_perf_enabled', 'checkbox'],
  ['process_perf_expires_at', 'text', 'RFC 3339, e.g. 2030-01-01T00:00:00Z'],
  ['process_perf_top_n', 'number', 'e.g. 10'],
];

const enc = encodeURIComponent;
const configHref = (scope, name) => withQuery('/config', { scope, name });

/** The API path of a scope's config. */
function scopePath(scope, name) {
  if (scope === 'group') return `/api/groups/${enc(name)}/config`;
  if (scope === 'pc') return `/api/pcs/${enc(name)}/config`;
  return '/api/config';
}

function scopeTitle(scope, name) {
  if (scope === 'group') return `Group ${name}`;
  if (scope === 'pc') return `PC ${name}`;
  return 'Global';
}

/** `"12"` → `12` (the KV revision an ETag carries). */
const revisionOf = (tag) => (tag ? tag.replace(/^W\//, '').replace(/"/g, '') : '?');

function valueText(v) {
  if (v === undefined || v === null || v === '') return '—';
  return String(v);
}

export default {
  title: 'Config',
  nav: 'config',
  async render(ctx) {
    const q = ctx.query;
    const scope = SCOPES.some(([v]) => v === q.get('scope')) ? q.get('scope') : 'global';
    const name = scope === 'global' ? '' : (q.get('name') || '').trim();
    if (scope !== 'global' && name) document.title = `${scopeTitle(scope, name)} · Config · kanade`;

    // Groups: every group with its size and whether it has a config.
    const groupsPanel = panel('Groups', { id: 'config-groups' });
    const groupNames = h('datalist', { id: 'config-group-names' });
    const pcNames = h('datalist', { id: 'config-pc-names' });
    const refreshGroups = () => groupsPanel.load(async (body) => {
      const { groups } = await api('/api/groups', { signal: ctx.signal });
      mount(groupNames, groups.map((g) => h('option', { value: g.name })));
      mount(body, table([
        { label: 'Group', value: (g) => link(configHref('group', g.name), g.name) },
        { label: 'Members', num: true, value: (g) => fmtInt(g.members.length) },
        { label: 'Config', value: (g) => (g.has_config ? badge('set', 'ok') : badge('none', 'muted')) },
      ], groups, { empty: 'No group yet: add a PC to one from its PC scope.', label: 'Groups' }));
    });

    // The scope picker: a submit puts the scope in the URL.
    const scopeSelect = h('select', { name: 'scope' },
      SCOPES.map(([v, label]) => h('option', { value: v, selected: v === scope }, label)));
    const nameInput = h('input', {
      name: 'name', value: name, spellcheck: 'false', autocomplete: 'off', placeholder: 'group name or PC id',
    });
    const syncName = () => {
      const global = scopeSelect.value === 'global';
      nameInput.disabled = global;
      nameInput.required = !global;
      nameInput.setAttribute('list', scopeSelect.value === 'pc' ? 'config-pc-names' : 'config-group-names');
    };
    scopeSelect.addEventListener('change', syncName);
    syncName();
    const picker = h('form', { class: 'inline', 'aria-label': 'Scope', id: 'config-scope' },
      h('label', {}, 'Scope', scopeSelect),
      h('label', {}, 'Group name / PC id', nameInput),
      h('button', { type: 'submit' }, 'Open'),
      groupNames, pcNames);
    picker.addEventListener('submit', (e) => {
      e.preventDefault();
      const s = scopeSelect.value;
      const n = s === 'global' ? '' : nameInput.value.trim();
      if (s !== 'global' && !n) return;
      ctx.navigate(configHref(s === 'global' ? '' : s, n));
    });

    const revisionEl = h('span', { class: 'hint', id: 'config-revision' });
    const editor = panel(`${scopeTitle(scope, name || '…')} scope`, { id: 'config-editor', extra: revisionEl });

    const main = [
      h('h1', {}, 'Config'),
      h('div', { class: 'toolbar' }, picker),
      h('div', { class: 'grid' }, editor.el, groupsPanel.el),
    ];
    const extras = [];

    if (scope !== 'global' && !name) {
      mount(ctx.root, ...main);
      mount(editor.body, stateBox('empty', `Enter a ${scope === 'pc' ? 'PC id' : 'group name'} and open it.`));
      await refreshGroups();
      return;
    }

    // The editor: one input per field; an empty input leaves the field unset.
    const path = scopePath(scope, name);
    let etag = null;
    let loaded = {};
    const inputs = FIELDS.map(([field, type, placeholder]) => {
      if (type === 'checkbox') {
        return h('label', { class: 'check' }, h('input', { type: 'checkbox', name: field }),
          `${field} (unchecked: unset)`);
      }
      return h('label', {}, field, h('input', {
        type, name: field, placeholder, spellcheck: 'false', autocomplete: 'off',
        step: type === 'number' ? '1' : undefined, min: type === 'number' ? '0' : undefined,
      }));
    });
    const saveButton = h('button', { type: 'submit', class: 'primary' }, 'Save');
    const reloadButton = h('button', { type: 'button', hidden: true }, 'Reload');
    const clearButton = scope === 'global' ? null : h('button', { type: 'button' }, 'Clear');
    const status = h('p', { id: 'config-status', 'aria-live': 'polite' });
    const form = h('form', { class: 'stack', 'aria-label': `${scopeTitle(scope, name)} config` },
      inputs,
      h('p', { class: 'hint' }, 'An empty field is unset: a narrower scope, or the default, applies.'),
      h('div', {}, saveButton, ' ', reloadButton, clearButton && ' ', clearButton),
      status);

    function fill(data, tag) {
      loaded = data && typeof data === 'object' ? data : {};
      etag = tag;
      for (const [field, type] of FIELDS) {
        const el = form.elements[field];
        if (type === 'checkbox') el.checked = loaded[field] === true;
        else el.value = loaded[field] === undefined || loaded[field] === null ? '' : String(loaded[field]);
      }
      revisionEl.textContent = `revision ${revisionOf(etag)}`;
    }

    /** The whole scope from the form; throws on a value the browser cannot parse. */
    function collect() {
      const out = {};
      for (const [field, type] of FIELDS) {
        const el = form.elements[field];
        if (type === 'checkbox') {
          if (el.checked) out[field] = true;
          else if (loaded[field] === false) out[field] = false; // keep an explicit false
        } else if (type === 'number') {
          if (el.validity.badInput) throw new Error(`invalid \`${field}\`: not a number`);
          if (el.value.trim() !== '') out[field] = Number(el.value);
        } else if (el.value.trim() !== '') {
          out[field] = el.value.trim();
        }
      }
      return out;
    }

    const ifMatch = () => (etag ? { 'If-Match': etag } : {});
    const loadScope = async () => {
      const res = await request(path, { signal: ctx.signal });
      fill(res.data, res.headers.get('ETag'));
    };
    const refreshAfterWrite = () => {
      refreshGroups();
      if (scope === 'pc') refreshEffective();
    };

    async function write(button, fn) {
      button.disabled = true;
      reloadButton.hidden = true;
      try {
        await fn();
      } catch (e) {
        if (e.name === 'AbortError') return;
        say(status, e.message, true);
        if (e instanceof ApiError && e.status === 409) reloadButton.hidden = false;
      } finally {
        button.disabled = false;
      }
    }

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      write(saveButton, async () => {
        const body = collect();
        say(status, 'Saving…');
        const res = await request(path, { method: 'PUT', body, headers: ifMatch(), signal: ctx.signal });
        fill(res.data, res.headers.get('ETag'));
        say(status, `Saved (revision ${revisionOf(etag)}).`);
        refreshAfterWrite();
      });
    });
    reloadButton.addEventListener('click', () => write(reloadButton, async () => {
      say(status, 'Reloading…');
      await loadScope();
      say(status, `Reloaded (revision ${revisionOf(etag)}).`);
    }));
    if (clearButton) {
      clearButton.addEventListener('click', () => {
        if (!window.confirm(`Clear the config of ${scopeTitle(scope, name)}? Its fields are then inherited.`)) return;
        write(clearButton, async () => {
          say(status, 'Clearing…');
          await request(path, { method: 'DELETE', headers: ifMatch(), signal: ctx.signal });
          await loadScope();
          say(status, 'Cleared.');
          refreshAfterWrite();
        });
      });
    }

    // A PC: its effective config (field, value, source), warnings, groups.
    const effective = panel('Effective config', { id: 'config-effective' });
    const refreshEffective = () => effective.load(async (body) => {
      const eff = await api(`/api/agents/${enc(name)}/effective_config`, { signal: ctx.signal });
      const rows = FIELDS.map(([field]) => field);
      const warnings = eff.warnings || [];
      mount(body,
        table([
          { label: 'Field', class: 'mono', value: (f) => f },
          { label: 'Value', class: 'mono', value: (f) => valueText(eff.effective?.[f]) },
          { label: 'Source', value: (f) => eff.sources?.[f] ?? 'default' },
        ], rows, { label: 'Effective config' }),
        warnings.length
          ? h('ul', { class: 'error-text', 'aria-label': 'Warnings', id: 'config-warnings' }, warnings.map((w) => h('li', {}, w)))
          : h('p', { class: 'hint', id: 'config-warnings' }, 'No warning.'));
    });

    const membership = panel('Groups of this PC', { id: 'config-pc-groups' });
    const memberList = h('div', {}, stateBox('loading'));
    const memberStatus = h('p', { id: 'config-pc-groups-status', 'aria-live': 'polite' });
    const groupInput = h('input', {
      name: 'group', list: 'config-group-names', spellcheck: 'false', autocomplete: 'off', required: true, placeholder: 'canary',
    });
    const addButton = h('button', { type: 'submit' }, 'Add');
    const addForm = h('form', { class: 'inline', 'aria-label': 'Add to a group' },
      h('label', {}, 'Add group', groupInput), addButton);
    const groupsPath = `/api/agents/${enc(name)}/groups`;

    function drawMembership(groups) {
      mount(memberList, groups.length
        ? h('ul', { 'aria-label': 'Groups of this PC' }, groups.map((g) => {
          const button = h('button', { type: 'button', class: 'ghost', 'aria-label': `Remove ${name} from ${g}` }, 'Remove');
          button.addEventListener('click', () => mutateGroups(button, `${groupsPath}/${enc(g)}`, 'DELETE', undefined,
            `Removed from ${g}.`));
          return h('li', { 'data-group': g }, link(configHref('group', g), g), ' ', button);
        }))
        : stateBox('empty', 'This PC is in no group.'));
    }

    async function mutateGroups(button, url, method, body, done) {
      button.disabled = true;
      say(memberStatus, 'Sending…');
      try {
        const res = await api(url, { method, body, signal: ctx.signal });
        drawMembership(res.groups || []);
        say(memberStatus, done);
        refreshGroups();
        refreshEffective();
      } catch (e) {
        if (e.name !== 'AbortError') say(memberStatus, e.message, true);
      } finally {
        button.disabled = false;
      }
    }

    addForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const g = groupInput.value.trim();
      if (!g) return;
      mutateGroups(addButton, groupsPath, 'POST', { group: g }, `Added to ${g}.`).then(() => {
        if (!memberStatus.classList.contains('error-text')) groupInput.value = '';
      });
    });
    const refreshMembership = () => membership.load(async (body) => {
      const res = await api(groupsPath, { signal: ctx.signal });
      mount(body, memberList, addForm, memberStatus);
      drawMembership(res.groups || []);
    });

    if (scope === 'pc') extras.push(h('div', { class: 'grid' }, effective.el, membership.el));
    mount(ctx.root, ...main, ...extras);
    mount(editor.body, stateBox('loading'));

    // Suggestions only: the picker works without them.
    api('/api/agents?limit=500', { signal: ctx.signal })
      .then((rows) => mount(pcNames, rows.map((a) => h('option', { value: a.pc_id }, a.hostname || ''))))
      .catch(() => {});

    await Promise.all([
      editor.load(async (body) => {
        await loadScope();
        mount(body, form);
      }),
      refreshGroups(),
      scope === 'pc' ? refreshEffective() : null,
      scope === 'pc' ? refreshMembership() : null,
    ]);
  },
};
