//! Heartbeats → redb agents → `/api/agents*`, and the hostname join of the
//! perf rankings, through a real broker, binary and HTTP.

use crate::common::{eventually, publish_json, Backend, Nats};
use chrono::{DateTime, Duration, Utc};
use kanade_shared::wire::{Heartbeat, HostPerf};
use serde_json::Value;

fn heartbeat(pc: &str, host: &str, at: DateTime<Utc>) -> Heartbeat {
    serde_json::from_value(serde_json::json!({
        "pc_id": pc,
        "at": at,
        "agent_version": "0.43.56",
        "hostname": host,
        "os_family": "windows",
        "agent_cpu_pct": 0.5,
        "agent_rss_bytes": 12_345_678,
        "quarantined_versions": ["0.43.50"],
    }))
    .unwrap()
}

fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|a| a["pc_id"].as_str().unwrap().to_string())
        .collect()
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_become_agents() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let c = nats.client().await;
    let now = Utc::now();
    let beats = [
        heartbeat("PC001", "alpha", now),
        heartbeat("PC002", "beta", now),
        heartbeat("web%01", "delta", now),
        heartbeat("STALE-1", "gamma", now - Duration::hours(1)),
    ];
    eventually("four agents", || async {
        for hb in &beats {
            publish_json(&c, format!("heartbeat.{}", hb.pc_id), hb).await;
        }
        let (_, h, _) = b.get_full("/api/agents").await;
        (header(&h, "X-Total-Count") == Some(4)).then_some(())
    })
    .await;

    let (s, detail) = b.get("/api/agents/PC001").await;
    assert_eq!(s, 200);
    assert_eq!(detail["hostname"], "alpha");
    assert_eq!(detail["os_family"], "windows");
    assert_eq!(detail["agent_version"], "0.43.56");
    assert_eq!(detail["agent_rss_bytes"], 12_345_678);
    assert_eq!(
        detail["quarantined_versions"],
        serde_json::json!(["0.43.50"])
    );
    let (s, missing) = b.get("/api/agents/nobody").await;
    assert_eq!(s, 404);
    assert!(missing["error"].as_str().unwrap().contains("nobody"));

    let mut found = ids(&b.get("/api/agents?q=pc00").await.1);
    found.sort();
    assert_eq!(found, vec!["PC001", "PC002"], "case-insensitive substring");
    assert_eq!(
        ids(&b.get("/api/agents?q=%25").await.1),
        vec!["web%01"],
        "% is literal"
    );
    assert!(
        ids(&b.get("/api/agents?q=_").await.1).is_empty(),
        "_ is literal"
    );
    assert_eq!(
        ids(&b.get("/api/agents?q=GAMMA").await.1),
        vec!["STALE-1"],
        "hostname matches"
    );

    let (_, h, offline) = b.get_full("/api/agents?status=offline&limit=10").await;
    assert_eq!(ids(&offline), vec!["STALE-1"]);
    assert_eq!(header(&h, "X-Total-Count"), Some(1));
    assert_eq!(header(&h, "X-Online-Count"), Some(3));
    assert_eq!(header(&h, "X-Offline-Count"), Some(1));
    let (_, h, page) = b
        .get_full("/api/agents?status=online&limit=2&offset=2")
        .await;
    assert_eq!(ids(&page).len(), 1);
    assert_eq!(header(&h, "X-Total-Count"), Some(3));

    let (s, bad) = b.get("/api/agents?status=sleeping").await;
    assert_eq!(s, 400);
    assert!(bad["error"].as_str().unwrap().contains("`status`"));
    let (s, _) = b.get("/api/agents?limit=-1").await;
    assert_eq!(s, 400);

    // The perf ranking carries the hostname from the agents table.
    let sample: HostPerf = serde_json::from_value(serde_json::json!({
        "pc_id": "PC001", "at": now - Duration::seconds(20), "cpu_pct": 42.0
    }))
    .unwrap();
    publish_json(&c, "host_perf.PC001".into(), &sample).await;
    let top = eventually("ranking", || async {
        let (_, body) = b.get("/api/perf/top").await;
        (body["rows"].as_array()?.len() == 1).then_some(body)
    })
    .await;
    assert_eq!(top["rows"][0]["hostname"], "alpha");

    // Durable across a restart.
    assert!(b.sigterm().success());
    let b = Backend::start(&nats.url, &data, "");
    let (_, h, _) = b.get_full("/api/agents").await;
    assert_eq!(header(&h, "X-Total-Count"), Some(4));
    assert_eq!(b.get("/api/agents/PC002").await.1["hostname"], "beta");
}
