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

/// The agents list with kanade 0.101's filters: regexes over the PC, the
/// last logon and the version (ignoring case, so a 0.43 substring search
/// still works), a rolled-back version, metadata conditions
/// (`meta.<key>.<op>`, `meta_key`/`meta_value`, `meta_any`) and sorting,
/// metadata included; bad grammar is a 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_and_sorts_as_0101_does() {
    use crate::common::TOKEN;
    use reqwest::Method;
    use serde_json::json;
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let c = nats.client().await;
    let now = Utc::now();
    let beat = |pc: &str, version: &str, user: &str, quarantined: &[&str]| -> Heartbeat {
        serde_json::from_value(json!({
            "pc_id": pc, "at": now, "agent_version": version, "hostname": pc.to_lowercase(),
            "os_family": "windows", "last_logon_user": user,
            "last_logon_display_name": format!("{user} (display)"),
            "quarantined_versions": quarantined,
        }))
        .unwrap()
    };
    let beats = [
        beat("PC-A", "0.101.0", "CORP\\yamada", &[]),
        beat("PC-B", "0.43.56", "CORP\\suzuki", &["0.43.62"]),
        beat("PC-C", "0.101.0", "CORP\\sato", &["0.43.6"]),
        beat("LAB-1", "0.100.2", "LAB\\admin", &[]),
    ];
    eventually("four agents", || async {
        for hb in &beats {
            publish_json(&c, format!("heartbeat.{}", hb.pc_id), hb).await;
        }
        let (_, h, _) = b.get_full("/api/agents").await;
        (header(&h, "X-Total-Count") == Some(4)).then_some(())
    })
    .await;
    for (pc, key, value) in [
        ("PC-A", "site", "Osaka HQ"),
        ("PC-A", "dept", "Sales"),
        ("PC-B", "site", "osaka branch"),
        ("PC-B", "dept", ""),
        ("PC-C", "site", "Kyoto"),
        ("LAB-1", "site.floor", "3"),
    ] {
        let (s, _, body) = b
            .call(
                Method::PUT,
                &format!("/api/agents/{pc}/meta/key"),
                Some(TOKEN),
                Some(json!({"key": key, "value": value})),
            )
            .await;
        assert_eq!(s, 200, "{body}");
    }
    let list = |query: &'static str| {
        let b = &b;
        async move {
            let (s, body) = b.get(&format!("/api/agents?{query}")).await;
            assert_eq!(s, 200, "{query}: {body}");
            let mut got = ids(&body);
            if !query.contains("sort=") {
                got.sort();
            }
            got
        }
    };
    assert_eq!(
        list("q=pc-").await,
        ["PC-A", "PC-B", "PC-C"],
        "a 0.43 substring, any case"
    );
    assert_eq!(
        list("q=%5E(lab%7Cpc-c)").await,
        ["LAB-1", "PC-C"],
        "a regex"
    );
    assert_eq!(list("user=suzuki").await, ["PC-B"]);
    assert_eq!(
        list("user=sato%20%5C(display").await,
        ["PC-C"],
        "the display name too"
    );
    assert_eq!(list("version=%5E0%5C.101").await, ["PC-A", "PC-C"]);
    assert_eq!(
        list("quarantined=0.43.6").await,
        ["PC-C"],
        "a token, not a prefix"
    );
    assert_eq!(list("meta.site.contains=OSAKA").await, ["PC-A", "PC-B"]);
    assert_eq!(list("meta.site.starts=osaka%20h").await, ["PC-A"]);
    assert_eq!(list("meta.site.eq=Kyoto").await, ["PC-C"]);
    assert_eq!(list("meta.site.neq=Kyoto").await, ["PC-A", "PC-B"]);
    assert_eq!(list("meta.dept.empty=").await, ["PC-B"]);
    assert_eq!(list("meta.dept.set=").await, ["PC-A", "PC-B"]);
    assert_eq!(list("meta.dept.absent=").await, ["LAB-1", "PC-C"]);
    assert_eq!(
        list("meta.site.floor.eq=3").await,
        ["LAB-1"],
        "a key with a dot"
    );
    assert_eq!(
        list("meta.site.contains=osaka&meta.dept.eq=Sales").await,
        ["PC-A"],
        "conditions AND"
    );
    assert_eq!(
        list("meta.site.contains=").await.len(),
        4,
        "an unfinished row"
    );
    assert_eq!(list("meta_key=dept").await, ["PC-A", "PC-B"]);
    assert_eq!(list("meta_key=site&meta_value=kyo").await, ["PC-C"]);
    assert_eq!(list("meta_any=sales").await, ["PC-A"]);
    assert_eq!(
        list("sort=meta:site&dir=asc").await,
        ["LAB-1", "PC-C", "PC-A", "PC-B"],
        "no value first, then by value"
    );
    assert_eq!(
        list("sort=agent_version&dir=desc").await,
        ["PC-B", "PC-A", "PC-C", "LAB-1"],
        "as text, as the reference's SQL orders it; ties by PC"
    );
    assert_eq!(list("sort=pc_id").await, ["LAB-1", "PC-A", "PC-B", "PC-C"]);
    for (query, needle) in [
        ("q=(", "q"),
        ("user=%5B", "user"),
        ("sort=bogus", "sort"),
        ("sort=meta:", "sort"),
        ("sort=pc_id&dir=up", "dir"),
        ("meta.site=x", "meta.<key>.<op>"),
        ("meta..eq=x", "empty key"),
        ("meta.site.like=x", "operator"),
        ("table=%7B", "invalid table state"),
        (
            "table=%7B%22filters%22%3A%7B%22nope%22%3A%7B%7D%7D%7D",
            "unknown table column",
        ),
        (
            "table=%7B%22sort%22%3A%7B%22id%22%3A%22os%22%2C%22dir%22%3A%22up%22%7D%7D",
            "asc or desc",
        ),
        ("distinct=meta:nokey", "unknown metadata column"),
        ("distinct=zzz", "unknown table column"),
    ] {
        let (s, body) = b.get(&format!("/api/agents?{query}")).await;
        assert_eq!(s, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }

    // Each row carries its metadata.
    let (_, rows) = b.get("/api/agents?q=%5EPC-A%24").await;
    assert_eq!(
        rows[0]["meta"],
        json!([{"key": "dept", "value": "Sales"}, {"key": "site", "value": "Osaka HQ"}])
    );

    // The 0.101 table state: column filters and a column sort.
    let table = |state: serde_json::Value, extra: &'static str| {
        let b = &b;
        async move {
            let enc = crate::common::urlencode(&state.to_string());
            let (s, body) = b.get(&format!("/api/agents?table={enc}{extra}")).await;
            assert_eq!(s, 200, "{state}: {body}");
            if extra.contains("distinct") {
                return vec![body.to_string()];
            }
            ids(&body)
        }
    };
    assert_eq!(
        table(json!({"filters": {"meta:site": {"contains": "OSAKA"}}}), "").await,
        ["PC-A", "PC-B"]
    );
    assert_eq!(
        table(
            json!({"filters": {"meta:site": {"values": [null, "Kyoto"]}}}),
            ""
        )
        .await,
        ["LAB-1", "PC-C"],
        "null picks the PC without the key"
    );
    assert_eq!(
        table(json!({"filters": {"meta:site": {"values": ["kyoto"]}}}), "").await,
        Vec::<String>::new(),
        "a checklist value is exact"
    );
    assert_eq!(
        table(json!({"filters": {"lastLogon": {"contains": "suzuki"}, "os": {"values": ["windows"]}}}), "").await,
        ["PC-B"]
    );
    assert_eq!(
        table(json!({"filters": {"pcId": {"contains": "lab"}}}), "").await,
        ["LAB-1"]
    );
    assert_eq!(
        table(json!({"sort": {"id": "meta:site", "dir": "asc"}}), "").await,
        ["PC-C", "PC-B", "PC-A", "LAB-1"],
        "case folded, the PC without a value last"
    );
    assert_eq!(
        table(
            json!({"sort": {"id": "meta:site", "dir": "desc"}}),
            "&sort=pc_id"
        )
        .await,
        ["PC-A", "PC-B", "PC-C", "LAB-1"],
        "the table's sort wins; still last when descending"
    );
    assert_eq!(
        list("sort=cpu&dir=desc").await,
        ["LAB-1", "PC-A", "PC-B", "PC-C"],
        "a newer sort token; no values, so by PC"
    );

    // Checklist candidates: every other filter applies, the column's own
    // does not (nor the regex the column's search box feeds).
    assert_eq!(
        table(
            json!({"filters": {"meta:site": {"values": ["Kyoto"]}}}),
            "&distinct=meta:site"
        )
        .await,
        [json!({"values": [
            {"value": "Kyoto", "count": 1},
            {"value": "Osaka HQ", "count": 1},
            {"value": "osaka branch", "count": 1},
            {"value": null, "count": 1},
        ], "overflow": false})
        .to_string()]
    );
    assert_eq!(
        table(
            json!({"filters": {"meta:site": {"contains": "osaka"}}}),
            "&distinct=agent&version=0.101"
        )
        .await,
        [json!({"values": [
            {"value": "0.101.0", "count": 1},
            {"value": "0.43.56", "count": 1},
        ], "overflow": false})
        .to_string()]
    );
    assert_eq!(
        table(json!({}), "&distinct=status&status=offline").await,
        [json!({"values": [], "overflow": false}).to_string()]
    );
    assert_eq!(
        table(json!({}), "&distinct=status").await,
        [json!({"values": [{"value": "online", "count": 4}], "overflow": false}).to_string()]
    );
}
