//! Accounts, login, roles and throttling against the real binary, a real
//! broker (the audit events go through the AUDIT stream) and real HTTP.

use crate::common::{eventually, Backend, Nats, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "test-jwt-secret-0123456789-abcdef";
const BOOT_PW: &str = "Bootstrap-Pa55";
const NEW_ADMIN_PW: &str = "Admin-New-Pa55word";
const VIEWER_PW: &str = "Viewer-Pa55word";

fn start(nats: &Nats, dir: &tempfile::TempDir) -> Backend {
    Backend::start_with_env(
        &nats.url,
        &dir.path().join("data"),
        "",
        &[
            ("KANADE_JWT_SECRET", SECRET),
            ("KANADE_BOOTSTRAP_ADMIN_PASSWORD", BOOT_PW),
        ],
    )
}

async fn login(b: &Backend, user: &str, pw: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    b.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({ "username": user, "password": pw })),
    )
    .await
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {body}"))
}

fn jwt(sub: &str, exp: i64, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp, "aud": "kanade", "roles": ["admin"] }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_bad_and_expired_tokens_are_401_and_the_service_token_is_admin() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&nats, &dir);
    let now = chrono::Utc::now().timestamp();

    let (status, body) = b.get_with("/api/agents", None).await;
    assert_eq!((status, error_of(&body)), (401, "missing bearer token"));
    let (status, body) = b.get_with("/api/agents", Some("not-a-token")).await;
    assert_eq!(status, 401);
    assert!(error_of(&body).starts_with("invalid token"), "{body}");
    let expired = jwt("admin", now - 3600, SECRET);
    let (status, body) = b.get_with("/api/agents", Some(&expired)).await;
    assert_eq!(
        (status, error_of(&body)),
        (401, "invalid token: token expired")
    );
    let forged = jwt("admin", now + 3600, "some-other-secret");
    let (status, body) = b.get_with("/api/agents", Some(&forged)).await;
    assert_eq!(
        (status, error_of(&body)),
        (401, "invalid token: bad signature")
    );
    // Well signed, but no such account: the stored account decides.
    let ghost = jwt("ghost", now + 3600, SECRET);
    let (status, body) = b.get_with("/api/agents", Some(&ghost)).await;
    assert_eq!((status, error_of(&body)), (401, "unknown account"));

    assert_eq!(b.get_with("/api/agents", Some(TOKEN)).await.0, 200);
    let (status, _, me) = b.call(Method::GET, "/api/auth/me", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        me,
        json!({"username": "service-token", "role": "admin", "must_change_pw": false,
               "mfa_enabled": false, "allowed_features": null})
    );
    assert_eq!(
        b.call(Method::GET, "/api/accounts", Some(TOKEN), None)
            .await
            .0,
        200
    );
    // Public paths stay public.
    assert_eq!(b.get_with("/api/version", None).await.0, 200);
    assert_eq!(b.get_with("/health", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_admin_changes_password_then_manages_a_viewer() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&nats, &dir);
    let mut responses = Vec::new();

    // The seeded admin logs in and must change its password first.
    let (status, _, body) = login(&b, "admin", BOOT_PW).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["role"].as_str(), body["must_change_pw"].as_bool()),
        (Some("admin"), Some(true))
    );
    assert!(body["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    let admin = body["token"].as_str().unwrap().to_string();
    responses.push(body);
    let (status, body) = b.get_with("/api/agents", Some(&admin)).await;
    assert_eq!(status, 403);
    assert!(
        error_of(&body).contains("password change required"),
        "{body}"
    );
    let (status, _, me) = b
        .call(Method::GET, "/api/auth/me", Some(&admin), None)
        .await;
    assert_eq!((status, me["must_change_pw"].as_bool()), (200, Some(true)));

    let change = |old: &str, new: &str| json!({ "old_password": old, "new_password": new });
    let (status, _, body) = b
        .call(
            Method::POST,
            "/api/auth/change-password",
            Some(&admin),
            Some(change(BOOT_PW, "short")),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("new_password"), "{body}");
    let (status, _, body) = b
        .call(
            Method::POST,
            "/api/auth/change-password",
            Some(&admin),
            Some(change("wrong-old-pw", NEW_ADMIN_PW)),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    responses.push(body);
    let (status, _, _) = b
        .call(
            Method::POST,
            "/api/auth/change-password",
            Some(&admin),
            Some(change(BOOT_PW, NEW_ADMIN_PW)),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        b.get_with("/api/agents", Some(&admin)).await.0,
        401,
        "a password change ends the tokens minted before it"
    );
    assert_eq!(
        login(&b, "admin", BOOT_PW).await.0,
        401,
        "the old password is gone"
    );
    let (status, _, body) = login(&b, "admin", NEW_ADMIN_PW).await;
    assert_eq!(status, 200, "{body}");
    let admin = body["token"].as_str().unwrap().to_string();
    assert_eq!(b.get_with("/api/agents", Some(&admin)).await.0, 200);

    // Creating a viewer: bad input is a JSON 400 naming the field.
    let create =
        |user: &str, pw: &str, role: &str| json!({"username": user, "password": pw, "role": role});
    for (body, field) in [
        (create("ann", VIEWER_PW, "root"), "role"),
        (create("ann", "1234567", "viewer"), "password"),
        (create("a b", VIEWER_PW, "viewer"), "username"),
    ] {
        let (status, _, resp) = b
            .call(Method::POST, "/api/accounts", Some(&admin), Some(body))
            .await;
        assert_eq!(status, 400);
        assert!(error_of(&resp).contains(field), "{resp}");
    }
    let (status, _, resp) = b
        .call(
            Method::POST,
            "/api/accounts",
            Some(&admin),
            Some(json!({"username": "ann", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_of(&resp).contains("password or email"), "{resp}");
    let (status, _, _) = b
        .call(
            Method::POST,
            "/api/accounts",
            Some(&admin),
            Some(create("ann", VIEWER_PW, "viewer")),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, body) = b
        .call(
            Method::POST,
            "/api/accounts",
            Some(&admin),
            Some(create("ann", VIEWER_PW, "admin")),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // The viewer reads but may not manage accounts.
    let (status, _, body) = login(&b, "ann", VIEWER_PW).await;
    assert_eq!(
        (
            status,
            body["role"].as_str(),
            body["must_change_pw"].as_bool()
        ),
        (200, Some("viewer"), Some(false))
    );
    let viewer = body["token"].as_str().unwrap().to_string();
    responses.push(body);
    assert_eq!(b.get_with("/api/agents", Some(&viewer)).await.0, 200);
    assert_eq!(b.get_with("/api/perf/fleet", Some(&viewer)).await.0, 200);
    let (status, _, body) = b
        .call(
            Method::POST,
            "/api/accounts",
            Some(&viewer),
            Some(create("eve", VIEWER_PW, "admin")),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(error_of(&body), "admin role required (caller is viewer)");
    assert_eq!(
        b.call(Method::GET, "/api/accounts", Some(&viewer), None)
            .await
            .0,
        403
    );
    assert_eq!(
        b.call(Method::DELETE, "/api/accounts/admin", Some(&viewer), None)
            .await
            .0,
        403
    );

    // The listing never carries a hash.
    let (status, _, list) = b
        .call(Method::GET, "/api/accounts", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    let rows = list.as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (
                r["username"].as_str().unwrap(),
                r["role"].as_str().unwrap(),
                r["disabled"].as_i64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("admin", "admin", 0), ("ann", "viewer", 0)]
    );
    for r in rows {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "allowed_features",
                "created_at",
                "disabled",
                "email",
                "mfa_enabled",
                "must_change_pw",
                "permission_group",
                "role",
                "updated_at",
                "username"
            ]
        );
    }
    responses.push(list);

    // Disabling the viewer stops its still-valid token at once.
    let (status, _, _) = b
        .call(
            Method::PATCH,
            "/api/accounts/ann",
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = b.get_with("/api/agents", Some(&viewer)).await;
    assert_eq!((status, error_of(&body)), (403, "account disabled"));
    assert_eq!(login(&b, "ann", VIEWER_PW).await.0, 401);

    // The last enabled admin can be neither deleted, demoted nor disabled.
    let (status, _, body) = b
        .call(Method::DELETE, "/api/accounts/admin", Some(&admin), None)
        .await;
    assert_eq!(status, 409, "{body}");
    for patch in [json!({"role": "operator"}), json!({"disabled": true})] {
        let (status, _, _) = b
            .call(
                Method::PATCH,
                "/api/accounts/admin",
                Some(&admin),
                Some(patch),
            )
            .await;
        assert_eq!(status, 409);
    }
    assert_eq!(b.get_with("/api/agents", Some(&admin)).await.0, 200);
    assert_eq!(
        b.call(Method::DELETE, "/api/accounts/nobody", Some(&admin), None)
            .await
            .0,
        404
    );
    assert_eq!(
        b.call(Method::DELETE, "/api/accounts/ann", Some(&admin), None)
            .await
            .0,
        204
    );

    // Every account change and the login failures are in the audit log.
    let actions = eventually("account audit events", || async {
        let (_, audit) = b.get("/api/audit?limit=100").await;
        let actions: Vec<String> = audit
            .as_array()?
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["action"].as_str().unwrap_or(""),
                    r["target"].as_str().unwrap_or("")
                )
            })
            .collect();
        (actions.iter().filter(|a| a.starts_with("account.")).count() >= 4
            && actions.iter().any(|a| a.starts_with("login.failure")))
        .then_some(actions)
    })
    .await;
    for expected in [
        "account.change_password admin",
        "account.create ann",
        "account.update ann",
        "account.delete ann",
        "login.failure admin",
        "login.failure ann",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    let (_, audit) = b.get("/api/audit?limit=100").await;
    let create = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "account.create")
        .unwrap();
    assert_eq!(
        (create["actor"].as_str(), create["payload"]["sub"].as_str()),
        (Some("admin"), Some("admin"))
    );
    responses.push(audit);

    // No password, old or new, ever left the backend.
    let log = b.log_text();
    for pw in [BOOT_PW, NEW_ADMIN_PW, VIEWER_PW, "wrong-old-pw"] {
        assert!(!log.contains(pw), "{pw} appears in the log");
        for r in &responses {
            assert!(!r.to_string().contains(pw), "{pw} appears in a response");
        }
    }
    assert!(!log.contains("$argon2"), "a hash appears in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_login_failures_are_refused_without_revealing_accounts() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&nats, &dir);

    // Unknown user and wrong password answer alike.
    let (s1, _, unknown) = login(&b, "nobody", "whatever-pw").await;
    let (s2, _, wrong) = login(&b, "admin", "whatever-pw").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(unknown, wrong);

    for user in ["admin", "nobody"] {
        // Five attempts per username in a window; `admin` and `nobody`
        // already used one each.
        for _ in 0..4 {
            assert_eq!(login(&b, user, "whatever-pw").await.0, 401);
        }
        let (status, headers, body) = login(&b, user, "whatever-pw").await;
        assert_eq!(status, 429, "{user}: {body}");
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 15 * 60, "{retry}");
        assert!(error_of(&body).starts_with("too many attempts"));
    }
    // Even the right password waits out the window.
    assert_eq!(login(&b, "admin", BOOT_PW).await.0, 429);
    // Another account from the same address is not locked yet.
    let (status, _, body) = login(&b, "someone", "whatever-pw").await;
    assert_eq!(status, 401, "{body}");
    // The service token is unaffected.
    assert_eq!(b.get_with("/api/agents", Some(TOKEN)).await.0, 200);

    // Many usernames from one address: the address is refused too.
    let mut refused = None;
    for i in 0..25 {
        if login(&b, &format!("spray{i}"), "whatever-pw").await.0 == 429 {
            refused = Some(i);
            break;
        }
    }
    assert!(
        refused.is_some(),
        "an address guessing many usernames is never refused"
    );
    let throttled = eventually("throttled attempts audited", || async {
        let (_, audit) = b
            .get("/api/audit?action=login.failure&payload=throttled")
            .await;
        audit.as_array().filter(|a| !a.is_empty()).map(|a| a.len())
    })
    .await;
    assert!(throttled >= 1);
}

/// Behind a trusted proxy the client is the address `X-Forwarded-For`
/// names; from anyone else the header is ignored.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let nats = Nats::start();
    for (trusted, expected) in [(true, "203.0.113.7"), (false, "127.0.0.1")] {
        let dir = tempfile::tempdir().unwrap();
        let server = if trusted {
            "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]"
        } else {
            ""
        };
        let b = Backend::start_configured(&nats.url, &dir.path().join("data"), server, "", &[]);
        let user = format!("mallory-{trusted}");
        let status = reqwest::Client::new()
            .post(format!("{}/api/auth/login", b.base))
            .header("x-forwarded-for", "198.51.100.9, 203.0.113.7")
            .json(&json!({"username": user, "password": "not-the-password"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401);
        let client = eventually("the failure audited", || async {
            let (_, audit) = b
                .get(&format!("/api/audit?action=login.failure&target=^{user}$"))
                .await;
            let row = audit.as_array()?.first()?.clone();
            row["payload"]["client"].as_str().map(String::from)
        })
        .await;
        assert_eq!(client, expected, "trusted = {trusted}");
    }
}

/// `KANADE_AUTH_DISABLE=False` (or `off`, `No`) keeps authentication on;
/// only an explicit true value opens the API. A JWT secret shorter than
/// 32 bytes stops the start, naming the variable.
#[tokio::test(flavor = "multi_thread")]
async fn auth_is_off_only_when_explicitly_true_and_short_secrets_stop_the_start() {
    let nats = Nats::start();
    for (value, open) in [("False", false), ("off", false), ("TRUE", true)] {
        let dir = tempfile::tempdir().unwrap();
        let b = Backend::start_with_env(
            &nats.url,
            &dir.path().join("data"),
            "",
            &[("KANADE_AUTH_DISABLE", value)],
        );
        let (status, _) = b.get_with("/api/agents", None).await;
        assert_eq!(
            status,
            if open { 200 } else { 401 },
            "KANADE_AUTH_DISABLE={value}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backend.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{}\"\n[nats]\nurl = \"{}\"\n[storage]\ndata_dir = \"{}\"\n",
            crate::common::free_port(),
            nats.url,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
        .arg("--config")
        .arg(&config)
        .env("KANADE_JWT_SECRET", "hunter2-hunter2")
        .env_remove("KANADE_AUTH_DISABLE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a 15-byte secret");
    assert!(
        stderr.contains("KANADE_JWT_SECRET is 15 bytes; at least 32"),
        "{stderr}"
    );
}
