//! The embedded dashboard in a real browser: Debian's Chromium, driven by
//! playwright-core (`tests/browser/dashboard.mjs`), against the real
//! binary filled through a real broker by the simulator (perf history,
//! heartbeats, process ticks), published JetStream results (fleet checks
//! among them), a notification with an acknowledgement, and a stand-in
//! agent answering ping, logs and commands for one PC. An agent binary
//! with a version resource is written for the Rollout page to publish.
//! Screenshots of every page land in `artifacts/screenshots/`.

use std::path::Path;
use std::process::Command;

use crate::common::{
    eventually, js_publish_bytes as js_publish, stand_in_agent, Backend, Nats, TOKEN,
};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use kanade_shared::wire::{EventStarted, ExecResult, JobTailReply};

const PCS: usize = 6;
const INVESTIGATED: usize = 2;
const ADMIN_PASSWORD: &str = "first-boot-password";
/// The PC the stand-in agent answers for (ping, logs, run).
const AGENT_PC: &str = "SIM-00002";
/// The version inside the agent binary the Rollout page publishes.
const RELEASE_VERSION: &str = "0.44.1";
/// Results of [`publish_results`].
const RESULTS: usize = 6;
/// Fleet check results of [`publish_checks`]: (job, check, PC, status).
const CHECKS: [(&str, &str, &str, &str); 6] = [
    ("bitlocker-check", "bitlocker", "SIM-00000", "ok"),
    ("bitlocker-check", "bitlocker", "SIM-00001", "fail"),
    ("bitlocker-check", "bitlocker", "SIM-00002", "warn"),
    ("bitlocker-check", "bitlocker", "SIM-00003", "ok"),
    ("disk-check", "disk-space", "SIM-00004", "ok"),
    ("disk-check", "disk-space", "SIM-00005", "fail"),
];
/// The notification sent before the browser starts, and who acknowledged it.
const NOTIFICATION_ID: &str = "maintenance-2030";
const ACK_SID: &str = "S-1-5-21-1001";

