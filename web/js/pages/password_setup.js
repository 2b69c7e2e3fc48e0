// Password set-up / reset: the page a mailed (or handed-over) link opens.
// Public: the link's token is the credential; it works once.

import { api, ApiError } from '../api.js';
import { h, mount, stateBox } from '../ui.js';

export default {
  title: 'Choose a password',
  nav: null,
  async render(ctx) {
    const [token] = ctx.params;
    const path = `/api/auth/password-setup/${encodeURIComponent(token)}`;
    let link;
    try {
      link = await api(path, { signal: ctx.signal });
    } catch (e) {
      const why = e instanceof ApiError && e.status === 410
        ? 'This link has expired. Ask an administrator for a new one, or use “Forgot password” on the login page.'
        : 'This link is not valid (it may have been used already).';
      mount(ctx.root, h('h1', {}, 'Choose a password'), stateBox('error', why));
      return;
    }
    const err = h('p', { class: 'error-text', role: 'alert', 'aria-live': 'assertive' });
    const form = h('form', { class: 'stack panel login', 'aria-label': 'Choose a password' },
      h('p', {}, link.purpose === 'setup'
        ? `Welcome, ${link.username}: choose the password of your new account.`
        : `Choose a new password for ${link.username}.`),
      h('label', {}, 'New password (8 characters or more)',
        h('input', { name: 'password', type: 'password', autocomplete: 'new-password', minlength: 8, required: true })),
      h('label', {}, 'Repeat it',
        h('input', { name: 'again', type: 'password', autocomplete: 'new-password', minlength: 8, required: true })),
      h('button', { class: 'primary', type: 'submit' }, 'Set password'),
      err);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      if (data.get('password') !== data.get('again')) {
        err.textContent = 'The two passwords differ.';
        return;
      }
      try {
        await api(path, { method: 'POST', body: { password: data.get('password') } });
        mount(ctx.root, h('h1', {}, 'Password set'),
          h('p', {}, 'Your password is set. ', h('a', { href: '/login' }, 'Log in'), ' with it.'));
      } catch (e2) {
        err.textContent = e2 instanceof ApiError ? e2.message : String(e2);
      }
    });
    mount(ctx.root, h('h1', {}, 'Choose a password'), form);
    form.querySelector('input').focus();
  },
};
