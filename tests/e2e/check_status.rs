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

/// A check's `alert:` fires when its status moves into `on` (not while it
/// stays there, not for a stale result): a signed-or-not notification to
/// the PC's user and the operator group, and one mail to the group's
/// contacts through a real SMTP server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_entering_fail_notifies_and_mails_the_groups_contacts() {
    use futures::StreamExt;
    use reqwest::Method;
    use serde_json::json;
    let nats = Nats::start();
    let smtp = crate::common::Smtp::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let client = nats.client().await;
    let mut notes = client.subscribe("notifications.>").await.unwrap();
    client.flush().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let manifest = json!({
        "id": "disk-check", "version": "1.0.0",
        "execute": {"shell": "powershell", "script": "Get-Disk", "timeout": "5m"},
        "check": {"name": "disk", "label": "Disk", "fleet": true, "alert": {
            "on": ["fail"], "notify_user": true, "notify_groups": ["ops"], "email": true,
            "require_ack": true, "toast": true,
            "title": "{label} {status} on {pc_id}", "body": "{detail}; {name} {unknown}"
        }},
    });
    let kv = eventually("jobs bucket", || {
        let js = js.clone();
        async move { js.get_key_value("jobs").await.ok() }
    })
    .await;
    kv.put("disk-check", serde_json::to_vec(&manifest).unwrap().into())
        .await
        .unwrap();
    let (status, body) = eventually("server_settings ready", || async {
        let (status, _, body) = b
            .call(
                Method::PUT,
                "/api/server-settings",
                Some(crate::common::TOKEN),
                Some(json!({"mail": {"host": "127.0.0.1", "port": smtp.port,
                    "encryption": "none", "from": "kanade@example.com"}})),
            )
            .await;
        (status != 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = b
        .call(
            Method::PUT,
            "/api/groups/ops/email",
            Some(crate::common::TOKEN),
            Some(json!({"emails": ["ops@example.com", "desk@example.com"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let now = Utc::now();
    let mut n = 0;
    let mut publish = |pc: &str, status: &str, at: chrono::DateTime<Utc>| {
        n += 1;
        let id = format!("r{n}");
        let r = json!({"result_id": id, "request_id": id, "pc_id": pc, "exit_code": 0,
            "stdout": json!({"status": status, "detail": format!("C: {status}")}).to_string(),
            "stderr": "", "started_at": at, "finished_at": at, "manifest_id": "disk-check"});
        let js = js.clone();
        async move {
            js.publish(
                format!("results.{id}"),
                serde_json::to_vec(&r).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    let t = |s: i64| now - Duration::seconds(60 - s);
    publish("pc1", "ok", t(0)).await; // first report: ok, nothing
    publish("pc1", "fail", t(1)).await; // ok → fail: alert
    publish("pc1", "fail", t(2)).await; // stays failing: nothing
    publish("pc1", "warn", t(3)).await; // leaves `on`: nothing
    publish("pc2", "fail", now - Duration::minutes(30)).await; // stale: nothing
    publish("pc1", "fail", t(0) - Duration::seconds(5)).await; // older than the state: nothing
    publish("pc3", "fail", t(4)).await; // first report is fail: alert
    eventually("seven results", || async {
        let (_, body) = b.get("/api/results").await;
        (body.as_array()?.len() == 7).then_some(())
    })
    .await;

    let mut got = Vec::new();
    while got.len() < 4 {
        let m = tokio::time::timeout(std::time::Duration::from_secs(30), notes.next())
            .await
            .expect("the alerts")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        got.push((m.subject.to_string(), v));
    }
    // Nothing more comes.
    let more = tokio::time::timeout(std::time::Duration::from_secs(2), notes.next()).await;
    assert!(more.is_err(), "an extra notification: {more:?}");
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|(s, v)| (s.clone(), v["title"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("notifications.group.ops".into(), "Disk fail on pc1".into()),
            ("notifications.group.ops".into(), "Disk fail on pc3".into()),
            ("notifications.pc.pc1".into(), "Disk fail on pc1".into()),
            ("notifications.pc.pc3".into(), "Disk fail on pc3".into()),
        ]
    );
    let (_, first) = &got[0];
    assert_eq!(first["body"], "C: fail; disk {unknown}", "{first}");
    assert_eq!(first["issued_by"], "compliance:disk", "{first}");
    assert_eq!(first["require_ack"], true);
    assert_eq!(first["toast"], true);

    let mails = eventually("two mails", || async {
        let m = smtp.messages();
        (m.len() == 2).then_some(m)
    })
    .await;
    for pc in ["pc1", "pc3"] {
        let mail = mails
            .iter()
            .find(|m| m.contains(&format!("Subject: Disk fail on {pc}")))
            .unwrap_or_else(|| panic!("no mail for {pc}: {mails:?}"));
        assert!(
            mail.contains("ops@example.com") && mail.contains("desk@example.com"),
            "{mail}"
        );
        assert!(mail.contains("C: fail; disk"), "{mail}");
    }
}
