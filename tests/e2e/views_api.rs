//! Views and analytics as a 0.101 operator uses them: `kanade view create`
//! posts YAML, `GET /api/analytics` renders every widget (observation
//! rollups from redb, SQL widgets through the catalog) for the fleet, a
//! PC, or the dashboard's pinned ones. Real broker, real binary, HTTP.

use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{error_of, eventually, json_body, yaml, Backend, Nats, TOKEN};

async fn send(
    b: &Backend,
    method: Method,
    path: &str,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    crate::common::send(b, method, path, TOKEN, body).await
}

const VIEW: &str = r#"# usage, as the desk reads it
id: usage
description: What PCs run
tags: [ops]
widgets:
  - title: Top apps
    placement: {analytics: usage}
    scope: fleet
    kind: app_sample
    agg: count
    group_by: foreground.app
    sample_minutes: 2
    render: bar
  - title: Top sites
    placement: {analytics: usage}
    scope: fleet
    kind: app_sample
    agg: count
    group_by: foreground.url
    transform: host
    exclude: [skip.example]
    render: bar
  - title: Active share
    order: -1
    placement: {analytics: {tab: usage, width: half}}
    scope: fleet
    kind: app_sample
    agg: ratio
    bool_path: active
    sample_minutes: 1
    render: gauge
  - title: Bytes by PC
    placement: {analytics: usage}
    scope: fleet
    kind: app_sample
    agg: sum
    value_path: bytes
    group_by: pc_id
    render: bar
  - title: By hour
    placement: {analytics: usage}
    scope: fleet
    kind: app_sample
    agg: ratio
    bool_path: active
    time_bucket: hour
    render: timeline
  - title: Operating timeline
    placement: {analytics: pc}
    render: op_timeline
  - title: Samples here
    placement: {analytics: pc}
    kind: app_sample
    agg: count
    render: stat
sql_widgets:
  - title: Events per PC
    query: SELECT pc_id, count(*) AS n FROM obs_events GROUP BY pc_id ORDER BY pc_id
    render: {kind: table, labels: {n: Events}}
    placement: {dashboard: {pin: true, width: full}}
  - title: My events
    query: "SELECT count(*) AS n FROM obs_events WHERE pc_id = :pc_id -- not :pc_idx"
    render: {kind: stat, value: n}
    placement: {analytics: pc}
  - title: Broken render
    query: SELECT pc_id FROM agents
    render: {kind: bar, label: pc_id, value: missing}
    placement: {analytics: usage}
"#;

fn titles(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|w| w["title"].as_str().unwrap().to_string())
        .collect()
}

