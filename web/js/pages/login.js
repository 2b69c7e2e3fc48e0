// Login: an account (username/password, then the forced password change
// if the account needs one) or a service token pasted as is.

import { api, ApiError, request, setToken } from '../api.js';
import { h, mount } from '../ui.js';
import * as webauthn from '../webauthn.js';

function nextUrl(ctx) {
  const next = ctx.query.get('next');
  // Only same-site paths: never bounce to another origin after login.
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

function errorLine() {
  return h('p', { class: 'error-text', role: 'alert', 'aria-live': 'assertive' });
}

function accountForm(ctx) {
  const err = errorLine();
  const form = h('form', { class: 'stack', 'aria-label': 'Account login' },
    h('h2', {}, 'Account'),
    h('label', {}, 'Username', h('input', { name: 'username', autocomplete: 'username', required: true })),
    h('label', {}, 'Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
    // Shown once the backend says the account has a second factor.
    h('label', { class: 'mfa-code', hidden: true }, 'Authenticator code',
      h('input', { name: 'totp_code', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6 })),
    h('button', { class: 'primary', type: 'submit' }, 'Log in'),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    const data = new FormData(form);
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const body = { username: data.get('username'), password: data.get('password') };
      const codeField = form.querySelector('.mfa-code');
      if (!codeField.hidden) body.totp_code = (data.get('totp_code') || '').trim();
      const res = await api('/api/auth/login', { method: 'POST', body });
      if (res.mfa_required) {
        codeField.hidden = false;
        codeField.querySelector('input').required = true;
        codeField.querySelector('input').focus();
        err.textContent = 'Enter the code from your authenticator app.';
        return;
      }
      setToken(res.token);
      if (res.must_change_pw) {
        ctx.setQuery({ change: '1' });
        showChange(ctx, data.get('password'));
      } else {
        await ctx.refreshIdentity();
        ctx.navigate(nextUrl(ctx), { replace: true });
      }
    } catch (e2) {
      err.textContent = e2.status === 401 ? 'Wrong username, password or code.' : e2.message;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** "Sign in with a passkey": no username, the authenticator picks the account. */
function passkeyButton(ctx) {
  const err = errorLine();
  const button = h('button', { type: 'button', class: 'passkey' }, 'Sign in with a passkey');
  button.addEventListener('click', async () => {
    err.textContent = '';
    button.disabled = true;
    try {
      const started = await api('/api/auth/passkey/login/start', { method: 'POST', body: {} });
      const credential = await webauthn.get(started.options);
      const res = await api('/api/auth/passkey/login/finish', {
        method: 'POST', body: { challenge_id: started.challenge_id, credential },
      });
      setToken(res.token);
      if (res.must_change_pw) {
        ctx.setQuery({ change: '1' });
        showChange(ctx);
      } else {
        await ctx.refreshIdentity();
        ctx.navigate(nextUrl(ctx), { replace: true });
      }
    } catch (e) {
      err.textContent = e.name === 'NotAllowedError' ? 'Cancelled or timed out.' : e.message;
    } finally {
      button.disabled = false;
    }
  });
  return h('div', { class: 'stack', 'aria-label': 'Passkey sign-in' }, button, err);
}

function tokenForm(ctx) {
  const err = errorLine();
  const form = h('form', { class: 'stack', 'aria-label': 'Service token' },
    h('h2', {}, 'Service token'),
    h('label', {}, 'Token', h('input', { name: 'token', type: 'password', autocomplete: 'off', required: true })),
    h('button', { type: 'submit' }, 'Use token'),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    setToken(new FormData(form).get('token').trim());
    try {
      await request('/api/auth/me');
      await ctx.refreshIdentity();
      ctx.navigate(nextUrl(ctx), { replace: true });
    } catch (e2) {
      setToken(null);
      err.textContent = e2.status === 401 ? 'The backend does not accept this token.' : e2.message;
    }
  });
  return form;
}

function showChange(ctx, oldPassword = '') {
  const err = errorLine();
  const form = h('form', { class: 'stack panel login', 'aria-label': 'Change password' },
    h('h2', {}, 'Choose a new password'),
    h('p', { class: 'muted' }, 'This account must change its password before it can be used.'),
    h('label', {}, 'Current password', h('input', { name: 'old', type: 'password', autocomplete: 'current-password', required: true, value: oldPassword })),
    h('label', {}, 'New password (8 characters or more)', h('input', { name: 'new', type: 'password', autocomplete: 'new-password', minlength: 8, required: true })),
    h('button', { class: 'primary', type: 'submit' }, 'Change password'),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    try {
      // A password change ends the account's earlier tokens, this one
      // included: log in again with the new password.
      const me = await api('/api/auth/me');
      await api('/api/auth/change-password', {
        method: 'POST', body: { old_password: data.get('old'), new_password: data.get('new') },
      });
      const res = await api('/api/auth/login', {
        method: 'POST', body: { username: me.username, password: data.get('new') },
      });
      setToken(res.token);
      await ctx.refreshIdentity();
      ctx.navigate(nextUrl(ctx), { replace: true });
    } catch (e2) {
      err.textContent = e2 instanceof ApiError ? e2.message : String(e2);
    }
  });
  mount(ctx.root, h('h1', {}, 'Log in'), form);
  form.querySelector('input[name=new]').focus();
}

function forgotForm() {
  const note = h('p', { class: 'muted', role: 'status', 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', 'aria-label': 'Forgot password' },
    h('label', {}, 'Username', h('input', { name: 'username', autocomplete: 'username', required: true })),
    h('button', { type: 'submit' }, 'Mail me a reset link'),
    note);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    note.textContent = '';
    try {
      await api('/api/auth/forgot-password', {
        method: 'POST', body: { username: new FormData(form).get('username') },
      });
      note.textContent = 'If the account has an email address, a reset link is on its way.';
    } catch (e2) {
      note.textContent = e2.status === 429 ? 'Too many requests: try again later.' : e2.message;
    }
  });
  return h('details', { class: 'forgot' }, h('summary', {}, 'Forgot password?'), form);
}

export default {
  title: 'Log in',
  nav: null,
  async render(ctx) {
    if (ctx.query.get('change') === '1') {
      showChange(ctx);
      return;
    }
    const account = accountForm(ctx);
    let passkeys = false;
    try {
      passkeys = webauthn.supported()
        && (await api('/api/auth/passkey/config', { signal: ctx.signal })).enabled;
    } catch (e) {
      if (e.name === 'AbortError') throw e;
    }
    mount(ctx.root,
      h('div', { class: 'login' },
        h('h1', {}, 'Log in to kanade'),
        h('div', { class: 'panel' }, account, passkeys ? passkeyButton(ctx) : null, forgotForm()),
        h('div', { class: 'panel' }, tokenForm(ctx))));
    account.querySelector('input').focus();
  },
};
