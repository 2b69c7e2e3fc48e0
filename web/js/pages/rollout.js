// Rollout: the agent releases (newest first) and which scope targets each,
// publishing a release (the backend names it by the version inside the
// binary), deleting one (refused while a scope targets it), and pointing
// a scope (global, a group or a PC) at a release with an optional jitter.
// Where the global scope and every configured group point is listed; PC
// scopes are not (the API has no list of them). Viewers see the lists only.

import { api, canOperate, currentUser, upload, withQuery } from '../api.js';
import {
  badge, fmtBytes, fmtInt, fmtTime, h, link, mount, say, stateBox, table,
} from '../ui.js';
import { panel, progressBar } from '../widgets.js';

const SCOPES = [['global', 'Global'], ['group', 'Group'], ['pc', 'PC']];

const enc = encodeURIComponent;
const configHref = (scope, name) => withQuery('/config', { scope, name });

/**
 * Where each listable scope points: `{ label, title, href, scope }` for
 * global, then every group with a config (`label` as the backend names it).
 */
async function loadTargets(signal) {
  const [global, { groups }] = await Promise.all([
    api('/api/config', { signal }),
    api('/api/groups', { signal }),
  ]);
  const configured = groups.filter((g) => g.has_config);
  const scopes = await Promise.all(configured.map((g) => api(`/api/groups/${enc(g.name)}/config`, { signal })));
  return {
    groups,
    targets: [
      { label: 'global', title: 'Global', href: configHref(), scope: global || {} },
      ...configured.map((g, i) => ({
        label: `group:${g.name}`, title: `Group ${g.name}`, href: configHref('group', g.name), scope: scopes[i] || {},
      })),
    ],
  };
}

