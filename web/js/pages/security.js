// Security (admin): accounts (create by password or by a set-up link,
// role, page group, disable, reset link, remove a lost second factor) and
// permission groups (pages per group, members, delete when empty). A
// refusal (400/409) shows in place; a link the backend could not mail is
// shown for the admin to hand over.

import { api } from '../api.js';
import { badge, fmtTime, h, mount, say, table } from '../ui.js';
import { panel } from '../widgets.js';

const FEATURES = ['dashboard', 'run', 'exec', 'agents', 'inventory', 'compliance', 'activity',
  'events', 'audit', 'logs', 'collect', 'analytics', 'jobs', 'schedules', 'views',
  'notifications', 'rollout', 'agent-install', 'apps', 'groups', 'config', 'jetstream',
  'accounts', 'settings', 'remote'];

const enc = encodeURIComponent;

export default {
  title: 'Security',
  nav: 'security',
  async render(ctx) {
    const status = h('p', { id: 'security-status', class: 'hint', 'aria-live': 'polite' });
    const accounts = panel('Accounts', { id: 'accounts' });
    const groups = panel('Permission groups', { id: 'permission-groups' });
    let groupNames = [];

    const act = async (what, fn) => {
      try {
        const answer = await fn();
        say(status, answer?.link ? `${what}: done; hand over this link: ${answer.link}` : `${what}: done.`);
        await load();
      } catch (e) {
        say(status, `${what}: ${e.message}`, true);
      }
    };

    const accountRows = (rows) => table([
      { label: 'Account', value: (a) => a.username },
      { label: 'Role', value: (a) => a.role },
      { label: 'Email', value: (a) => a.email || '—' },
      { label: 'Pages', value: (a) => a.permission_group ? `group ${a.permission_group}` : (a.allowed_features ? a.allowed_features.join(', ') || 'none' : 'all') },
      { label: 'MFA', value: (a) => a.mfa_enabled ? badge('on', 'ok') : badge('off', 'muted') },
      { label: 'State', value: (a) => a.disabled ? badge('disabled', 'bad') : badge('enabled', 'ok') },
      { label: 'Changed', value: (a) => fmtTime(a.updated_at) },
      {
        label: 'Actions',
        value: (a) => h('div', { class: 'actions' },
          h('button', { type: 'button', onclick: () => act(`reset link for ${a.username}`,
            () => api(`/api/accounts/${enc(a.username)}/reset-link`, { method: 'POST' })) }, 'Reset link'),
          a.mfa_enabled ? h('button', { type: 'button', onclick: () => act(`remove the second factor of ${a.username}`,
            () => api(`/api/accounts/${enc(a.username)}/mfa`, { method: 'DELETE' })) }, 'Remove MFA') : null,
          h('button', { type: 'button', onclick: () => act(`${a.disabled ? 'enable' : 'disable'} ${a.username}`,
            () => api(`/api/accounts/${enc(a.username)}`, { method: 'PATCH', body: { disabled: !a.disabled } })) },
          a.disabled ? 'Enable' : 'Disable')),
      },
    ], rows, { label: 'Accounts' });

    const groupRows = (rows) => table([
      { label: 'Group', value: (g) => g.name },
      { label: 'Pages', value: (g) => g.features.join(', ') || 'none' },
      { label: 'Members', value: (g) => String(g.member_count), num: true },
      {
        label: 'Actions',
        value: (g) => h('button', { type: 'button', onclick: () => act(`delete group ${g.name}`,
          () => api(`/api/permission-groups/${enc(g.name)}`, { method: 'DELETE' })) }, 'Delete'),
      },
    ], rows, { label: 'Permission groups', empty: 'No permission group: every account sees the pages of its own list.' });

    const groupSelect = h('select', { name: 'permission_group' });
    const createAccount = h('form', { class: 'stack', 'aria-label': 'Create an account' },
      h('label', {}, 'Username', h('input', { name: 'username', required: true, autocomplete: 'off' })),
      h('label', {}, 'Role', h('select', { name: 'role' }, ['viewer', 'operator', 'admin'].map((r) => h('option', { value: r }, r)))),
      h('label', {}, 'Email (without a password: a set-up link goes there)', h('input', { name: 'email', type: 'email', autocomplete: 'off' })),
      h('label', {}, 'Password (optional)', h('input', { name: 'password', type: 'password', autocomplete: 'new-password' })),
      h('label', {}, 'Permission group', groupSelect),
      h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Create')));
    createAccount.addEventListener('submit', (e) => {
      e.preventDefault();
      const d = new FormData(createAccount);
      const body = { username: d.get('username'), role: d.get('role') };
      for (const k of ['email', 'password', 'permission_group']) if (d.get(k)) body[k] = d.get(k);
      act(`create account ${body.username}`, async () => {
        const made = await api('/api/accounts', { method: 'POST', body });
        return made?.setup_link ? { link: made.setup_link } : made;
      });
    });

    const createGroup = h('form', { class: 'stack', 'aria-label': 'Create a permission group' },
      h('label', {}, 'Name', h('input', { name: 'name', required: true, autocomplete: 'off' })),
      h('fieldset', { class: 'checks' }, h('legend', {}, 'Pages'),
        FEATURES.map((f) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'features', value: f }), f))),
      h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Create group')));
    createGroup.addEventListener('submit', (e) => {
      e.preventDefault();
      const d = new FormData(createGroup);
      const body = { name: d.get('name'), features: d.getAll('features') };
      act(`create group ${body.name}`, () => api('/api/permission-groups', { method: 'POST', body }));
    });

    async function load() {
      const [users, gs] = await Promise.all([
        api('/api/accounts', { signal: ctx.signal }),
        api('/api/permission-groups', { signal: ctx.signal }),
      ]);
      groupNames = gs.map((g) => g.name);
      mount(groupSelect, h('option', { value: '' }, '(none: the account\'s own pages)'),
        groupNames.map((n) => h('option', { value: n }, n)));
      mount(accounts.body, accountRows(users));
      mount(groups.body, groupRows(gs));
    }

    mount(ctx.root,
      h('h1', {}, 'Security'),
      status,
      accounts.el,
      groups.el,
      h('div', { class: 'grid' },
        h('section', { class: 'panel', 'aria-label': 'New account' }, h('h2', {}, 'New account'), createAccount),
        h('section', { class: 'panel', 'aria-label': 'New permission group' }, h('h2', {}, 'New permission group'), createGroup)));
    await accounts.load(load);
  },
};
