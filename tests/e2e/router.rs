//! The router driven in-process (tower `oneshot`): the state the binary
//! serves from, opened by `server::open_state` on a temporary data
//! directory against a real `nats-server` (its JetStream resources made
//! as at start), with no listener, projectors or background tasks. Each request
//! is one call into the same `api::app` the binary serves, so the many
//! parameter, error and auth cases cost no process, port or connection.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kanade_backend::auth::{AuthConfig, JwtKeys};
use kanade_backend::config::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::common::{eventually, Nats, Smtp, TOKEN};

/// The router over a fresh data directory and broker.
pub struct App {
    router: Router,
    pub nats: Nats,
    _dir: tempfile::TempDir,
}

/// A response: status and its body as JSON (`Value::Null` when empty,
/// a string when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: Option<String>,
}

impl Answer {
    /// The `{"error": ..}` of an error answer; panics (the test fails)
    /// when the body is not that shape.
    pub fn error(&self) -> &str {
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not a JSON error ({}): {}", self.status, self.body))
    }
}

impl App {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `[server]` extras.
    pub async fn start_with(server_extra: &str) -> Self {
        let nats = Nats::start();
        let dir = tempfile::tempdir().unwrap();
        let table: toml::Table = toml::from_str(&format!(
            "[server]\n{server_extra}\n[nats]\nurl = \"{}\"\n[storage]\ndata_dir = \"{}\"\n",
            nats.url,
            dir.path().display()
        ))
        .unwrap();
        let config = Config::try_from_table(table).unwrap();
        let auth = AuthConfig::new(
            false,
            Some(TOKEN.into()),
            JwtKeys::new(b"router-test-secret-of-32-bytes!!"),
        );
        let client = kanade_backend::server::connect_nats(&nats.url)
            .await
            .unwrap();
        // The streams and buckets the projectors' start would make (the
        // audit events of a login go into AUDIT).
        kanade_backend::server::bootstrap_jetstream(&async_nats::jetstream::new(client.clone()))
            .await
            .unwrap();
        let state = kanade_backend::server::open_state(&config, auth, client)
            .await
            .unwrap();
        Self {
            router: kanade_backend::api::app(state),
            nats,
            _dir: dir,
        }
    }

    /// One request from 192.0.2.1 (as the listener would tag it).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    /// Sends a request as built (headers and body as given).
    pub async fn send(&self, req: Request<Body>) -> Answer {
        self.send_from([192, 0, 2, 1], req).await
    }

    /// Sends a request as if from `peer`.
    pub async fn send_from(&self, peer: [u8; 4], mut req: Request<Body>) -> Answer {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 40_000))));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            body,
            content_type,
        }
    }

    pub async fn get(&self, uri: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, uri, token, None).await
    }

    /// A login of an existing account; its token.
    pub async fn login_as_again(&self, username: &str, password: &str) -> String {
        let login = self
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        login.body["token"].as_str().unwrap().to_string()
    }

    /// Creates an account of `role` and logs it in; its token.
    pub async fn login_as(&self, username: &str, role: &str) -> String {
        let password = format!("{username}-password-1");
        let made = self
            .call(
                Method::POST,
                "/api/accounts",
                Some(TOKEN),
                Some(json!({"username": username, "password": password, "role": role})),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
        let login = self
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        login.body["token"].as_str().unwrap().to_string()
    }
}

