//! An online backup taken while samples keep arriving: `kanade-backend
//! backup` through the running backend, `kanade-backend verify` on the
//! copy, and a second backend started on the copy answering the same.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::{eventually, free_port, js_publish_bytes, publish_json, Backend, Nats, TOKEN};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};

fn sample(pc: &str, at: DateTime<Utc>, cpu: f64) -> Value {
    json!({"pc_id": pc, "at": at, "cpu_pct": cpu, "mem_used_bytes": 1000, "mem_total_bytes": 8000})
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
        .args(args)
        .env_remove("KANADE_BACKEND_CONFIG")
        .env_remove("KANADE_AUTH_STATIC_TOKEN")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_during_ingest_restores_the_same_answers() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(
        &nats.url,
        &dir.path().join("data"),
        "persist_interval_secs = 1",
    );
    let c = nats.client().await;
    let js = async_nats::jetstream::new(c.clone());

    // What the backup must hold: two PCs' last two hours, and results.
    let t0 = (Utc::now() - Duration::hours(2))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    let perf = |pc: &str| {
        format!(
            "/api/agents/{pc}/perf?from={}&to={}&step=60s",
            q(t0),
            q(t0 + Duration::minutes(120))
        )
    };
    eventually("projector subscribed", || async {
        publish_json(&c, "host_perf.pc-a".into(), &sample("pc-a", t0, 0.0)).await;
        (b.get(&perf("pc-a")).await.1["points"].as_array()?.len() == 1).then_some(())
    })
    .await;
    for i in 0..120 {
        let at = t0 + Duration::minutes(i);
        for (pc, cpu) in [("pc-a", i as f64), ("pc-b", 100.0 - i as f64)] {
            publish_json(&c, format!("host_perf.{pc}"), &sample(pc, at, cpu)).await;
        }
    }
    for n in 0..3 {
        let r = json!({
            "result_id": format!("r-{n}"), "request_id": format!("q-{n}"), "pc_id": "pc-a",
            "exit_code": n, "stdout": format!("run {n}"), "stderr": "",
            "started_at": t0, "finished_at": t0 + Duration::seconds(5),
        });
        js_publish_bytes(
            &js,
            format!("results.q-{n}"),
            serde_json::to_vec(&r).unwrap(),
        )
        .await;
    }
    eventually("everything stored", || async {
        let a = b.get(&perf("pc-a")).await.1["points"].as_array()?.len();
        let bb = b.get(&perf("pc-b")).await.1["points"].as_array()?.len();
        let results = b.get("/api/results").await.1.as_array()?.len();
        (a == 120 && bb == 120 && results == 3).then_some(())
    })
    .await;
    // Some of it persisted to Parquet (the rest is in the WAL).
    eventually("a persisted file", || async {
        (!crate::common::parquet_files(&dir.path().join("data")).is_empty()).then_some(())
    })
    .await;

    // Samples keep arriving while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let live = tokio::spawn({
        let (c, stop) = (c.clone(), Arc::clone(&stop));
        async move {
            let start = Utc::now() - Duration::minutes(30);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let at = start + Duration::milliseconds(100 * i);
                publish_json(&c, "host_perf.pc-live".into(), &sample("pc-live", at, 1.0)).await;
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            i
        }
    });
    // Some of them committed (the projector batches for a second) before
    // the backup starts; more arrive while it runs.
    let live_path = format!(
        "/api/agents/pc-live/perf?from={}&to={}&step=60s",
        q(Utc::now() - Duration::hours(1)),
        q(Utc::now() + Duration::minutes(1))
    );
    eventually("live samples committed", || async {
        (!b.get(&live_path).await.1["points"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let copy = dir.path().join("backup");
    let copy_arg = copy.to_str().unwrap();
    let out = cli(&["backup", copy_arg, "--url", &b.base, "--token", TOKEN]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::SeqCst);
    let published_live = live.await.unwrap();
    assert!(published_live > 0);
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables: Vec<&str> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        ["host_perf", "process_perf", "inventory_history"],
        "{manifest}"
    );
    assert_eq!(manifest["tables"][0]["table"], "host_perf");
    assert!(
        manifest["tables"][0]["files"].as_u64().unwrap() >= 1,
        "{manifest}"
    );
    assert!(
        manifest["relational_bytes"].as_u64().unwrap() > 0,
        "{manifest}"
    );

    // Never over an existing backup; never for a non-admin.
    let again = cli(&["backup", copy_arg, "--url", &b.base, "--token", TOKEN]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let (status, body) = b.get_with("/api/admin/backup", Some(TOKEN)).await;
    assert_eq!(status, 405, "{body}");

    // The copy checks out: every file decoded, every table read.
    let verified = cli(&["verify", copy_arg]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    let host_rows = report["perf_rows"][0][1].as_u64().unwrap();
    assert_eq!(report["perf_rows"][0][0], "host_perf");
    // pc-a and pc-b, and some of the samples that arrived meanwhile.
    assert!(host_rows > 240, "{report}");
    let results_rows = report["relational_rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t[0] == "execution_results")
        .map(|t| t[1].as_u64().unwrap());
    assert_eq!(results_rows, Some(3), "{report}");
    // A damaged copy does not.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let bad = cli(&["verify", broken.to_str().unwrap()]);
    assert!(!bad.status.success());

    // Restored: a backend on the copy (no broker) answers the same.
    let r = Backend::start(&format!("nats://127.0.0.1:{}", free_port()), &copy, "");
    for pc in ["pc-a", "pc-b"] {
        let (original, restored) = (b.get(&perf(pc)).await.1, r.get(&perf(pc)).await.1);
        assert_eq!(restored["points"].as_array().map(Vec::len), Some(120));
        assert_eq!(original, restored, "{pc}");
    }
    assert_eq!(b.get("/api/results").await.1, r.get("/api/results").await.1);
    // The samples committed before the backup began are in it.
    let (_, restored_live) = r.get(&live_path).await;
    assert!(
        !restored_live["points"].as_array().unwrap().is_empty(),
        "{restored_live}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_plane_is_backed_up_and_restored_into_an_empty_broker() {
    use crate::common::{send, yaml};
    use reqwest::Method;
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let job = "id: inventory-hw\nversion: 1.4.2\nexecute:\n  shell: powershell\n  script: Get-CimInstance Win32_ComputerSystem\n  timeout: 5m\n";
    eventually("the job registered", || async {
        let (status, _) = send(&b, Method::POST, "/api/jobs", TOKEN, yaml(job)).await;
        (status / 100 == 2).then_some(())
    })
    .await;
    // A package of several chunks, straight into its object store.
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let package: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let store = eventually("the app_packages store", || async {
        js.get_object_store("app_packages").await.ok()
    })
    .await;
    let meta = async_nats::jetstream::object_store::ObjectMetadata {
        name: "com.example.tool/1.0.0".into(),
        description: Some("the tool".into()),
        ..Default::default()
    };
    store.put(meta, &mut package.as_slice()).await.unwrap();

    // The registration's audit entry is applied (a stream position in
    // the backup's redb).
    eventually("the registration audited", || async {
        let (_, audit) = b.get("/api/audit").await;
        audit.to_string().contains("inventory-hw").then_some(())
    })
    .await;
    let copy = dir.path().join("backup");
    let copy_arg = copy.to_str().unwrap();
    let out = cli(&["backup", copy_arg, "--url", &b.base, "--token", TOKEN]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = cli(&["verify", copy_arg]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["broker"]["kv/jobs"], 1, "{report}");
    assert_eq!(report["broker"]["objects/app_packages"], 1, "{report}");

    // Into an empty broker and an empty data directory.
    let empty = Nats::start();
    let restored = dir.path().join("restored");
    let config = dir.path().join("restore.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[storage]\ndata_dir = \"{}\"\n",
            empty.url,
            restored.display()
        ),
    )
    .unwrap();
    let restore = || cli(&["--config", config.to_str().unwrap(), "restore", copy_arg]);
    let out = restore();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js2 = async_nats::jetstream::new(empty.client().await);
    let jobs = js2.get_key_value("jobs").await.unwrap();
    let stored = jobs
        .get("inventory-hw")
        .await
        .unwrap()
        .expect("the job is back");
    let original = js.get_key_value("jobs").await.unwrap();
    assert_eq!(Some(stored), original.get("inventory-hw").await.unwrap());
    let mut object = js2
        .get_object_store("app_packages")
        .await
        .unwrap()
        .get("com.example.tool/1.0.0")
        .await
        .unwrap();
    assert_eq!(object.info.description.as_deref(), Some("the tool"));
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut back)
        .await
        .unwrap();
    assert!(back == package, "the package's bytes are back");

    // Never over what a broker or a data directory already holds.
    let again = restore();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("data directory"), "{stderr}");
    let again = cli(&[
        "--config",
        config.to_str().unwrap(),
        "restore",
        copy_arg,
        "--broker-only",
    ]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("KV bucket jobs"),
        "{stderr}"
    );

    // A backend on the restored broker and data serves the job.
    let r = Backend::start(&empty.url, &restored, "");
    let (status, list) = send(&r, Method::GET, "/api/jobs", TOKEN, None).await;
    assert_eq!(status, 200, "{list}");
    assert!(list.to_string().contains("inventory-hw"), "{list}");
    // The restored positions are of the old broker's streams: the new
    // broker's first audit entry is read, not skipped as already applied.
    let second = job.replace("inventory-hw", "inventory-sw");
    let (status, _) = send(&r, Method::POST, "/api/jobs", TOKEN, yaml(&second)).await;
    assert_eq!(status / 100, 2);
    let audited = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            if r.get("/api/audit")
                .await
                .1
                .to_string()
                .contains("inventory-sw")
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        audited.is_ok(),
        "the new broker's first audit entry never shown; log:\n{}",
        r.log_text()
    );

    // A damaged object fails the check, naming it.
    let file = copy.join("broker/objects/app_packages/0.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let bad = cli(&["verify", copy_arg]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("app_packages/com.example.tool/1.0.0"),
        "{stderr}"
    );
}
