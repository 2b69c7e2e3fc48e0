//! Results of a job whose manifest (KV `jobs`) declares a fleet check land
//! in redb check_status, in the same transaction as the result row.

use crate::common::{eventually, Backend, Nats};
use chrono::{Duration, Utc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_results_update_check_status() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let js = async_nats::jetstream::new(nats.client().await);
    let manifest = serde_json::json!({
        "id": "disk-check", "version": "1.0.0",
        "execute": {"shell": "powershell", "script": "Get-Disk", "timeout": "5m"},
        "check": {"name": "disk", "fleet": true},
    });
    let kv = eventually("jobs bucket", || {
        let js = js.clone();
        async move { js.get_key_value("jobs").await.ok() }
    })
    .await;
    kv.put("disk-check", serde_json::to_vec(&manifest).unwrap().into())
        .await
        .unwrap();
    let at = Utc::now() - Duration::minutes(2);
    let run = |id: &str, pc: &str, code: i32, out: &str, err: &str, job: &str| {
        serde_json::json!({"result_id": id, "request_id": id, "pc_id": pc, "exit_code": code,
            "stdout": out, "stderr": err, "started_at": at, "finished_at": at + Duration::seconds(1),
            "manifest_id": job})
    };
    for r in [
        run(
            "c1",
            "pc1",
            0,
            r#"{"status":"warn","detail":"disk 91%"}"#,
            "",
            "disk-check",
        ),
        run("c2", "pc2", 1, "", "boom", "disk-check"),
        run("c3", "pc3", 0, "not json", "", "disk-check"),
        run("c4", "pc4", 0, r#"{"status":"fail"}"#, "", "unrelated-job"),
    ] {
        let ack = js
            .publish(
                format!("results.{}", r["result_id"].as_str().unwrap()),
                serde_json::to_vec(&r).unwrap().into(),
            )
            .await
            .unwrap();
        ack.await.unwrap();
    }
    eventually("four results", || async {
        let (_, body) = b.get("/api/results").await;
        (body.as_array()?.len() == 4).then_some(())
    })
    .await;
    assert!(b.sigterm().success());
    let log = b.log_text();
    let store = kanade_storage::RelationalStore::open(&data).unwrap();
    let checks = store.check_status_by_name("disk").unwrap();
    let got: Vec<(&str, &str, Option<&str>)> = checks
        .iter()
        .map(|c| (c.pc_id.as_str(), c.status.as_str(), c.detail.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("pc1", "warn", Some("disk 91%")),
            ("pc2", "unknown", Some("check script exited 1: boom")),
        ],
        "non-JSON stdout leaves the state alone; jobs without a check add nothing\n{log}"
    );
}