/// Who may call what: no credential and a bad one are 401 on every
/// protected path (known route or not, `/metrics` included), a viewer is
/// 403 on operator and admin routes, an operator on admin routes; the
/// probes and the login need nothing. Every refusal is a JSON error.
#[tokio::test]
async fn every_gate_answers_with_a_json_error() {
    let app = App::start().await;
    let viewer = app.login_as("vera", "viewer").await;
    let operator = app.login_as("otto", "operator").await;

    for path in ["/health", "/readyz", "/api/version"] {
        let a = app.get(path, None).await;
        assert!(
            a.status == StatusCode::OK || a.status == StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            a.status
        );
    }
    let protected = [
        "/api/agents",
        "/api/perf/fleet",
        "/api/audit",
        "/metrics",
        "/api/no-such-route",
    ];
    for path in protected {
        let a = app.get(path, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(a.error().contains("missing bearer token"), "{path}");
        let a = app.get(path, Some("not.a.jwt")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(a.error().contains("invalid token"), "{path}");
    }
    // A token signed with another secret is refused, not decoded.
    let forged = JwtKeys::new(b"some-other-secret-of-32-bytes!!!")
        .mint(
            "vera",
            kanade_backend::auth::Role::Admin,
            0,
            chrono::Utc::now().timestamp(),
            3_600,
        )
        .unwrap()
        .0;
    let a = app.get("/api/agents", Some(&forged)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    assert_eq!(
        app.get("/api/agents", Some(&viewer)).await.status,
        StatusCode::OK
    );
    let operator_only = [
        (Method::POST, "/api/schedules/s1/enable"),
        (Method::DELETE, "/api/jobs/j1"),
        (Method::POST, "/api/server/restart"),
    ];
    for (m, path) in operator_only {
        let a = app
            .call(m.clone(), path, Some(&viewer), Some(json!({})))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{m} {path}: {}", a.body);
        assert!(
            a.error().contains("operator role required"),
            "{}",
            a.error()
        );
    }
    let admin_only = [
        (Method::GET, "/api/accounts"),
        (Method::POST, "/api/admin/backup"),
        (Method::DELETE, "/api/accounts/vera"),
    ];
    for (m, path) in admin_only {
        for (who, token) in [("viewer", &viewer), ("operator", &operator)] {
            let a = app.call(m.clone(), path, Some(token), None).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{who} {m} {path}");
            assert!(a.error().contains("admin role required"), "{}", a.error());
        }
    }
    assert_eq!(
        app.get("/api/accounts", Some(TOKEN)).await.status,
        StatusCode::OK
    );

    // A disabled account's live token stops working at once.
    let a = app
        .call(
            Method::PATCH,
            "/api/accounts/vera",
            Some(TOKEN),
            Some(json!({"disabled": true})),
        )
        .await;
    assert!(a.status.is_success(), "{} {}", a.status, a.body);
    let a = app.get("/api/agents", Some(&viewer)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.error().contains("disabled"));
}

/// Every parameter a caller can get wrong is a 400 whose JSON error names
/// the parameter; a value past a cap is clamped or named, never a 5xx.
#[tokio::test]
async fn every_bad_parameter_is_a_400_naming_it() {
    let app = App::start().await;
    let t = Some(TOKEN);
    let cases: &[(&str, &str)] = &[
        ("/api/agents/pc1/perf?step=0", "step"),
        ("/api/agents/pc1/perf?step=-5", "step"),
        ("/api/agents/pc1/perf?step=abc", "step"),
        ("/api/agents/pc1/perf?from=yesterday", "from"),
        ("/api/agents/pc1/perf?to=2026-13-40T00:00:00Z", "to"),
        (
            "/api/agents/pc1/perf?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
            "from",
        ),
        ("/api/perf/fleet?metric=bogus", "metric"),
        ("/api/perf/fleet?agg=median", "agg"),
        ("/api/perf/top?limit=ten", "limit"),
        ("/api/perf/top?metric=swap", "metric"),
        (
            "/api/agents/pc1/processes/timeline?metric=threads",
            "metric",
        ),
        ("/api/results?limit=-1", "limit"),
        ("/api/audit?limit=x", "limit"),
        ("/api/export/no_such_table", "table"),
        ("/api/export/host_perf?from=junk", "from"),
    ];
    for (uri, param) in cases {
        let a = app.get(uri, t).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.body);
        assert!(
            a.error().contains(param),
            "{uri}: the error names {param:?}: {}",
            a.error()
        );
        assert_eq!(a.content_type.as_deref(), Some("application/json"), "{uri}");
    }
    // Values past a cap are clamped, not refused and not a 5xx.
    for uri in [
        "/api/perf/top?limit=1000000",
        "/api/agents/pc1/processes/timeline?top=1000000",
        "/api/agents/pc1/perf?step=99999999999",
    ] {
        let a = app.get(uri, t).await;
        assert!(
            a.status == StatusCode::OK || a.status == StatusCode::BAD_REQUEST,
            "{uri}: {} {}",
            a.status,
            a.body
        );
        if a.status == StatusCode::BAD_REQUEST {
            a.error();
        }
    }
}

/// A body the handler cannot read is a 400 JSON error saying why, whether
/// it is not JSON, JSON of the wrong shape, or sent without its content
/// type; an unknown route under `/api` is a 404 JSON error.
#[tokio::test]
async fn unreadable_bodies_and_unknown_routes_are_json_errors() {
    let app = App::start().await;
    let raw = |method: Method, uri: &str, ct: Option<&str>, body: &str| {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.body(Body::from(body.to_string())).unwrap()
    };
    let cases = [
        raw(
            Method::POST,
            "/api/accounts",
            Some("application/json"),
            "{not json",
        ),
        raw(
            Method::POST,
            "/api/accounts",
            Some("application/json"),
            r#"{"username": 7}"#,
        ),
        raw(Method::POST, "/api/accounts", None, r#"{"username": "a"}"#),
        raw(
            Method::POST,
            "/api/auth/login",
            Some("application/json"),
            "[]",
        ),
        raw(
            Method::POST,
            "/api/notifications",
            Some("application/json"),
            r#"{"title": 1}"#,
        ),
    ];
    for req in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let a = app.send(req).await;
        assert!(
            a.status == StatusCode::BAD_REQUEST
                || a.status == StatusCode::UNPROCESSABLE_ENTITY
                || a.status == StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{what}: {} {}",
            a.status,
            a.body
        );
        assert!(!a.error().is_empty(), "{what}");
    }
    let a = app.get("/api/no-such-route", Some(TOKEN)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    a.error();
}

/// A login from `peer`.
async fn login_from(app: &App, peer: [u8; 4], username: &str, password: &str) -> Answer {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap();
    app.send_from(peer, req).await
}

/// A password change, by the account or an admin's reset, ends every
/// token minted before it; a new login works.
#[tokio::test]
async fn a_password_change_ends_earlier_tokens() {
    let app = App::start().await;
    let old = app.login_as("vera", "viewer").await;
    let other_session = app.login_as_again("vera", "vera-password-1").await;
    assert_eq!(
        app.get("/api/auth/me", Some(&old)).await.status,
        StatusCode::OK
    );

    let changed = app
        .call(
            Method::POST,
            "/api/auth/change-password",
            Some(&old),
            Some(json!({"old_password": "vera-password-1", "new_password": "vera-password-2"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
    for token in [&old, &other_session] {
        let a = app.get("/api/auth/me", Some(token)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
        assert!(a.error().contains("password change"), "{}", a.error());
    }
    let fresh = app.login_as_again("vera", "vera-password-2").await;
    assert_eq!(
        app.get("/api/auth/me", Some(&fresh)).await.status,
        StatusCode::OK
    );

    // An admin's reset ends them too.
    let reset = app
        .call(
            Method::PATCH,
            "/api/accounts/vera",
            Some(TOKEN),
            Some(json!({"password": "vera-password-3"})),
        )
        .await;
    assert!(reset.status.is_success(), "{}", reset.body);
    assert_eq!(
        app.get("/api/auth/me", Some(&fresh)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A role change or a disable/enable keeps the session (the account
    // is re-read on each request).
    let after = app.login_as_again("vera", "vera-password-3").await;
    let promote = app
        .call(
            Method::PATCH,
            "/api/accounts/vera",
            Some(TOKEN),
            Some(json!({"role": "operator"})),
        )
        .await;
    assert!(promote.status.is_success(), "{}", promote.body);
    assert_eq!(
        app.get("/api/auth/me", Some(&after)).await.body["role"],
        "operator"
    );
}

/// Strangers' failures lock an account from every address, as the
/// reference does, except the last enabled admin: its lock holds only
/// for the addresses that failed, so nobody can keep the backend without
/// an admin.
#[tokio::test]
async fn strangers_cannot_lock_the_last_admin_out() {
    let app = App::start().await;
    app.login_as("root", "admin").await;
    let stranger = [198, 51, 100, 7];
    for i in 0..5 {
        let a = login_from(&app, stranger, "root", "guess").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let a = login_from(&app, stranger, "root", "root-password-1").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let a = login_from(&app, [192, 0, 2, 50], "root", "root-password-1").await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "the admin's own address: {}",
        a.body
    );

    // With a second admin, root is an account like any other: failures
    // from anywhere lock it everywhere.
    app.login_as("second", "admin").await;
    for i in 0..5u8 {
        let a = login_from(&app, [203, 0, 113, i], "root", "guess").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let a = login_from(&app, [192, 0, 2, 50], "root", "root-password-1").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert!(a.error().starts_with("too many attempts"), "{}", a.error());
}

/// A flood of logins under a huge, line-breaking username leaves one
/// bounded, escaped audit event per failure and one for the lock, not
/// one per refused attempt.
#[tokio::test]
async fn a_login_flood_is_audited_bounded_and_once_per_lock() {
    use futures::StreamExt;
    let app = App::start().await;
    let client = async_nats::connect(&app.nats.url).await.unwrap();
    let mut events = client
        .subscribe("audit.auth.login.failure.>")
        .await
        .unwrap();
    let mut bare = client.subscribe("audit.auth.login.failure").await.unwrap();
    client.flush().await.unwrap();

    let name = format!("evil\nFAKE: login ok for admin\n{}", "x".repeat(20_000));
    for i in 0..40u8 {
        let a = login_from(&app, [198, 51, 100, i], &name, "guess").await;
        let expected = if i < 5 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(a.status, expected, "attempt {i}");
    }
    let mut seen = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), bare.next()).await
    {
        seen.push(m);
    }
    let stray = tokio::time::timeout(std::time::Duration::from_millis(200), events.next()).await;
    assert!(stray.is_err(), "the name is no subject token: {stray:?}");
    let reasons: Vec<String> = seen
        .iter()
        .map(|m| {
            assert!(
                m.payload.len() < 1_000,
                "an audit event of {} bytes",
                m.payload.len()
            );
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let target = v["target"].as_str().unwrap();
            assert!(!target.contains('\n'), "{target}");
            assert!(target.ends_with("characters)"), "{target}");
            v["payload"]["reason"].as_str().unwrap().to_string()
        })
        .collect();
    let throttled = reasons.iter().filter(|r| *r == "throttled").count();
    assert_eq!(
        (reasons.len() - throttled, throttled),
        (5, 1),
        "five failures and the lock: {reasons:?}"
    );
}

/// TOTP as the reference has it, each code usable once: enrol (init,
/// verify), log in (the password alone answers `mfa_required`), a
/// replayed or wrong code refused, replace only with a current code,
/// disable with a fresh one.
#[tokio::test]
async fn mfa_enrols_logs_in_once_per_code_and_disables() {
    use kanade_backend::auth::mfa::code_at;
    let app = App::start().await;
    let token = app.login_as("mia", "operator").await;
    let now = || u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let post = |uri: &'static str, body: Value| {
        let token = token.clone();
        let app = &app;
        async move { app.call(Method::POST, uri, Some(&token), Some(body)).await }
    };

    let init = post("/api/auth/mfa/init", json!({})).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let secret = init.body["secret"].as_str().unwrap().to_string();
    assert!(init.body["otpauth_url"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/kanade:mia?"));
    // A wrong code does not enrol.
    let a = post(
        "/api/auth/mfa/verify",
        json!({"secret": secret, "code": "000000"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("code"), "{}", a.error());
    assert_eq!(
        app.get("/api/auth/me", Some(&token)).await.body["mfa_enabled"],
        false
    );
    let confirming = code_at(&secret, now()).unwrap();
    let a = post(
        "/api/auth/mfa/verify",
        json!({"secret": secret, "code": confirming}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(
        app.get("/api/auth/me", Some(&token)).await.body["mfa_enabled"],
        true
    );

    let login = |code: Option<String>| {
        let app = &app;
        async move {
            let mut body = json!({"username": "mia", "password": "mia-password-1"});
            if let Some(c) = code {
                body["totp_code"] = c.into();
            }
            app.call(Method::POST, "/api/auth/login", None, Some(body))
                .await
        }
    };
    let a = login(None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.body,
        json!({"mfa_required": true}),
        "no token without the code"
    );
    let a = login(Some(confirming.clone())).await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "the enrolling code is spent"
    );
    let a = login(Some("123456".into())).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let next = code_at(&secret, now() + 30).unwrap();
    let a = login(Some(next.clone())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body["token"].is_string());
    let a = login(Some(next)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "a replayed code");

    // Replacing the factor needs a code of the current one.
    let other = post("/api/auth/mfa/init", json!({})).await.body["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let a = post(
        "/api/auth/mfa/verify",
        json!({"secret": other, "code": code_at(&other, now()).unwrap()}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("current_code"), "{}", a.error());

    // Disabling needs a fresh code: on a second account, enrolled at one
    // step and disabled with the next.
    let token2 = app.login_as("max", "viewer").await;
    let s2 = app
        .call(
            Method::POST,
            "/api/auth/mfa/init",
            Some(&token2),
            Some(json!({})),
        )
        .await
        .body["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let t = now();
    let enrol = json!({"secret": s2, "code": code_at(&s2, t).unwrap()});
    let a = app
        .call(
            Method::POST,
            "/api/auth/mfa/verify",
            Some(&token2),
            Some(enrol),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let spent = json!({"code": code_at(&s2, t).unwrap()});
    let a = app
        .call(
            Method::POST,
            "/api/auth/mfa/disable",
            Some(&token2),
            Some(spent),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "a spent code disables nothing"
    );
    let fresh = json!({"code": code_at(&s2, t + 30).unwrap()});
    let a = app
        .call(
            Method::POST,
            "/api/auth/mfa/disable",
            Some(&token2),
            Some(fresh),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(
        app.get("/api/auth/me", Some(&token2)).await.body["mfa_enabled"],
        false
    );
    let a = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "max", "password": "max-password-1"})),
        )
        .await;
    assert!(a.body["token"].is_string(), "{}", a.body);

    // An admin removes a lost factor; the account logs in with its
    // password alone again. Only an admin may.
    let a = app
        .call(Method::DELETE, "/api/accounts/mia/mfa", Some(&token2), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = app
        .call(Method::DELETE, "/api/accounts/mia/mfa", Some(TOKEN), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert!(login(None).await.body["token"].is_string());
    let a = app
        .call(
            Method::DELETE,
            "/api/accounts/nobody/mfa",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // The service token has no second factor to manage.
    let a = app
        .call(
            Method::POST,
            "/api/auth/mfa/init",
            Some(TOKEN),
            Some(json!({})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// Page permissions as kanade 0.101 has them: a group's pages (or the
/// account's own list) open their routes and close every other page's,
/// live as the group or the account changes; the role gates still apply;
/// a group with members cannot go; bad names and keys are 400s naming
/// the field.
#[tokio::test]
async fn permission_groups_limit_an_account_to_its_pages() {
    let app = App::start().await;
    let admin =
        |m: Method, uri: &'static str, body: Option<Value>| app.call(m, uri, Some(TOKEN), body);

    let a = admin(
        Method::POST,
        "/api/permission-groups",
        Some(json!({"name": "helpdesk", "features": ["audit", "bogus"]})),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.error().contains("unknown feature: bogus"),
        "{}",
        a.error()
    );
    let made = json!({"name": "helpdesk", "features": ["jobs", "audit", "audit"]});
    let a = admin(Method::POST, "/api/permission-groups", Some(made.clone())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = admin(Method::POST, "/api/permission-groups", Some(made)).await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    let account = |group: &str| {
        json!({"username": "hd", "password": "hd-password-1", "role": "viewer",
               "email": "hd@example.com", "permission_group": group})
    };
    let a = admin(Method::POST, "/api/accounts", Some(account("nope"))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("permission_group"), "{}", a.error());
    let mut bad_mail = account("helpdesk");
    bad_mail["email"] = "not an address".into();
    let a = admin(Method::POST, "/api/accounts", Some(bad_mail)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("email"), "{}", a.error());
    let a = admin(Method::POST, "/api/accounts", Some(account("helpdesk"))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let hd = app.login_as_again("hd", "hd-password-1").await;

    let me = app.get("/api/auth/me", Some(&hd)).await;
    assert_eq!(me.body["allowed_features"], json!(["audit", "jobs"]));
    let status = |uri: &'static str| {
        let hd = hd.clone();
        let app = &app;
        async move { app.get(uri, Some(&hd)).await }
    };
    assert_eq!(status("/api/audit").await.status, StatusCode::OK);
    assert_eq!(status("/api/jobs").await.status, StatusCode::OK);
    let a = status("/api/results").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.error().contains("requires activity"), "{}", a.error());
    assert_eq!(
        status("/api/agents/pc1/perf").await.status,
        StatusCode::FORBIDDEN,
        "commons are closed to a restricted account"
    );
    // The role gate still holds: a viewer with the jobs page writes nothing.
    let a = app
        .call(Method::DELETE, "/api/jobs/j1", Some(&hd), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.error().contains("operator role required"),
        "{}",
        a.error()
    );

    // A group change applies on the next request.
    let a = admin(
        Method::PATCH,
        "/api/permission-groups/helpdesk",
        Some(json!({"features": ["activity"]})),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(status("/api/results").await.status, StatusCode::OK);
    assert_eq!(status("/api/audit").await.status, StatusCode::FORBIDDEN);

    let groups = admin(Method::GET, "/api/permission-groups", None).await;
    assert_eq!(groups.body[0]["member_count"], 1, "{}", groups.body);
    assert_eq!(groups.body[0]["features"], json!(["activity"]));
    let a = admin(Method::DELETE, "/api/permission-groups/helpdesk", None).await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    // Out of the group, the account's own list decides: null is every
    // page, a list is those pages.
    let a = admin(
        Method::PATCH,
        "/api/accounts/hd",
        Some(json!({"permission_group": null, "allowed_features": ["events"]})),
    )
    .await;
    assert!(a.status.is_success(), "{}", a.body);
    assert_eq!(status("/api/obs_events").await.status, StatusCode::OK);
    assert_eq!(status("/api/results").await.status, StatusCode::FORBIDDEN);
    let a = admin(
        Method::PATCH,
        "/api/accounts/hd",
        Some(json!({"allowed_features": null})),
    )
    .await;
    assert!(a.status.is_success(), "{}", a.body);
    assert_eq!(status("/api/agents/pc1/perf").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/auth/me", Some(&hd)).await.body["allowed_features"],
        Value::Null
    );
    let listed = admin(Method::GET, "/api/accounts", None).await;
    let row = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["username"] == "hd")
        .unwrap()
        .clone();
    assert_eq!(
        (
            row["email"].clone(),
            row["permission_group"].clone(),
            row["allowed_features"].clone()
        ),
        (json!("hd@example.com"), Value::Null, Value::Null)
    );
    let a = admin(Method::DELETE, "/api/permission-groups/helpdesk", None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = admin(Method::DELETE, "/api/permission-groups/helpdesk", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

/// Seconds until the expiry of a fresh token of `sam`.
async fn exp_in(app: &App) -> i64 {
    let a = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "sam", "password": "sam-password-1"})),
        )
        .await;
    a.body["exp"].as_i64().unwrap() - chrono::Utc::now().timestamp()
}

/// A login token lasts the server settings' `session_ttl_hours` (24 h
/// unset, as the reference).
#[tokio::test]
async fn the_session_lifetime_comes_from_the_server_settings() {
    let app = App::start().await;
    app.login_as("sam", "viewer").await;
    let default = exp_in(&app).await;
    assert!((24 * 3600 - 5..=24 * 3600).contains(&default), "{default}");
    let a = app
        .call(
            Method::PUT,
            "/api/server-settings",
            Some(TOKEN),
            Some(json!({"session_ttl_hours": 2})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let short = exp_in(&app).await;
    assert!((2 * 3600 - 5..=2 * 3600).contains(&short), "{short}");
}

/// The token of the link in a message (`…/password-setup/<token>`).
fn link_token(message: &str) -> Option<String> {
    // Undo quoted-printable soft line breaks of a long line.
    let message = message.replace("=\r\n", "").replace("=\n", "");
    let at = message.find("https://kanade.test/password-setup/")?;
    let rest = &message[at + "https://kanade.test/password-setup/".len()..];
    Some(
        rest.chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect(),
    )
}

/// Password links by mail, through a real SMTP server: an account made
/// by address sets its password through the mailed link, once; an
/// admin's reset link and a forgotten-password request arrive the same
/// way (the latter answering alike for unknown names, and throttled); a
/// used link ends the account's sessions; with mail off the admin is
/// shown the link instead.
#[tokio::test]
async fn password_links_arrive_by_mail_and_work_once() {
    let smtp = Smtp::start();
    let app = App::start_with("public_url = \"https://kanade.test/\"").await;
    let admin = |m: Method, uri: String, body: Option<Value>| {
        let app = &app;
        async move { app.call(m, &uri, Some(TOKEN), body).await }
    };

    // Mail off: the admin is handed the link.
    let a = admin(
        Method::POST,
        "/api/accounts".into(),
        Some(json!({"username": "lee", "role": "viewer", "email": "lee@example.com"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["setup_link_sent"], false);
    let shown = a.body["setup_link"].as_str().unwrap().to_string();
    assert!(
        shown.starts_with("https://kanade.test/password-setup/"),
        "{shown}"
    );
    let a = admin(
        Method::POST,
        "/api/accounts".into(),
        Some(json!({"username": "x", "role": "viewer"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("password or email"), "{}", a.error());

    let a = admin(
        Method::PUT,
        "/api/server-settings".into(),
        Some(
            json!({"mail": {"host": "127.0.0.1", "port": smtp.port, "encryption": "none",
                             "from": "kanade@example.com"}}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let a = admin(
        Method::POST,
        "/api/accounts".into(),
        Some(json!({"username": "kim", "role": "operator", "email": "kim@example.com"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body, json!({"setup_link_sent": true}));
    let mail = eventually("the set-up mail", || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.contains("kim@example.com"))
    })
    .await;
    assert!(
        mail.contains("Subject: kanade account password setup"),
        "{mail}"
    );
    let token = link_token(&mail).expect("a link in the mail");
    let uri = format!("/api/auth/password-setup/{token}");
    let a = app.get(&uri, None).await;
    assert_eq!(a.body, json!({"username": "kim", "purpose": "setup"}));
    let set = |pw: &'static str| {
        let (app, uri) = (&app, uri.clone());
        async move {
            app.call(Method::POST, &uri, None, Some(json!({"password": pw})))
                .await
        }
    };
    let a = set("short").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("password"), "{}", a.error());
    assert_eq!(set("kim-password-1").await.status, StatusCode::OK);
    let a = set("kim-password-2").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "used once");
    assert!(a.error().contains("invalid link"));
    let kim = app.login_as_again("kim", "kim-password-1").await;

    // An admin's reset link; using it ends kim's session.
    let a = admin(Method::POST, "/api/accounts/kim/reset-link".into(), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let reset = eventually("the reset mail", || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.contains("kim@example.com") && m.contains("Subject: kanade password reset"))
    })
    .await;
    let token = link_token(&reset).unwrap();
    let a = app
        .get(&format!("/api/auth/password-setup/{token}"), None)
        .await;
    assert_eq!(a.body["purpose"], "reset");
    let a = app
        .call(
            Method::POST,
            &format!("/api/auth/password-setup/{token}"),
            None,
            Some(json!({"password": "kim-password-3"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        app.get("/api/auth/me", Some(&kim)).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.login_as_again("kim", "kim-password-3").await;
    let a = admin(Method::POST, "/api/accounts/nobody/reset-link".into(), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Forgotten password: the same answer for a stranger, a mail for kim.
    let before = smtp.messages().len();
    let forgot = |name: &'static str| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/auth/forgot-password",
                None,
                Some(json!({"username": name})),
            )
            .await
        }
    };
    let stranger = forgot("nobody").await;
    let known = forgot("kim").await;
    assert_eq!(
        (stranger.status, known.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(stranger.body, known.body);
    eventually("the forgot-password mail", || async {
        (smtp.messages().len() > before).then_some(())
    })
    .await;
    // Three asks an hour per name, known or not.
    for _ in 0..2 {
        assert_eq!(forgot("kim").await.status, StatusCode::OK);
        assert_eq!(forgot("nobody").await.status, StatusCode::OK);
    }
    let a = forgot("kim").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert_eq!(
        forgot("nobody").await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "unknown names alike"
    );
}

/// Listing a KV bucket opens no consumer per request: with the jobs
/// bucket's stream allowing a single consumer (the mirror's watch), a
/// burst of concurrent lists all answer, and each list right after a
/// write shows it.
#[tokio::test]
async fn lists_answer_from_one_watch_and_see_their_writes() {
    use async_nats::jetstream::stream;
    let app = App::start().await;
    let js = async_nats::jetstream::new(async_nats::connect(&app.nats.url).await.unwrap());
    let kv = js.get_key_value("jobs").await.unwrap();
    let history = kv.status().await.unwrap().history();
    js.delete_stream("KV_jobs").await.unwrap();
    js.create_stream(stream::Config {
        name: "KV_jobs".into(),
        subjects: vec!["$KV.jobs.>".into()],
        max_messages_per_subject: history,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        max_consumers: 1,
        ..Default::default()
    })
    .await
    .unwrap();

    let post_job = |id: String| {
        let app = &app;
        async move {
            let yaml = format!(
                "id: {id}\nversion: '1'\nexecute:\n  shell: powershell\n  script: hostname\n  timeout: 5m\n"
            );
            let req = Request::builder()
                .method(Method::POST)
                .uri("/api/jobs")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/yaml")
                .body(Body::from(yaml))
                .unwrap();
            app.send(req).await
        }
    };
    for n in 0..5 {
        let a = post_job(format!("job-{n}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let list = app.get("/api/jobs", Some(TOKEN)).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        assert_eq!(
            list.body.as_array().map(Vec::len),
            Some(n + 1),
            "a list right after a write shows it: {}",
            list.body
        );
    }
    let burst = (0..40).map(|_| app.get("/api/jobs", Some(TOKEN)));
    let answers = futures::future::join_all(burst).await;
    assert_eq!(answers.len(), 40);
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body.as_array().map(Vec::len), Some(5));
    }
    let a = app
        .call(Method::DELETE, "/api/jobs/job-0", Some(TOKEN), None)
        .await;
    assert!(a.status.is_success(), "{}", a.body);
    let list = app.get("/api/jobs", Some(TOKEN)).await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(4), "{}", list.body);
}

/// Group contacts (`GET/PUT /api/groups/{name}/email`) as kanade 0.101 has
/// them: normalised, checked as mail addresses, listed with the groups,
/// cleared by an empty list; operators write, viewers read.
#[tokio::test]
async fn group_contacts_are_normalised_listed_and_cleared() {
    let app = App::start().await;
    let path = "/api/groups/eng/email";
    assert_eq!(app.get(path, Some(TOKEN)).await.body, json!({"emails": []}));
    let put = |body: Value, token: &'static str| {
        let app = &app;
        async move { app.call(Method::PUT, path, Some(token), Some(body)).await }
    };
    let a = put(
        json!({"emails": [" Ops@Example.com ", "ops@example.com", "desk@example.com", ""]}),
        TOKEN,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"emails": ["desk@example.com", "ops@example.com"]})
    );
    let groups = app.get("/api/groups", Some(TOKEN)).await.body;
    assert_eq!(
        groups["groups"],
        json!([{"name": "eng", "members": [], "has_config": false,
                "emails": ["desk@example.com", "ops@example.com"]}])
    );
    for (body, uri) in [
        (json!({"emails": ["not-an-address"]}), path),
        (json!({"emails": "ops@example.com"}), path),
        (json!({"emails": []}), "/api/groups/a.b/email"),
    ] {
        let a = app
            .call(Method::PUT, uri, Some(TOKEN), Some(body.clone()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert!(
            a.error().contains("emails") || a.error().contains("group"),
            "{body}: {}",
            a.error()
        );
    }
    let viewer = app.login_as("vi", "viewer").await;
    assert_eq!(app.get(path, Some(&viewer)).await.status, StatusCode::OK);
    let a = app
        .call(
            Method::PUT,
            path,
            Some(&viewer),
            Some(json!({"emails": []})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        put(json!({"emails": []}), TOKEN).await.body,
        json!({"emails": []})
    );
    assert_eq!(
        app.get("/api/groups", Some(TOKEN)).await.body["groups"],
        json!([])
    );
}
