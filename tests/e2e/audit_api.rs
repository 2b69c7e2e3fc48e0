//! Stream AUDIT → redb audit_log → `/api/audit`.

use crate::common::{eventually, Backend, Nats};
use chrono::{Duration, Utc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_listed_and_filtered() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now() - Duration::hours(1);
    let events = [
        serde_json::json!({"actor": "alice", "action": "exec", "target": "job-1", "payload": {"pcs": 3}, "occurred_at": t}),
        serde_json::json!({"actor": "bob", "action": "schedule.create", "target": null, "payload": {"cron": "0 * * * *"}, "occurred_at": t + Duration::minutes(1)}),
        serde_json::json!({"actor": "alice", "action": "kill", "target": "job-1", "payload": null, "occurred_at": t + Duration::minutes(2)}),
    ];
    let publish = |payload: Vec<u8>| {
        let js = js.clone();
        async move {
            eventually("audit stream accepts", || {
                let (js, payload) = (js.clone(), payload.clone());
                async move {
                    js.publish("audit.event", payload.into())
                        .await
                        .ok()?
                        .await
                        .ok()
                        .map(|_| ())
                }
            })
            .await
        }
    };
    publish(serde_json::to_vec(&events[0]).unwrap()).await;
    // A malformed message between good ones blocks nothing.
    publish(b"not json".to_vec()).await;
    publish(serde_json::to_vec(&events[1]).unwrap()).await;
    publish(serde_json::to_vec(&events[2]).unwrap()).await;
    let all = eventually("three entries", || async {
        let (_, body) = b.get("/api/audit").await;
        (body.as_array()?.len() == 3).then_some(body)
    })
    .await;
    let actions: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["kill", "schedule.create", "exec"],
        "newest first"
    );
    assert_eq!(all[2]["payload"]["pcs"], 3);
    assert_eq!(
        b.get("/api/audit?actor=alice")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        b.get("/api/audit?action=%5Eschedule%5C.").await.1[0]["actor"],
        "bob"
    );
    assert_eq!(
        b.get("/api/audit?target=%5E%24").await.1[0]["actor"],
        "bob",
        "NULL target as \"\""
    );
    assert_eq!(
        b.get("/api/audit?payload=cron")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        b.get("/api/audit?limit=1")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (s, bad) = b.get("/api/audit?action=%5B").await;
    assert_eq!(s, 400);
    assert!(bad["error"].as_str().unwrap().contains("`action`"));

    let ids: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert!(b.sigterm().success());
    let b = Backend::start(&nats.url, &data, "");
    let again = b.get("/api/audit").await.1;
    let ids_again: Vec<u64> = again
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids_again, ids, "restart keeps the same rows, no duplicates");
}
