// Account: the caller's own password, second factor (TOTP) and passkeys.
// Adding or removing a passkey re-enters the password (and a code when
// the account has a second factor), as the backend asks. A service token
// or an open backend has no account: the page says so.

import { api, currentUser } from '../api.js';
import { badge, fmtTime, h, mount, say, stateBox, table } from '../ui.js';
import * as webauthn from '../webauthn.js';

function field(label, attrs) {
  return h('label', {}, label, h('input', attrs));
}

function codeField(mfa) {
  return mfa
    ? field('Authenticator code', { name: 'totp_code', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6, required: true })
    : null;
}

function reauth(data) {
  const body = { password: data.get('password') };
  const code = (data.get('totp_code') || '').trim();
  if (code) body.totp_code = code;
  return body;
}

export default {
  title: 'Account',
  nav: null,
  async render(ctx) {
    const me = await currentUser({ fresh: true });
    const status = h('p', { id: 'account-status', class: 'hint', role: 'status', 'aria-live': 'polite' });
    const header = [h('h1', {}, 'Account'), h('p', { class: 'muted' }, `${me.username} · ${me.role}`), status];
    if (['service-token', 'auth-disabled'].includes(me.username)) {
      mount(ctx.root, ...header, stateBox('empty', 'This session is no account (a service token): nothing to manage here.'));
      return;
    }
    const config = await api('/api/auth/passkey/config', { signal: ctx.signal });
    const passkeys = config.enabled ? await api('/api/auth/passkeys', { signal: ctx.signal }) : [];
    const mfa = !!me.mfa_enabled;

    // Passkeys.
    const keysPanel = h('section', { class: 'panel', 'aria-label': 'Passkeys' }, h('h2', {}, 'Passkeys'));
    if (!config.enabled) {
      keysPanel.append(h('p', { class: 'muted' }, 'Passkeys are not enabled on this backend ([server.webauthn]).'));
    } else if (!webauthn.supported()) {
      keysPanel.append(h('p', { class: 'muted' }, 'This browser cannot use passkeys.'));
    } else {
      const remove = (p) => {
        const form = h('form', { class: 'inline', 'aria-label': `Remove passkey ${p.name}` },
          field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
          codeField(mfa),
          h('button', { type: 'submit' }, 'Remove'));
        form.addEventListener('submit', async (e) => {
          e.preventDefault();
          try {
            await api(`/api/auth/passkeys/${p.id}/remove`, { method: 'POST', body: reauth(new FormData(form)) });
            say(status, `Passkey ${p.name} removed.`);
            ctx.navigate(location.pathname, { replace: true });
          } catch (e2) {
            say(status, `Remove ${p.name}: ${e2.message}`, true);
          }
        });
        return form;
      };
      keysPanel.append(table([
        { label: 'Name', value: (p) => p.name },
        { label: 'Added', value: (p) => fmtTime(p.created_at) },
        { label: 'Last used', value: (p) => (p.last_used_at ? fmtTime(p.last_used_at) : 'never') },
        { label: '', value: remove },
      ], passkeys, { empty: 'No passkeys yet.', label: 'Passkeys' }));
      const add = h('form', { class: 'stack', 'aria-label': 'Add a passkey' },
        h('h3', {}, 'Add a passkey'),
        field('Name', { name: 'name', maxlength: 64, required: true, placeholder: 'e.g. work laptop' }),
        field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
        codeField(mfa),
        h('button', { class: 'primary', type: 'submit' }, 'Add passkey'));
      add.addEventListener('submit', async (e) => {
        e.preventDefault();
        const data = new FormData(add);
        const button = add.querySelector('button');
        button.disabled = true;
        try {
          const started = await api('/api/auth/passkeys/register/start', {
            method: 'POST', body: { name: data.get('name'), ...reauth(data) },
          });
          const credential = await webauthn.create(started.options);
          const made = await api('/api/auth/passkeys/register/finish', {
            method: 'POST', body: { challenge_id: started.challenge_id, credential },
          });
          say(status, `Passkey ${made.name} added.`);
          ctx.navigate(location.pathname, { replace: true });
        } catch (e2) {
          say(status, `Add a passkey: ${e2.name === 'NotAllowedError' ? 'cancelled or timed out' : e2.message}`, true);
        } finally {
          button.disabled = false;
        }
      });
      keysPanel.append(add);
    }

    // Second factor.
    const mfaPanel = h('section', { class: 'panel', 'aria-label': 'Second factor' },
      h('h2', {}, 'Second factor'),
      h('p', {}, 'Authenticator app (TOTP): ', mfa ? badge('on', 'ok') : badge('off', 'muted')));
    if (mfa) {
      const off = h('form', { class: 'inline', 'aria-label': 'Turn off the second factor' },
        field('Code', { name: 'code', inputmode: 'numeric', pattern: '[0-9]{6}', maxlength: 6, required: true }),
        h('button', { type: 'submit' }, 'Turn off'));
      off.addEventListener('submit', async (e) => {
        e.preventDefault();
        try {
          await api('/api/auth/mfa/disable', { method: 'POST', body: { code: new FormData(off).get('code').trim() } });
          ctx.navigate(location.pathname, { replace: true });
        } catch (e2) {
          say(status, `Turn off: ${e2.message}`, true);
        }
      });
      mfaPanel.append(off);
    } else {
      const begin = h('button', { type: 'button' }, 'Set up');
      begin.addEventListener('click', async () => {
        try {
          const init = await api('/api/auth/mfa/init', { method: 'POST', body: {} });
          const confirm = h('form', { class: 'stack', 'aria-label': 'Confirm the second factor' },
            h('p', {}, 'Add this key to your authenticator app, then enter the code it shows.'),
            h('p', {}, h('code', { class: 'secret' }, init.secret)),
            h('p', {}, h('a', { href: init.otpauth_url }, 'Open in an authenticator app')),
            field('Code', { name: 'code', inputmode: 'numeric', pattern: '[0-9]{6}', maxlength: 6, required: true }),
            h('button', { class: 'primary', type: 'submit' }, 'Turn on'));
          confirm.addEventListener('submit', async (e) => {
            e.preventDefault();
            try {
              await api('/api/auth/mfa/verify', {
                method: 'POST', body: { secret: init.secret, code: new FormData(confirm).get('code').trim() },
              });
              ctx.navigate(location.pathname, { replace: true });
            } catch (e2) {
              say(status, `Turn on: ${e2.message}`, true);
            }
          });
          begin.replaceWith(confirm);
        } catch (e2) {
          say(status, `Set up: ${e2.message}`, true);
        }
      });
      mfaPanel.append(begin);
    }

    // Password.
    const pw = h('form', { class: 'stack', 'aria-label': 'Change password' },
      h('h2', {}, 'Password'),
      field('Current password', { name: 'old', type: 'password', autocomplete: 'current-password', required: true }),
      field('New password (8 characters or more)', { name: 'new', type: 'password', autocomplete: 'new-password', minlength: 8, required: true }),
      h('button', { type: 'submit' }, 'Change password'));
    pw.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(pw);
      try {
        await api('/api/auth/change-password', {
          method: 'POST', body: { old_password: data.get('old'), new_password: data.get('new') },
        });
        // The change ends every session of the account, this one too.
        ctx.navigate('/login', { replace: true });
      } catch (e2) {
        say(status, `Change password: ${e2.message}`, true);
      }
    });

    mount(ctx.root, ...header, keysPanel, mfaPanel, h('section', { class: 'panel' }, pw));
  },
};
