//! A software passkey for the API tests: an ES256 key pair behind a
//! discoverable credential, answering the backend's WebAuthn options the
//! way a browser and a platform authenticator would (attestation `none`,
//! user present and verified, a counter that moves on each use). Written
//! from the WebAuthn spec; the browser test uses Chromium's own virtual
//! authenticator instead.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct SoftPasskey {
    key: SigningKey,
    pub credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    rp_id: String,
    origin: String,
    counter: u32,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).unwrap();
    out
}

/// CBOR heads (RFC 8949) for the few shapes an attestation object needs.
fn head(major: u8, n: usize, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | u8::try_from(n).unwrap()),
        24..=255 => out.extend([m | 24, u8::try_from(n).unwrap()]),
        _ => {
            out.push(m | 25);
            out.extend(u16::try_from(n).unwrap().to_be_bytes());
        }
    }
}

fn text(s: &str, out: &mut Vec<u8>) {
    head(3, s.len(), out);
    out.extend(s.as_bytes());
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len(), out);
    out.extend(b);
}

fn client_data(kind: &str, options: &Value, origin: &str) -> Vec<u8> {
    let challenge = options["publicKey"]["challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("no challenge in {options}"));
    serde_json::to_vec(&json!({
        "type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false,
    }))
    .unwrap()
}

impl SoftPasskey {
    /// Answers registration `options` (as `register/start` gave them) from
    /// `origin`: the new passkey and the credential to send to `finish`.
    pub fn register(options: &Value, origin: &str) -> (Self, Value) {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().expect("rp.id").to_string();
        let user_handle = URL_SAFE_NO_PAD
            .decode(pk["user"]["id"].as_str().expect("user.id"))
            .unwrap();
        let key = SigningKey::from_slice(&random::<32>()).unwrap();
        let credential_id = random::<32>().to_vec();
        let point = key.verifying_key().to_encoded_point(false);
        // COSE_Key {1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}
        let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        bytes(point.x().unwrap(), &mut cose);
        cose.push(0x22);
        bytes(point.y().unwrap(), &mut cose);
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(0x45); // user present, user verified, attested data
        auth_data.extend(0u32.to_be_bytes());
        auth_data.extend([0u8; 16]); // AAGUID
        auth_data.extend(u16::try_from(credential_id.len()).unwrap().to_be_bytes());
        auth_data.extend(&credential_id);
        auth_data.extend(cose);
        let mut attestation = vec![0xa3];
        text("fmt", &mut attestation);
        text("none", &mut attestation);
        text("attStmt", &mut attestation);
        attestation.push(0xa0);
        text("authData", &mut attestation);
        bytes(&auth_data, &mut attestation);
        let credential = json!({
            "id": b64(&credential_id),
            "rawId": b64(&credential_id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data("webauthn.create", options, origin)),
                "transports": ["internal"],
            },
            "extensions": {},
        });
        let passkey = Self {
            key,
            credential_id,
            user_handle,
            rp_id,
            origin: origin.to_string(),
            counter: 0,
        };
        (passkey, credential)
    }

    /// Answers sign-in `options` (as `login/start` gave them): the
    /// credential to send to `finish`.
    pub fn sign_in(&mut self, options: &Value) -> Value {
        self.counter += 1;
        let mut auth_data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        auth_data.push(0x05); // user present, user verified
        auth_data.extend(self.counter.to_be_bytes());
        let client = client_data("webauthn.get", options, &self.origin);
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client));
        let signature: Signature = self.key.sign(&signed);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }

    /// The same passkey, signing in as another account's handle (what a
    /// tampered answer would claim).
    pub fn claiming(&mut self, handle: &[u8]) {
        self.user_handle = handle.to_vec();
    }
}