fn simulate(config: &Path, extra: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
        .args(["simulate", "--pcs", &PCS.to_string()])
        .args(["--investigate", &INVESTIGATED.to_string(), "--speed", "600"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .status()
        .unwrap();
    assert!(status.success(), "simulate failed");
}

fn started(id: &str, pc: &str, job: &str, at: DateTime<Utc>) -> EventStarted {
    serde_json::from_value(serde_json::json!({
        "result_id": id, "request_id": format!("req-{id}"), "exec_id": format!("ex-{id}"),
        "pc_id": pc, "started_at": at, "manifest_id": job, "version": "2.0.1",
    }))
    .unwrap()
}

fn finished(id: &str, pc: &str, job: &str, code: i32, out: &str, at: DateTime<Utc>) -> ExecResult {
    serde_json::from_value(serde_json::json!({
        "result_id": id, "request_id": format!("req-{id}"), "exec_id": format!("ex-{id}"),
        "pc_id": pc, "exit_code": code, "stdout": out,
        "stderr": if code == 0 { "" } else { "access denied: C:\\Windows\\Temp" },
        "started_at": at, "finished_at": at + Duration::seconds(3 + i64::from(code)),
        "manifest_id": job,
    }))
    .unwrap()
}

/// Four finished runs (one failed) and one still in flight.
async fn publish_results(nats: &Nats) {
    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now() - Duration::minutes(20);
    let runs = [
        (
            "res-ok-1",
            "SIM-00001",
            "inventory",
            0,
            "collected 42 packages",
        ),
        (
            "res-ok-2",
            "SIM-00002",
            "inventory",
            0,
            "collected 40 packages",
        ),
        (
            "res-ok-3",
            "SIM-00003",
            "defender-scan",
            0,
            "no threats found",
        ),
        (
            "res-fail-1",
            "SIM-00004",
            "defender-scan",
            2,
            "scan aborted",
        ),
    ];
    for (i, (id, pc, job, code, out)) in runs.iter().enumerate() {
        let at = t + Duration::minutes(i as i64);
        let ev = serde_json::to_vec(&started(id, pc, job, at)).unwrap();
        js_publish(&js, format!("events.started.ex-{id}.{pc}"), ev).await;
        let res = serde_json::to_vec(&finished(id, pc, job, *code, out, at)).unwrap();
        js_publish(&js, format!("results.req-{id}"), res).await;
    }
    let ev =
        serde_json::to_vec(&started("res-run-1", "SIM-00005", "inventory", Utc::now())).unwrap();
    js_publish(&js, "events.started.ex-res-run-1.SIM-00005".into(), ev).await;
    let ev =
        serde_json::to_vec(&started("res-live-1", "SIM-00000", "inventory", Utc::now())).unwrap();
    js_publish(&js, "events.started.ex-res-live-1.SIM-00000".into(), ev).await;
}

/// A stand-in agent for SIM-00000: each live-tail request gets one more
/// line of output; on the third it reports the run finished (the result
/// goes to the RESULTS stream), so the page sees live output, then the end.
async fn live_tail_agent(nats: &Nats) {
    let client = nats.client().await;
    let mut requests = client.subscribe("job.tail.SIM-00000").await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    tokio::spawn(async move {
        let mut asked = 0;
        while let Some(msg) = requests.next().await {
            asked += 1;
            let stdout: String = (1..=asked).map(|i| format!("step {i} of 3\n")).collect();
            if asked == 3 {
                let at = Utc::now() - Duration::seconds(5);
                let mut done = finished("res-live-1", "SIM-00000", "inventory", 0, &stdout, at);
                done.stdout.push_str("all steps done");
                js_publish(
                    &js,
                    "results.req-res-live-1".into(),
                    serde_json::to_vec(&done).unwrap(),
                )
                .await;
            }
            let reply = JobTailReply {
                found: true,
                running: asked < 3,
                stdout,
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
            };
            if let Some(inbox) = msg.reply {
                let _ = client
                    .publish(inbox, serde_json::to_vec(&reply).unwrap().into())
                    .await;
            }
        }
    });
}

fn browser_prerequisites(dir: &Path) {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed (scripts/test.sh installs it: apt-get install chromium)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is needed (scripts/test.sh runs npm ci in tests/browser)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_a_real_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    browser_prerequisites(&browser_dir);
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    // Passkeys for the dashboard at http://localhost:<port> (a secure
    // context without TLS; an IP address cannot be a relying party).
    let b = Backend::start_configured(
        &nats.url,
        &dir.path().join("data"),
        "[server.webauthn]\nrp_id = \"localhost\"\nrp_origins = [\"http://localhost:{port}\"]",
        "",
        &[("KANADE_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    let config = dir.path().join("sim.toml");
    std::fs::write(&config, format!("[nats]\nurl = \"{}\"\n", nats.url)).unwrap();

    // Live ticks until the backend has subscribed, then two hours of history.
    eventually("simulated agents", || async {
        simulate(&config, &["--ticks", "1"]);
        let (_, agents) = b.get("/api/agents").await;
        (agents.as_array()?.len() == PCS).then_some(())
    })
    .await;
    let t0 = std::time::Instant::now();
    simulate(&config, &["--backfill", "2h", "--ticks", "1"]);
    publish_results(&nats).await;
    eprintln!("fixtures published in {:?}", t0.elapsed());
    eventually("history and results projected", || async {
        let from = (Utc::now() - Duration::minutes(110)).to_rfc3339();
        let (_, perf) = b
            .get(&format!(
                "/api/agents/SIM-00000/perf?step=5m&from={}",
                crate::common::urlencode(&from)
            ))
            .await;
        let (_, results) = b.get("/api/results").await;
        let full = perf["points"].as_array()?.len() >= 20 && results.as_array()?.len() == RESULTS;
        full.then_some(())
    })
    .await;
    eprintln!("fixtures projected in {:?}", t0.elapsed());
    // A job in the catalog and a schedule of it, for the Jobs and
    // Schedules pages.
    post_ok(
        &b,
        "/api/jobs",
        serde_json::json!({
            "id": "inventory",
            "version": "2.0.1",
            "description": "hardware inventory",
            "execute": {
                "shell": "powershell",
                "script": "Get-CimInstance Win32_ComputerSystem",
                "timeout": "5m",
            },
        }),
    )
    .await;
    post_ok(
        &b,
        "/api/schedules",
        serde_json::json!({
            "id": "inventory-nightly",
            "when": {"calendar": {"at": "03:00"}},
            "job_id": "inventory",
            "target": {"all": true},
            "tz": "utc",
        }),
    )
    .await;

    publish_checks(&b, &nats).await;
    publish_inventory(&b, &nats).await;
    send_acknowledged_notification(&b, &nats).await;
    live_tail_agent(&nats).await;
    stand_in_agent(&nats, AGENT_PC).await;
    let agent_exe = dir.path().join("kanade-agent.exe");
    std::fs::write(
        &agent_exe,
        crate::common::agent_binary::windows(RELEASE_VERSION),
    )
    .unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let fixture = serde_json::json!({
        "pcs": (0..PCS).map(|i| format!("SIM-{i:05}")).collect::<Vec<_>>(),
        "investigated": (0..INVESTIGATED).map(|i| format!("SIM-{i:05}")).collect::<Vec<_>>(),
        "failed_result": "res-fail-1",
        "running_result": "res-run-1",
        "live_result": "res-live-1",
        "results": RESULTS + CHECKS.len() + INVENTORY_SCANS,
        "jobs": ["bitlocker-check", "defender-scan", "disk-check", "inventory", "inventory-sw"],
        "job": "inventory",
        "schedule": "inventory-nightly",
        "admin_password": ADMIN_PASSWORD,
        "agent_pc": AGENT_PC,
        "release_version": RELEASE_VERSION,
        "notification": {"id": NOTIFICATION_ID, "ack_pc": AGENT_PC, "ack_sid": ACK_SID},
    });
    let out = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .env("KANADE_URL", &b.base)
        .env("KANADE_TOKEN", TOKEN)
        .env("KANADE_FIXTURE", fixture.to_string())
        .env("KANADE_AGENT_EXE", &agent_exe)
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .expect("node on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}\n--- backend log ---\n{}",
        b.log_text()
    );
}

/// Two jobs that declare a fleet check and one result of each row of
/// [`CHECKS`], waiting until `/api/checks` counts them all.
async fn publish_checks(b: &Backend, nats: &Nats) {
    for (job, check) in [
        ("bitlocker-check", "bitlocker"),
        ("disk-check", "disk-space"),
    ] {
        post_ok(
            b,
            "/api/jobs",
            serde_json::json!({
                "id": job,
                "version": "1",
                "execute": {"shell": "powershell", "script": "Get-ComplianceState", "timeout": "1m"},
                "check": {"name": check, "fleet": true},
            }),
        )
        .await;
    }
    let js = async_nats::jetstream::new(nats.client().await);
    let at = Utc::now() - Duration::minutes(3);
    for (job, _, pc, status) in CHECKS {
        let id = format!("chk-{job}-{pc}");
        let stdout = serde_json::json!({"status": status, "detail": format!("{pc}: {status}")});
        let result = serde_json::json!({
            "result_id": id, "request_id": format!("req-{id}"), "pc_id": pc, "exit_code": 0,
            "stdout": stdout.to_string(), "stderr": "", "started_at": at,
            "finished_at": at + Duration::seconds(2), "manifest_id": job,
        });
        js_publish(
            &js,
            format!("results.req-{id}"),
            serde_json::to_vec(&result).unwrap(),
        )
        .await;
    }
    eventually("check states projected", || async {
        let (_, checks) = b.get("/api/checks?include_ok=true").await;
        (checks["rows"].as_array()?.len() == CHECKS.len()).then_some(())
    })
    .await;
}

/// Inventory results published: two PCs' first scans and a rescan.
const INVENTORY_SCANS: usize = 3;

/// An inventory job with an explode spec and history, two PCs' scans and
/// a rescan of SIM-00000 (zoom removed, vlc added, firefox updated),
/// waiting until the search and the history answer.
async fn publish_inventory(b: &Backend, nats: &Nats) {
    post_ok(
        b,
        "/api/jobs",
        serde_json::json!({
            "id": "inventory-sw", "version": "1", "description": "installed software",
            "execute": {"shell": "powershell", "script": "Get-Apps", "timeout": "1m"},
            "inventory": {
                "display": [{"field": "os", "label": "OS"}, {"field": "ram", "label": "RAM", "type": "bytes"},
                            {"field": "apps", "label": "Apps", "type": "table",
                             "columns": [{"field": "name", "label": "Name"}, {"field": "version", "label": "Version"}]}],
                "summary": [{"field": "os", "label": "OS"}, {"field": "ram", "label": "RAM", "type": "bytes"}],
                "explode": [{"field": "apps", "table": "inventory_sw_apps", "primary_key": ["name"],
                             "columns": [{"field": "name"}, {"field": "version"}, {"field": "size_mb", "type": "integer"}],
                             "track_history": true}],
                "history_scalars": ["os"],
            },
        }),
    )
    .await;
    let js = async_nats::jetstream::new(nats.client().await);
    let at = Utc::now() - Duration::minutes(30);
    let scans = [
        (
            "inv-1",
            "SIM-00000",
            serde_json::json!({"os": "Windows 10", "ram": 17179869184u64, "apps": [
            {"name": "Google Chrome", "version": "119.0", "size_mb": 400},
            {"name": "Mozilla Firefox", "version": "120.1", "size_mb": 250},
            {"name": "Zoom", "version": "5.16", "size_mb": 300}]}),
            at,
        ),
        (
            "inv-2",
            "SIM-00001",
            serde_json::json!({"os": "Windows 11", "ram": 34359738368u64, "apps": [
            {"name": "Google Chrome", "version": "121.0", "size_mb": 410},
            {"name": "Slack", "version": "4.35", "size_mb": 500}]}),
            at,
        ),
        (
            "inv-3",
            "SIM-00000",
            serde_json::json!({"os": "Windows 11", "ram": 17179869184u64, "apps": [
            {"name": "Google Chrome", "version": "119.0", "size_mb": 400},
            {"name": "Mozilla Firefox", "version": "121.0", "size_mb": 255},
            {"name": "VLC", "version": "3.0", "size_mb": 40}]}),
            at + Duration::minutes(10),
        ),
    ];
    assert_eq!(scans.len(), INVENTORY_SCANS);
    for (id, pc, out, at) in scans {
        let result = serde_json::json!({
            "result_id": id, "request_id": format!("req-{id}"), "pc_id": pc, "exit_code": 0,
            "stdout": out.to_string(), "stderr": "", "started_at": at,
            "finished_at": at + Duration::seconds(2), "manifest_id": "inventory-sw",
        });
        js_publish(
            &js,
            format!("results.req-{id}"),
            serde_json::to_vec(&result).unwrap(),
        )
        .await;
    }
    eventually("inventory projected", || async {
        let (_, rows) = b.get("/api/inventory/inventory-sw/search/apps").await;
        let (_, history) = b.get("/api/inventory/inventory-sw/history/search").await;
        (rows.as_array()?.len() == 5 && history.as_array()?.len() == 11).then_some(())
    })
    .await;
}

/// A notification to [`AGENT_PC`] that asks for an acknowledgement, and
/// the acknowledgement its agent reports.
async fn send_acknowledged_notification(b: &Backend, nats: &Nats) {
    post_ok(
        b,
        "/api/notifications",
        serde_json::json!({
            "id": NOTIFICATION_ID, "priority": "warn", "require_ack": true,
            "title": "Maintenance tonight", "body": "The network goes down at 22:00.",
            "target": {"pcs": [AGENT_PC]},
        }),
    )
    .await;
    let js = async_nats::jetstream::new(nats.client().await);
    let ack = serde_json::json!({
        "notification_id": NOTIFICATION_ID, "pc_id": AGENT_PC, "user_sid": ACK_SID, "acked_at": Utc::now(),
    });
    js_publish(
        &js,
        format!("events.notifications.acked.{AGENT_PC}.{ACK_SID}.{NOTIFICATION_ID}"),
        serde_json::to_vec(&ack).unwrap(),
    )
    .await;
    eventually("acknowledgement projected", || async {
        let (_, status) = b
            .get(&format!("/api/notifications/{NOTIFICATION_ID}/ack_status"))
            .await;
        (status["acks"].as_array()?.len() == 1).then_some(())
    })
    .await;
}

/// POSTs `body` with the service token, retrying while the backend's
/// buckets are still coming up (502/503), and asserts a 200.
async fn post_ok(b: &Backend, path: &str, body: serde_json::Value) {
    let (status, answer) = eventually(&format!("POST {path} past start-up"), || async {
        let (status, _, answer) = b
            .call(reqwest::Method::POST, path, Some(TOKEN), Some(body.clone()))
            .await;
        (status != 502 && status != 503).then_some((status, answer))
    })
    .await;
    assert_eq!(status, 200, "POST {path}: {answer}");
}

/// The HTTP contract of the embedded files, without a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_files_are_served_with_validators_and_api_paths_never_fall_back() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", b.base));

    let index = get("/").send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let etag = index.headers()["etag"].to_str().unwrap().to_string();
    let html = index.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/js/app.js">"#));

    // Deep links are the app; revalidation answers 304 with no body.
    for path in [
        "/agents/pc.corp.example",
        "/results?status=failure",
        "/scan-health",
    ] {
        let r = get(path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), html, "{path}");
    }
    let again = get("/agents")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    let js = get("/js/app.js").send().await.unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let licence = get("/vendor/uplot/LICENSE").send().await.unwrap();
    assert!(licence.text().await.unwrap().contains("MIT"));
    assert_eq!(get("/js/nope.js").send().await.unwrap().status(), 404);
    assert_eq!(get("/favicon.ico").send().await.unwrap().status(), 404);

    // /api never falls back to the app, with or without a token.
    for token in [None, Some(TOKEN)] {
        let mut req = get("/api/no-such-thing");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, if token.is_some() { 404 } else { 401 });
        assert!(body["error"].is_string(), "{body}");
    }
    let post = http
        .post(format!("{}/agents", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let body: serde_json::Value = post.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("POST /agents"));
    // The liveness probe keeps its plain answer.
    assert_eq!(
        get("/health").send().await.unwrap().text().await.unwrap(),
        "ok"
    );
}