export default {
  title: 'Rollout',
  nav: 'rollout',
  async render(ctx) {
    const operator = canOperate((await currentUser()).role);
    const counts = h('span', { class: 'hint', 'aria-live': 'polite' });
    const releases = panel('Releases', { id: 'rollout-releases' });
    const releaseStatus = h('p', { id: 'rollout-release-status', 'aria-live': 'polite' });
    releases.el.append(releaseStatus);
    const targetsPanel = panel('Targets', { id: 'rollout-targets' });

    // Publish: the binary goes up with a progress bar; its version names it.
    const fileInput = h('input', { type: 'file', name: 'file', required: true, accept: '.exe' });
    const publishButton = h('button', { type: 'submit', class: 'primary' }, 'Publish');
    const publishProgress = progressBar('Upload progress');
    const publishStatus = h('p', { id: 'rollout-publish-status', 'aria-live': 'polite' });
    const publishForm = h('form', { class: 'stack', 'aria-label': 'Publish a release' },
      h('label', {}, 'Agent binary (Windows executable)', fileInput),
      h('p', { class: 'hint' }, 'The release is named by the version inside the binary (its VERSIONINFO).'),
      h('div', {}, publishButton),
      publishProgress.el, publishStatus);
    const publishPanel = panel('Publish a release', { id: 'rollout-publish' });
    mount(publishPanel.body, publishForm);

    // Rollout: a release, a scope, an optional jitter.
    const versionSelect = h('select', { name: 'version', required: true });
    const scopeSelect = h('select', { name: 'scope' },
      SCOPES.map(([v, label]) => h('option', { value: v }, label)));
    const nameInput = h('input', {
      name: 'name', spellcheck: 'false', autocomplete: 'off', placeholder: 'group name or PC id',
    });
    const syncName = () => {
      const global = scopeSelect.value === 'global';
      nameInput.disabled = global;
      nameInput.required = !global;
      nameInput.setAttribute('list', scopeSelect.value === 'pc' ? 'rollout-pc-names' : 'rollout-group-names');
    };
    scopeSelect.addEventListener('change', syncName);
    syncName();
    const groupNames = h('datalist', { id: 'rollout-group-names' });
    const pcNames = h('datalist', { id: 'rollout-pc-names' });
    const rolloutButton = h('button', { type: 'submit', class: 'primary' }, 'Roll out');
    const rolloutStatus = h('p', { id: 'rollout-status', 'aria-live': 'polite' });
    const rolloutForm = h('form', { class: 'stack', 'aria-label': 'Set the target version' },
      h('label', {}, 'Release', versionSelect),
      h('fieldset', {},
        h('legend', {}, 'Scope'),
        h('label', {}, 'Level', scopeSelect),
        h('label', {}, 'Group name / PC id', nameInput)),
      h('label', {}, 'Jitter (optional, e.g. 30m)',
        h('input', { name: 'jitter', size: 8, spellcheck: 'false', placeholder: '30m' })),
      h('p', { class: 'hint' }, "The scope's agents update to the release, each after a random delay up to the jitter."),
      h('div', {}, rolloutButton),
      rolloutStatus, groupNames, pcNames);
    const rolloutPanel = panel('Set the target version', { id: 'rollout-set' });
    mount(rolloutPanel.body, rolloutForm);

    mount(ctx.root,
      h('h1', {}, 'Rollout', counts),
      releases.el,
      operator
        ? h('div', { class: 'grid' }, publishPanel.el, rolloutPanel.el)
        : h('p', { class: 'hint', id: 'rollout-read-only' }, 'Read-only: publishing, deleting and rolling out need the operator role.'),
      targetsPanel.el);

    function drawVersions(rows) {
      const current = versionSelect.value;
      mount(versionSelect, rows.length
        ? rows.map((r) => h('option', { value: r.version, selected: r.version === current }, r.version))
        : h('option', { value: '' }, 'No release published yet'));
      rolloutButton.disabled = !rows.length;
    }

    function drawReleases(rows, targets) {
      const targetedBy = (version) => {
        const scopes = targets.filter((t) => t.scope.target_version === version);
        return scopes.length ? scopes.flatMap((t, i) => [i ? ', ' : '', link(t.href, t.label)]) : '—';
      };
      const columns = [
        { label: 'Version', class: 'mono', value: (r) => r.version },
        { label: 'Size', num: true, value: (r) => fmtBytes(r.size) },
        { label: 'Digest', class: 'mono', value: (r) => r.digest ?? '—' },
        { label: 'Published', value: (r) => fmtTime(r.modified) },
        { label: 'Targeted by', value: (r) => targetedBy(r.version) },
      ];
      if (operator) {
        columns.push({
          label: 'Action',
          value: (r) => {
            const button = h('button', { type: 'button', 'aria-label': `Delete ${r.version}` }, 'Delete');
            button.addEventListener('click', () => remove(button, r.version));
            return button;
          },
        });
      }
      counts.textContent = `${fmtInt(rows.length)} release(s)`;
      mount(releases.body, table(columns, rows, {
        empty: 'No release published yet (kanade agent publish <kanade-agent.exe>).', label: 'Releases',
      }));
    }

    function drawTargets(rows, targets) {
      const published = new Set(rows.map((r) => r.version));
      const release = (t) => {
        const v = t.scope.target_version;
        if (!v) return '';
        return published.has(v) ? badge('published', 'ok') : badge('not published', 'bad');
      };
      mount(targetsPanel.body,
        table([
          { label: 'Scope', value: (t) => link(t.href, t.title) },
          { label: 'Target version', class: 'mono', value: (t) => t.scope.target_version ?? '—' },
          { label: 'Release', value: release },
          { label: 'Jitter', class: 'mono', value: (t) => t.scope.target_version_jitter ?? '—' },
        ], targets, { label: 'Targets' }),
        h('p', { class: 'hint' }, 'A scope without a target inherits one from a wider scope. '
          + 'PC scopes are not listed: open a PC on the ', link('/config', 'Config'), ' page.'));
    }

    async function refresh() {
      try {
        const [rows, { groups, targets }] = await Promise.all([
          api('/api/agents/releases', { signal: ctx.signal }),
          loadTargets(ctx.signal),
        ]);
        drawReleases(rows, targets);
        drawTargets(rows, targets);
        drawVersions(rows);
        mount(groupNames, groups.map((g) => h('option', { value: g.name })));
      } catch (e) {
        if (e.name === 'AbortError') return;
        mount(releases.body, stateBox('error', e.message));
        mount(targetsPanel.body, stateBox('error', e.message));
      }
    }

    async function remove(button, version) {
      if (!window.confirm(`Delete release ${version}? Agents can no longer download it.`)) return;
      button.disabled = true;
      say(releaseStatus, `Deleting ${version}…`);
      try {
        await api(`/api/agents/releases/${enc(version)}`, { method: 'DELETE', signal: ctx.signal });
        say(releaseStatus, `Deleted ${version}.`);
        await refresh();
      } catch (e) {
        if (e.name === 'AbortError') return;
        say(releaseStatus, e.message, true);
        button.disabled = false;
      }
    }

    publishForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const file = fileInput.files[0];
      if (!file) return;
      publishButton.disabled = true;
      publishProgress.reset();
      delete publishStatus.dataset.version;
      say(publishStatus, `Uploading ${file.name}…`);
      try {
        const out = await upload('/api/agents/publish', file, { onProgress: publishProgress.track, signal: ctx.signal });
        say(publishStatus, `Published ${out.version} (${fmtBytes(out.size)}).`);
        publishStatus.dataset.version = out.version;
        publishForm.reset();
        await refresh();
      } catch (err) {
        if (err.name !== 'AbortError') say(publishStatus, err.message, true);
      } finally {
        publishButton.disabled = false;
      }
    });

    rolloutForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const version = versionSelect.value;
      const kind = scopeSelect.value;
      const name = nameInput.value.trim();
      const jitter = rolloutForm.elements.jitter.value.trim();
      if (!version || (kind !== 'global' && !name)) return;
      if (kind === 'global' && !window.confirm(`Point every agent (the global scope) at ${version}?`)) return;
      const body = { version, scope: kind === 'global' ? { type: 'global' } : { type: kind, value: name } };
      if (jitter) body.jitter = jitter;
      rolloutButton.disabled = true;
      delete rolloutStatus.dataset.scope;
      say(rolloutStatus, 'Sending…');
      try {
        const out = await api('/api/agents/rollout', { method: 'POST', body, signal: ctx.signal });
        say(rolloutStatus, `${out.scope_label} now targets ${out.version}${out.jitter ? ` (jitter ${out.jitter})` : ''}.`);
        rolloutStatus.dataset.scope = out.scope_label;
        await refresh();
      } catch (err) {
        if (err.name !== 'AbortError') say(rolloutStatus, err.message, true);
      } finally {
        rolloutButton.disabled = versionSelect.value === '';
      }
    });

    // Suggestions only: the form works without them.
    if (operator) {
      api('/api/agents?limit=500', { signal: ctx.signal })
        .then((rows) => mount(pcNames, rows.map((a) => h('option', { value: a.pc_id }, a.hostname || ''))))
        .catch(() => {});
    }
    await refresh();
  },
};
