//! Passkeys through the router, in-process (see `router`), with a
//! software authenticator (`common::soft_passkey`) answering the real
//! WebAuthn ceremonies of the backend: registration with re-entered
//! factors, usernameless sign-in, single-use challenges, the per-account
//! rules, removal and the admin reset. The browser test does the same with
//! Chromium's virtual authenticator.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::soft_passkey::SoftPasskey;
use crate::common::TOKEN;
use crate::router::{Answer, App};

const ORIGIN: &str = "http://localhost:8080";

async fn app() -> App {
    App::start_with(
        "[server.webauthn]\nrp_id = \"localhost\"\nrp_origins = [\"http://localhost:8080\"]",
    )
    .await
}

async fn post(app: &App, uri: &str, token: Option<&str>, body: Value) -> Answer {
    app.call(Method::POST, uri, token, Some(body)).await
}

/// Registers a passkey named `name` for the account of `token`.
async fn enrol(app: &App, token: &str, password: &str, name: &str) -> (SoftPasskey, Answer) {
    let start = post(
        app,
        "/api/auth/passkeys/register/start",
        Some(token),
        json!({"name": name, "password": password}),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let (key, credential) = SoftPasskey::register(&start.body["options"], ORIGIN);
    let finish = post(
        app,
        "/api/auth/passkeys/register/finish",
        Some(token),
        json!({"challenge_id": start.body["challenge_id"], "credential": credential}),
    )
    .await;
    (key, finish)
}

/// A sign-in with `key`: the answer and what was sent (to replay it).
async fn sign_in(app: &App, key: &mut SoftPasskey) -> (Answer, Value) {
    let start = post(app, "/api/auth/passkey/login/start", None, json!({})).await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    assert_eq!(
        start.body["options"]["publicKey"]["allowCredentials"],
        json!([]),
        "usernameless: {}",
        start.body
    );
    let body = json!({
        "challenge_id": start.body["challenge_id"],
        "credential": key.sign_in(&start.body["options"]),
    });
    (
        post(app, "/api/auth/passkey/login/finish", None, body.clone()).await,
        body,
    )
}

#[tokio::test]
async fn without_a_relying_party_passkeys_answer_404_but_the_admin_reset_works() {
    let app = App::start().await;
    assert_eq!(
        app.get("/api/auth/passkey/config", None).await.body,
        json!({"enabled": false})
    );
    let token = app.login_as("pat", "viewer").await;
    for (uri, token) in [
        ("/api/auth/passkey/login/start", None),
        ("/api/auth/passkeys/register/start", Some(token.as_str())),
    ] {
        let a = post(&app, uri, token, json!({"name": "x", "password": "y"})).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{uri}: {}", a.body);
        assert!(
            a.error().contains("passkeys are not enabled"),
            "{}",
            a.error()
        );
    }
    let reset = app
        .call(
            Method::DELETE,
            "/api/accounts/pat/passkeys",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.body);
    let reset = app
        .call(
            Method::DELETE,
            "/api/accounts/nobody/passkeys",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(reset.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_passkey_registers_signs_in_once_per_challenge_and_is_removed() {
    let app = app().await;
    assert_eq!(
        app.get("/api/auth/passkey/config", None).await.body,
        json!({"enabled": true})
    );
    let token = app.login_as("ann", "operator").await;
    let password = "ann-password-1";

    // Bad input and wrong factors.
    let a = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(&token),
        json!({"name": " ", "password": password}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("name"), "{}", a.error());
    let a = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(&token),
        json!({"name": "laptop", "password": "wrong"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("current password"), "{}", a.error());
    let a = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(TOKEN),
        json!({"name": "laptop", "password": password}),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.error().contains("personal user account"), "{}", a.error());

    let (mut key, finish) = enrol(&app, &token, password, "laptop").await;
    assert_eq!(finish.status, StatusCode::CREATED, "{}", finish.body);
    assert_eq!(finish.body["name"], "laptop");
    assert_eq!(finish.body["last_used_at"], Value::Null);
    let id = finish.body["id"].as_i64().unwrap();

    // The same authenticator again: excluded by the options, refused by
    // the store.
    let start = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(&token),
        json!({"name": "again", "password": password}),
    )
    .await;
    let excluded = &start.body["options"]["publicKey"]["excludeCredentials"];
    assert_eq!(excluded.as_array().map(Vec::len), Some(1), "{excluded}");
    assert_eq!(
        start.body["options"]["publicKey"]["authenticatorSelection"]["residentKey"],
        "required"
    );

    let (ok, replay) = sign_in(&app, &mut key).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["role"], "operator");
    assert_eq!(ok.body["must_change_pw"], false);
    let session = ok.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        app.get("/api/auth/me", Some(&session)).await.body["username"],
        "ann"
    );

    // The same answer again: its challenge is used up.
    let again = post(&app, "/api/auth/passkey/login/finish", None, replay.clone()).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(again.error().contains("already used"), "{}", again.error());
    // The same answer under a fresh challenge: it signed another one.
    let fresh = post(&app, "/api/auth/passkey/login/start", None, json!({})).await;
    let mut moved = replay.clone();
    moved["challenge_id"] = fresh.body["challenge_id"].clone();
    let again = post(&app, "/api/auth/passkey/login/finish", None, moved).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);
    assert_eq!(again.error(), "passkey sign-in failed");

    let listed = app.get("/api/auth/passkeys", Some(&token)).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );
    assert_eq!(listed.body[0]["id"], id);
    assert!(
        listed.body[0]["last_used_at"].is_string(),
        "{}",
        listed.body
    );

    // A second sign-in moves the counter on and still works.
    let (ok, _) = sign_in(&app, &mut key).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    let a = post(
        &app,
        "/api/auth/passkeys/abc/remove",
        Some(&token),
        json!({"password": password}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("id"), "{}", a.error());
    let a = post(
        &app,
        &format!("/api/auth/passkeys/{id}/remove"),
        Some(&token),
        json!({"password": "wrong"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = post(
        &app,
        &format!("/api/auth/passkeys/{id}/remove"),
        Some(&token),
        json!({"password": password}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = post(
        &app,
        &format!("/api/auth/passkeys/{id}/remove"),
        Some(&token),
        json!({"password": password}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let (gone, _) = sign_in(&app, &mut key).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{}", gone.body);
}

#[tokio::test]
async fn a_passkey_signs_in_only_as_its_own_account_and_not_once_disabled_or_reset() {
    let app = app().await;
    let ann = app.login_as("ann", "viewer").await;
    let bob = app.login_as("bob", "operator").await;
    let (mut ann_key, f) = enrol(&app, &ann, "ann-password-1", "ann's").await;
    assert_eq!(f.status, StatusCode::CREATED, "{}", f.body);
    let (mut bob_key, f) = enrol(&app, &bob, "bob-password-1", "bob's").await;
    assert_eq!(f.status, StatusCode::CREATED, "{}", f.body);

    // Ann's key claiming Bob's handle (or any other) is refused.
    let bob_handle = {
        let start = post(&app, "/api/auth/passkey/login/start", None, json!({})).await;
        let c = bob_key.sign_in(&start.body["options"]);
        base64_decode(c["response"]["userHandle"].as_str().unwrap())
    };
    ann_key.claiming(&bob_handle);
    let (a, _) = sign_in(&app, &mut ann_key).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);

    let (a, _) = sign_in(&app, &mut bob_key).await;
    assert_eq!(
        (a.status, a.body["role"].as_str()),
        (StatusCode::OK, Some("operator"))
    );

    let off = app
        .call(
            Method::PATCH,
            "/api/accounts/bob",
            Some(TOKEN),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(off.status, StatusCode::NO_CONTENT, "{}", off.body);
    let (a, _) = sign_in(&app, &mut bob_key).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "disabled: {}", a.body);
    let on = app
        .call(
            Method::PATCH,
            "/api/accounts/bob",
            Some(TOKEN),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(on.status, StatusCode::NO_CONTENT, "{}", on.body);
    let (a, _) = sign_in(&app, &mut bob_key).await;
    assert_eq!(a.status, StatusCode::OK, "enabled again: {}", a.body);

    let viewer_reset = app
        .call(
            Method::DELETE,
            "/api/accounts/bob/passkeys",
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(viewer_reset.status, StatusCode::FORBIDDEN);
    let reset = app
        .call(
            Method::DELETE,
            "/api/accounts/bob/passkeys",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.body);
    let (a, _) = sign_in(&app, &mut bob_key).await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "after the reset: {}",
        a.body
    );
    assert_eq!(
        app.get("/api/auth/passkeys", Some(&bob)).await.body,
        json!([])
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// Enables a second factor for the account of `token` at time `now`; the
/// secret.
async fn enable_totp(app: &App, token: &str, now: u64) -> String {
    use kanade_backend::auth::mfa::code_at;
    let secret = post(app, "/api/auth/mfa/init", Some(token), json!({}))
        .await
        .body["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let verified = post(
        app,
        "/api/auth/mfa/verify",
        Some(token),
        json!({"secret": secret, "code": code_at(&secret, now).unwrap()}),
    )
    .await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.body);
    secret
}

#[tokio::test]
async fn registration_asks_for_the_second_factor_and_ends_when_the_account_changes() {
    use kanade_backend::auth::mfa::code_at;
    let app = app().await;
    let token = app.login_as("mia", "viewer").await;
    let password = "mia-password-1";
    // Codes of this step and the next only: both stay inside the
    // backend's window if a step boundary passes during the test.
    let now = chrono::Utc::now().timestamp().cast_unsigned();
    let secret = enable_totp(&app, &token, now).await;

    let without = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(&token),
        json!({"name": "phone", "password": password}),
    )
    .await;
    assert_eq!(without.status, StatusCode::BAD_REQUEST, "{}", without.body);
    let start = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(&token),
        json!({"name": "phone", "password": password,
               "totp_code": code_at(&secret, now + 30).unwrap()}),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);

    // The second factor changes (an admin removes it) before the
    // registration finishes: it cannot.
    let reset = app
        .call(Method::DELETE, "/api/accounts/mia/mfa", Some(TOKEN), None)
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.body);
    let (_, credential) = SoftPasskey::register(&start.body["options"], ORIGIN);
    let finish = post(
        &app,
        "/api/auth/passkeys/register/finish",
        Some(&token),
        json!({"challenge_id": start.body["challenge_id"], "credential": credential}),
    )
    .await;
    assert_eq!(finish.status, StatusCode::CONFLICT, "{}", finish.body);
    assert!(finish.error().contains("start again"), "{}", finish.error());

    // Another account cannot finish mia's registration.
    let other = app.login_as("oli", "viewer").await;
    let start = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(&token),
        json!({"name": "tablet", "password": password}),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let (_, credential) = SoftPasskey::register(&start.body["options"], ORIGIN);
    let stolen = post(
        &app,
        "/api/auth/passkeys/register/finish",
        Some(&other),
        json!({"challenge_id": start.body["challenge_id"], "credential": credential}),
    )
    .await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{}", stolen.body);

    let (mut key, finish) = enrol(&app, &token, password, "phone").await;
    assert_eq!(finish.status, StatusCode::CREATED, "{}", finish.body);
    // With a second factor again, a passkey still signs in by itself
    // while the password alone asks for the code.
    enable_totp(&app, &token, now).await;
    let by_password = post(
        &app,
        "/api/auth/login",
        None,
        json!({"username": "mia", "password": password}),
    )
    .await;
    assert_eq!(by_password.body, json!({"mfa_required": true}));
    let (a, _) = sign_in(&app, &mut key).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body["token"].is_string(), "{}", a.body);
}

#[tokio::test]
async fn a_password_change_pending_blocks_registration_and_bad_answers_are_400() {
    let app = app().await;
    app.login_as("new", "viewer").await;
    let reset = app
        .call(
            Method::PATCH,
            "/api/accounts/new",
            Some(TOKEN),
            Some(json!({"password": "new-password-1"})),
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.body);
    let token = app.login_as_again("new", "new-password-1").await;
    let a = post(
        &app,
        "/api/auth/passkeys/register/start",
        Some(&token),
        json!({"name": "laptop", "password": "new-password-1"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);

    for body in [
        json!({}),
        json!({"challenge_id": "x", "credential": {"id": "not a credential"}}),
        json!({"challenge_id": "x", "credential": 7}),
    ] {
        let a = post(&app, "/api/auth/passkey/login/finish", None, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert!(!a.error().is_empty());
    }
    // A well-formed answer to no challenge.
    let start = post(&app, "/api/auth/passkey/login/start", None, json!({})).await;
    let (mut key, _) = SoftPasskey::register(
        &json!({"publicKey": {"rp": {"id": "localhost"}, "user": {"id": "AAAA"},
                              "challenge": "AAAA"}}),
        ORIGIN,
    );
    let a = post(
        &app,
        "/api/auth/passkey/login/finish",
        None,
        json!({"challenge_id": "unknown", "credential": key.sign_in(&start.body["options"])}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.error().contains("start again"), "{}", a.error());
}
