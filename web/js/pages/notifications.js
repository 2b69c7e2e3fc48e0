// Notifications: what was sent to end users (newest first, read back from
// the broker's stream), who acknowledged the one picked (`?id=`), and, for
// operators, a form that sends one to all PCs, groups or PCs. A refusal
// (400) shows in place.

import { api, canOperate, currentUser, withQuery } from '../api.js';
import {
  badge, commaList, fmtInt, fmtTime, h, link, mount, say, stateBox, table,
} from '../ui.js';
import { panel } from '../widgets.js';

const REFRESH_MS = 30_000;
const PRIORITIES = [['info', 'muted'], ['warn', 'warn'], ['emergency', 'bad']];

function priorityBadge(priority) {
  const found = PRIORITIES.find(([p]) => p === priority);
  return badge(priority, found ? found[1] : 'muted');
}

const notificationHref = (id) => withQuery('/notifications', { id });

export default {
  title: 'Notifications',
  nav: 'notifications',
  async render(ctx) {
    const operator = canOperate((await currentUser()).role);
    const id = ctx.query.get('id') || '';
    const counts = h('span', { class: 'hint', 'aria-live': 'polite' });
    const list = panel('Sent', { id: 'notifications-table' });
    const acks = panel('Acknowledgements', { id: 'notification-acks' });
    let sent = [];

    // Send: target, priority, text; the answer names the subjects.
    const agents = h('datalist', { id: 'notification-agents' });
    const sendButton = h('button', { type: 'submit', class: 'primary' }, 'Send');
    const sendStatus = h('p', { id: 'notification-send-status', 'aria-live': 'polite' });
    const form = h('form', { class: 'stack', 'aria-label': 'Send a notification' },
      h('fieldset', {},
        h('legend', {}, 'Target'),
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'all' }), 'All PCs'),
        h('label', {}, 'Groups (comma-separated)',
          h('input', { name: 'groups', spellcheck: 'false', placeholder: 'canary, wave1' })),
        h('label', {}, 'PCs (comma-separated)',
          h('input', { name: 'pcs', list: 'notification-agents', spellcheck: 'false', autocomplete: 'off' }))),
      h('label', {}, 'Priority', h('select', { name: 'priority' },
        PRIORITIES.map(([p]) => h('option', { value: p }, p)))),
      h('label', {}, 'Title', h('input', { name: 'title', required: true, placeholder: 'Reboot tonight' })),
      h('label', {}, 'Body', h('textarea', { name: 'body', rows: 3, placeholder: 'Save your work before 22:00.' })),
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'require_ack' }),
        'Ask the user to acknowledge it'),
      h('label', {}, 'Expires (optional)', h('input', { type: 'datetime-local', name: 'expires_at' })),
      h('div', {}, sendButton),
      sendStatus, agents);
    const sendPanel = panel('Send a notification', { id: 'notification-send' });
    mount(sendPanel.body, form);

    mount(ctx.root,
      h('h1', {}, 'Notifications', counts),
      list.el,
      h('div', { class: 'grid' },
        acks.el,
        operator
          ? sendPanel.el
          : h('p', { class: 'hint', id: 'notifications-read-only' }, 'Read-only: sending needs the operator role.')));

    const refreshList = () => list.load(async (body) => {
      sent = await api('/api/notifications', { signal: ctx.signal });
      counts.textContent = `${fmtInt(sent.length)} sent`;
      mount(body, table([
        {
          label: 'Title',
          class: 'wrap',
          value: (n) => h('a', { href: notificationHref(n.id), 'aria-current': n.id === id ? 'true' : undefined }, n.title),
        },
        { label: 'Priority', value: (n) => priorityBadge(n.priority) },
        { label: 'Ack', value: (n) => (n.require_ack ? 'required' : '—') },
        { label: 'Issued', value: (n) => fmtTime(n.issued_at) },
        { label: 'By', value: (n) => n.issued_by ?? '—' },
        { label: 'Expires', value: (n) => (n.expires_at ? fmtTime(n.expires_at) : 'never') },
        { label: 'ID', class: 'mono', value: (n) => n.id },
      ], sent, { empty: 'No notification sent yet.', label: 'Sent notifications' }));
    });

    const refreshAcks = () => acks.load(async (body) => {
      if (!id) {
        mount(body, stateBox('empty', 'Pick a notification to see who acknowledged it.'));
        return;
      }
      const status = await api(`/api/notifications/${encodeURIComponent(id)}/ack_status`, { signal: ctx.signal });
      const n = sent.find((x) => x.id === id);
      mount(body,
        n
          ? h('div', {}, h('p', {}, h('strong', {}, n.title), ' ', priorityBadge(n.priority)), n.body ? h('p', { style: 'white-space:pre-wrap' }, n.body) : null)
          : h('p', { class: 'hint mono' }, id),
        n && !n.require_ack ? h('p', { class: 'hint' }, 'This notification does not ask for an acknowledgement.') : null,
        table([
          { label: 'PC', value: (a) => link(`/agents/${encodeURIComponent(a.pc_id)}`, a.pc_id) },
          { label: 'User SID', class: 'mono', value: (a) => a.user_sid },
          { label: 'Acknowledged', value: (a) => fmtTime(a.acked_at) },
        ], status.acks, { empty: 'No acknowledgement yet.', label: 'Acknowledgements' }));
    });

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const body = {
        priority: data.get('priority'),
        title: String(data.get('title') || '').trim(),
        body: String(data.get('body') || ''),
        require_ack: data.get('require_ack') === 'on',
        target: { all: data.get('all') === 'on', groups: commaList(data.get('groups')), pcs: commaList(data.get('pcs')) },
      };
      const expires = data.get('expires_at');
      if (expires) body.expires_at = new Date(expires).toISOString();
      sendButton.disabled = true;
      delete sendStatus.dataset.id;
      say(sendStatus, 'Sending…');
      try {
        const out = await api('/api/notifications', { method: 'POST', body, signal: ctx.signal });
        sendStatus.className = '';
        sendStatus.removeAttribute('role');
        mount(sendStatus,
          'Sent ', h('span', { class: 'mono' }, out.id), ' to ',
          h('span', { class: 'mono' }, out.subjects.join(', ')), ' · ',
          link(notificationHref(out.id), 'its acknowledgements'));
        sendStatus.dataset.id = out.id;
        form.reset();
        await refreshList();
      } catch (err) {
        if (err.name !== 'AbortError') say(sendStatus, err.message, true);
      } finally {
        sendButton.disabled = false;
      }
    });

    // Suggestions only: the form works without them.
    if (operator) {
      api('/api/agents?limit=500', { signal: ctx.signal })
        .then((rows) => mount(agents, rows.map((a) => h('option', { value: a.pc_id }, a.hostname || ''))))
        .catch(() => {});
    }
    await refreshList();
    await refreshAcks();
    ctx.every(REFRESH_MS, async () => {
      await refreshList();
      await refreshAcks();
    });
  },
};
