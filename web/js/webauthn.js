// The browser side of passkeys: the backend's WebAuthn options (JSON,
// binary fields base64url) turned into what navigator.credentials takes,
// and the authenticator's answer turned back into JSON the backend reads
// (binary fields base64url without padding).

function fromB64url(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=');
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
}

function toB64url(buf) {
  let s = '';
  for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Whether this browser can use passkeys at all. */
export function supported() {
  return typeof window.PublicKeyCredential === 'function' && !!navigator.credentials;
}

/** Registration: `options` as `register/start` answered them → the credential JSON. */
export async function create(options) {
  const pk = { ...options.publicKey };
  pk.challenge = fromB64url(pk.challenge);
  pk.user = { ...pk.user, id: fromB64url(pk.user.id) };
  if (pk.excludeCredentials) {
    pk.excludeCredentials = pk.excludeCredentials.map((c) => ({ ...c, id: fromB64url(c.id) }));
  }
  const cred = await navigator.credentials.create({ publicKey: pk });
  const r = cred.response;
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response: {
      attestationObject: toB64url(r.attestationObject),
      clientDataJSON: toB64url(r.clientDataJSON),
      transports: typeof r.getTransports === 'function' ? r.getTransports() : null,
    },
    extensions: {},
  };
}

/** Sign-in: `options` as `login/start` answered them → the credential JSON. */
export async function get(options) {
  const pk = { ...options.publicKey };
  pk.challenge = fromB64url(pk.challenge);
  if (pk.allowCredentials) {
    pk.allowCredentials = pk.allowCredentials.map((c) => ({ ...c, id: fromB64url(c.id) }));
  }
  const cred = await navigator.credentials.get({ publicKey: pk });
  const r = cred.response;
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response: {
      authenticatorData: toB64url(r.authenticatorData),
      clientDataJSON: toB64url(r.clientDataJSON),
      signature: toB64url(r.signature),
      userHandle: r.userHandle ? toB64url(r.userHandle) : null,
    },
    extensions: {},
  };
}