fn widget<'a>(list: &'a Value, title: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|w| w["title"] == title)
        .unwrap_or_else(|| panic!("no {title} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_render_rollups_and_sql_for_the_fleet_a_pc_and_the_dashboard() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let js = async_nats::jetstream::new(nats.client().await);
    // An hour that ended at least an hour ago, so every event is past.
    let base: DateTime<Utc> = (Utc::now() - Duration::hours(2))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    let sample = |pc: &str, min: i64, app: &str, url: &str, active: bool, bytes: Value| {
        json!({"pc_id": pc, "at": base + Duration::minutes(min), "kind": "app_sample",
               "source": "agent", "event_record_id": format!("{pc}-{min}"),
               "payload": {"foreground": {"app": app, "url": url}, "active": active, "bytes": bytes}})
    };
    let life = |pc: &str, at: DateTime<Utc>, kind: &str, id: &str| {
        json!({"pc_id": pc, "at": at, "kind": kind, "source": "winlog:System",
               "event_record_id": id, "payload": {"boot_time": 1718600000}})
    };
    let events = [
        sample(
            "pc1",
            5,
            "brave",
            "https://User@Example.COM:8443/a",
            true,
            json!(100),
        ),
        sample(
            "pc1",
            10,
            "brave",
            "https://example.com/b",
            true,
            json!("50"),
        ),
        sample("pc1", 15, "code", "chrome://settings", false, json!(null)),
        sample("pc2", 20, "brave", "http://skip.example/", false, json!(7)),
        sample("pc2", 70, "excel", "https://docs.example/x", true, json!(1)),
        life("pc1", base - Duration::hours(3), "boot", "b1"),
        life("pc1", base + Duration::minutes(1), "logon", "l1"),
        life("pc1", base + Duration::minutes(30), "agent_offline", "o1"),
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
    eventually("events stored", || async {
        let (_, body) = send(&b, Method::GET, "/api/obs_events?limit=100", None).await;
        (body["events"].as_array()?.len() == events.len()).then_some(())
    })
    .await;

    // Registered as the CLI sends it; bad views refused naming the fault.
    let (status, body) = eventually("views bucket ready", || async {
        let r = send(&b, Method::POST, "/api/views", yaml(VIEW)).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": "usage", "description": "What PCs run", "widget_count": 10, "tags": ["ops"]})
    );
    for (text, needle) in [
        ("id: v\nwidgets: []\n", "at least one widget"),
        (
            "id: v\nsql_widgets:\n  - {title: t, query: SELECT 1, render: {kind: table}, placement: {analytics: a}, refrsh: 1h}\n",
            "refrsh",
        ),
        (
            "id: v\nsql_widgets:\n  - {title: t, query: DELETE FROM agents, render: {kind: table}, placement: {analytics: a}}\n",
            "sql_widgets[0].query",
        ),
        (
            "id: v\nsql_widgets:\n  - {title: t, query: SELECT x FROM nowhere, render: {kind: table}, placement: {analytics: a}}\n",
            "nowhere",
        ),
        (
            "id: v\nwidgets:\n  - {title: t, placement: {analytics: a}, kind: k, agg: ratio, render: gauge}\n",
            "bool_path",
        ),
    ] {
        let (status, err) = send(&b, Method::POST, "/api/views", yaml(text)).await;
        assert_eq!(status, 400, "{text}: {err}");
        assert!(error_of(&err).contains(needle), "{needle}: {err}");
    }
    let (_, list) = send(&b, Method::GET, "/api/views", None).await;
    assert_eq!(titles(&list[0]["widgets"]).len(), 7, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["sql_widgets"].as_array().unwrap().len(), 3);
    let text = reqwest::Client::new()
        .get(format!("{}/api/views/usage/yaml", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, VIEW);
    let (_, schema) = send(&b, Method::GET, "/api/schemas/view.json", None).await;
    assert!(schema["properties"]["sql_widgets"].is_object(), "{schema}");

    // A job's own `aggregate:` widgets render beside the views'.
    let job = "id: logons\nversion: '1'\nexecute:\n  shell: sh\n  script: echo\n  timeout: 1m\naggregate:\n  - title: Logons\n    placement: {analytics: usage}\n    scope: fleet\n    kind: logon\n    agg: count\n    render: stat\n";
    let (status, body) = send(&b, Method::POST, "/api/jobs", yaml(job)).await;
    assert_eq!(status, 200, "{body}");

    // The fleet, with the browser an hour east of UTC.
    let window = format!(
        "from={}&to={}&tz_offset_minutes=60",
        (base - Duration::hours(1)).to_rfc3339().replace('+', "%2B"),
        (base + Duration::minutes(65))
            .to_rfc3339()
            .replace('+', "%2B"),
    );
    let fleet = eventually("the job's widget is known", || async {
        let (status, fleet) =
            send(&b, Method::GET, &format!("/api/analytics?{window}"), None).await;
        assert_eq!(status, 200, "{fleet}");
        titles(&fleet)
            .contains(&"Logons".to_string())
            .then_some(fleet)
    })
    .await;
    assert_eq!(widget(&fleet, "Logons")["value"], 1);
    assert_eq!(
        titles(&fleet),
        [
            "Active share",
            "By hour",
            "Bytes by PC",
            "Logons",
            "Top apps",
            "Top sites",
            "Events per PC",
            "Broken render"
        ],
        "aggregates by (order, tab, title), then SQL widgets; PC ones left out"
    );
    let share = widget(&fleet, "Active share");
    assert_eq!(
        (
            share["render"].clone(),
            share["total"].clone(),
            share["active"].clone(),
            share["est_minutes"].clone()
        ),
        (json!("gauge"), json!(4), json!(2), json!(2))
    );
    assert_eq!(share["ratio"], 0.5);
    assert_eq!(share["width"], "half");
    assert_eq!(share["dashboard"], "usage");
    assert_eq!(share["scope"], "fleet");
    assert_eq!(share["first"], json!(base + Duration::minutes(5)));
    assert_eq!(share["last"], json!(base + Duration::minutes(10)));
    assert_eq!(
        widget(&fleet, "Top apps")["rows"],
        json!([{"label": "brave", "value": 3, "est_minutes": 6}, {"label": "code", "value": 1, "est_minutes": 2}])
    );
    assert_eq!(
        widget(&fleet, "Top sites")["rows"],
        json!([{"label": "example.com", "value": 2}])
    );
    assert_eq!(
        widget(&fleet, "Bytes by PC")["rows"],
        json!([{"label": "pc1", "value": 150}, {"label": "pc2", "value": 7}])
    );
    let hour = (base.hour() + 1) % 24;
    assert_eq!(
        widget(&fleet, "By hour"),
        &json!({"dashboard": "usage", "title": "By hour", "scope": "fleet", "pin_dashboard": false,
                "render": "timeline", "metric": "ratio",
                "buckets": [{"hour": hour, "total": 4, "active": 2}]})
    );
    let broken = widget(&fleet, "Broken render");
    assert_eq!(broken["render"], "error", "{broken}");
    assert!(
        broken["error"].as_str().unwrap().contains("'missing'"),
        "{broken}"
    );

    // The dashboard: pinned only.
    let (_, pinned) = send(&b, Method::GET, "/api/analytics?pinned=true", None).await;
    assert_eq!(titles(&pinned), ["Events per PC"]);
    assert_eq!(
        (
            pinned[0]["columns"].clone(),
            pinned[0]["rows"].clone(),
            pinned[0]["width"].clone()
        ),
        (
            json!(["pc_id", "Events"]),
            json!([["pc1", 6], ["pc2", 2]]),
            json!("full")
        )
    );
    assert_eq!(pinned[0]["dashboard"], "Dashboard");

    // A PC.
    let (_, pc) = send(
        &b,
        Method::GET,
        &format!("/api/analytics?{window}&pc_id=pc1"),
        None,
    )
    .await;
    assert_eq!(
        titles(&pc),
        ["Operating timeline", "Samples here", "My events"]
    );
    assert_eq!(widget(&pc, "Samples here")["value"], 3);
    assert_eq!(widget(&pc, "My events")["value"], 6);
    let timeline = widget(&pc, "Operating timeline");
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["boot", "logon", "agent_offline"], "{timeline}");
    assert_eq!(timeline["events"][0]["boot_time"], 1718600000);
    let (_, pc2) = send(
        &b,
        Method::GET,
        &format!("/api/analytics?{window}&pc_id=pc2"),
        None,
    )
    .await;
    assert_eq!(widget(&pc2, "My events")["value"], 2);

    // Bad parameters name themselves.
    for (q, needle) in [
        (
            format!(
                "from={}&to={}",
                "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"
            ),
            "from",
        ),
        ("tz_offset_minutes=east".to_string(), "tz_offset_minutes"),
        ("pinned=maybe".to_string(), "pinned"),
        ("pc_id=a%20b".to_string(), "pc_id"),
    ] {
        let (status, err) = send(&b, Method::GET, &format!("/api/analytics?{q}"), None).await;
        assert_eq!(status, 400, "{q}: {err}");
        assert!(error_of(&err).contains(needle), "{needle}: {err}");
    }

    // Gone: its widgets with it.
    assert_eq!(
        send(&b, Method::DELETE, "/api/views/usage", None).await.0,
        204
    );
    assert_eq!(
        send(&b, Method::DELETE, "/api/views/usage", None).await.0,
        404
    );
    let (_, fleet) = send(&b, Method::GET, &format!("/api/analytics?{window}"), None).await;
    assert_eq!(titles(&fleet), ["Logons"]);
    let (status, _) = send(
        &b,
        Method::POST,
        "/api/views",
        json_body(json!({"id": "x"})),
    )
    .await;
    assert_eq!(status, 400);
}
