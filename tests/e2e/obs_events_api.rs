//! Stream OBS_EVENTS → redb obs_events → `/api/obs_events*`.

use crate::common::{eventually, Backend, Nats};
use chrono::{Duration, Utc};
use serde_json::{json, Value};

fn ids(body: &Value) -> Vec<u64> {
    body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

fn records(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_record_id"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_are_stored_once_and_filtered() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now() - Duration::hours(2);
    let events = [
        json!({"pc_id": "pc1", "at": t, "kind": "logon", "source": "Security", "event_record_id": "1", "payload": {"logon_type": 10, "user": "alice"}}),
        json!({"pc_id": "pc1", "at": t + Duration::minutes(1), "kind": "logon", "source": "Security", "event_record_id": "2", "payload": {"logon_type": 2, "user": "bob"}}),
        // The same record again (agent outbox replay): stored once.
        json!({"pc_id": "pc1", "at": t + Duration::minutes(1), "kind": "logon", "source": "Security", "event_record_id": "2", "payload": {"logon_type": 2, "user": "bob"}}),
        json!({"pc_id": "pc2", "at": t + Duration::minutes(2), "kind": "service_crash", "source": "System", "event_record_id": "9", "payload": {"service": "spooler"}}),
        json!({"pc_id": "pc2", "at": t + Duration::minutes(3), "kind": "usb", "source": "Kernel", "payload": null}),
    ];
    for e in &events {
        let payload = serde_json::to_vec(e).unwrap();
        eventually("obs stream accepts", || {
            let (js, payload) = (js.clone(), payload.clone());
            async move {
                js.publish("obs.pc", payload.into())
                    .await
                    .ok()?
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
    }
    let all = eventually("four stored", || async {
        let (_, body) = b.get("/api/obs_events").await;
        (body["events"].as_array()?.len() == 4).then_some(body)
    })
    .await;
    assert_eq!(
        records(&all),
        vec!["-", "9", "2", "1"],
        "newest first, duplicate dropped"
    );
    assert_eq!(all["events"][3]["payload"]["user"], "alice");

    assert_eq!(
        records(&b.get("/api/obs_events?pc_id=pc1").await.1),
        vec!["2", "1"]
    );
    assert_eq!(
        records(&b.get("/api/obs_events?kind=logon&logon_type=10").await.1),
        vec!["1"]
    );
    assert_eq!(
        records(&b.get("/api/obs_events?kinds=usb,service_crash").await.1),
        vec!["-", "9"]
    );
    assert_eq!(
        records(&b.get("/api/obs_events?kinds_ex=logon").await.1),
        vec!["-", "9"]
    );
    assert_eq!(
        records(
            &b.get("/api/obs_events?sources=Security&sources_ex=System")
                .await
                .1
        ),
        vec!["2", "1"]
    );
    assert_eq!(
        records(
            &b.get("/api/obs_events?payload_key=user&payload_value=bob")
                .await
                .1
        ),
        vec!["2"]
    );
    assert_eq!(
        records(
            &b.get("/api/obs_events?payload_key=logon_type&payload_value=2")
                .await
                .1
        ),
        vec!["2"]
    );
    let to = (t + Duration::seconds(90)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        records(&b.get(&format!("/api/obs_events?to={to}")).await.1),
        vec!["2", "1"]
    );
    assert_eq!(
        ids(&b.get("/api/obs_events/recent?limit=2").await.1).len(),
        2
    );
    assert_eq!(
        b.get("/api/obs_events/kinds").await.1,
        json!({"kinds": ["logon", "service_crash", "usb"]})
    );
    assert_eq!(
        b.get("/api/obs_events/sources").await.1,
        json!({"sources": ["Kernel", "Security", "System"]})
    );
    for bad in [
        "/api/obs_events?limit=0",
        "/api/obs_events?limit=5001",
        "/api/obs_events?payload_key=a.b&payload_value=1",
        "/api/obs_events/recent?limit=x",
    ] {
        let (s, body) = b.get(bad).await;
        assert_eq!(s, 400, "{bad}");
        assert!(body["error"].is_string());
    }
}

/// `lane_seeds`: per PC, the latest event of each swimlane before the
/// cut, oldest first; lanes without one are absent; bad input is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_seeds_give_each_lane_its_state_before_the_cut() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now() - Duration::hours(3);
    let at = |m: i64| t + Duration::minutes(m);
    let events = [
        ("pc1", 0, "boot", "1"),
        ("pc1", 1, "logon", "2"),
        ("pc1", 2, "idle", "3"),
        ("pc1", 3, "logoff", "4"),
        ("pc1", 4, "usb", "5"),
        ("pc1", 5, "shutdown", "6"),
        ("pc1", 20, "boot", "7"),
        ("pc2", 1, "sleep", "8"),
        ("pc2", 30, "resume", "9"),
    ];
    for (pc, m, kind, rec) in events {
        let payload = serde_json::to_vec(&json!({
            "pc_id": pc, "at": at(m), "kind": kind, "source": "System",
            "event_record_id": rec, "payload": {},
        }))
        .unwrap();
        eventually("obs stream accepts", || {
            let (js, payload) = (js.clone(), payload.clone());
            async move {
                js.publish("obs.pc", payload.into())
                    .await
                    .ok()?
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
    }
    eventually("nine stored", || async {
        let (_, body) = b.get("/api/obs_events?limit=100").await;
        (body["events"].as_array()?.len() == 9).then_some(())
    })
    .await;
    let before = (at(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, body) = b
        .get(&format!(
            "/api/obs_events/lane_seeds?pcs=pc1,%20pc2,pc1,nobody&before={}",
            before.replace('+', "%2B")
        ))
        .await;
    assert_eq!(s, 200, "{body}");
    // pc1: power = shutdown (6, not the later boot 7), session = logoff,
    // activity = idle; no sleep lane; usb draws in none. pc2: sleep.
    assert_eq!(records(&body), vec!["3", "4", "6", "8"]);
    for (query, param) in [
        ("pcs=&before=2026-01-01T00:00:00Z", "pcs"),
        ("pcs=pc1", "before"),
        ("pcs=pc1&before=yesterday", "before"),
    ] {
        let (s, body) = b.get(&format!("/api/obs_events/lane_seeds?{query}")).await;
        assert_eq!(s, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(param),
            "{query}: {body}"
        );
    }
    let many: Vec<String> = (0..65).map(|i| format!("pc{i}")).collect();
    let (s, _) = b
        .get(&format!(
            "/api/obs_events/lane_seeds?pcs={}&before={before}",
            many.join(",")
        ))
        .await;
    assert_eq!(s, 400);
}
