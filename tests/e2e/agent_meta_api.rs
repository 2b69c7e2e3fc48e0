//! Agent metadata (`kanade meta`) through the router, in-process, with
//! the 0.101 CLI's requests: get, set and remove one key (compare-and-set:
//! concurrent writers of different keys all land), clear, the bulk read
//! and the key list, against the `agent_meta` bucket a 0.101 backend or
//! tool reads.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::TOKEN;
use crate::router::App;

const PC: &str = "/api/agents/PC-01/meta";

#[tokio::test]
async fn metadata_is_set_removed_cleared_and_read_in_bulk_as_the_cli_does() {
    let app = App::start().await;
    assert_eq!(app.get(PC, Some(TOKEN)).await.body, json!({"entries": []}));
    let set = |pc: &'static str, key: &'static str, value: &'static str| {
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                &format!("/api/agents/{pc}/meta/key"),
                Some(TOKEN),
                Some(json!({"key": key, "value": value})),
            )
            .await
        }
    };
    let a = set("PC-01", " owner ", " ann ").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"meta": {"entries": [{"key": "owner", "value": "ann"}]}, "changed": true})
    );
    assert_eq!(set("PC-01", "owner", "ann").await.body["changed"], false);
    set("PC-01", "site", "Osaka").await;
    set("PC-02", "site", "Kyoto").await;
    set("PC-03", "dept", "").await;

    // Removing a key the PC lacks (the CLI encodes it) changes nothing.
    let rm = app
        .call(
            Method::DELETE,
            &format!("{PC}/key?key=a%2Fb%3Fc+d"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (rm.status, &rm.body["changed"]),
        (StatusCode::OK, &json!(false))
    );
    let rm = app
        .call(
            Method::DELETE,
            &format!("{PC}/key?key=owner"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(
        rm.body,
        json!({"meta": {"entries": [{"key": "site", "value": "Osaka"}]}, "changed": true})
    );

    let bulk = app
        .get(
            "/api/agents/meta?pcs=PC-01,%20PC-02,,PC-01,PC-09",
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        bulk.body,
        json!({"PC-01": [{"key": "site", "value": "Osaka"}],
               "PC-02": [{"key": "site", "value": "Kyoto"}]})
    );
    assert_eq!(
        app.get("/api/agents/meta", Some(TOKEN)).await.body,
        json!({})
    );
    assert_eq!(
        app.get("/api/agents/meta-keys", Some(TOKEN)).await.body,
        json!(["dept", "site"])
    );

    // `kanade meta clear`: the whole-set PUT with no entries.
    let cleared = app
        .call(Method::PUT, PC, Some(TOKEN), Some(json!({"entries": []})))
        .await;
    assert_eq!(
        (cleared.status, cleared.body),
        (StatusCode::OK, json!({"entries": []}))
    );
    // A whole-set PUT is normalised as the wire type says: trimmed,
    // blank keys dropped, the last of a repeated key wins.
    let put = app
        .call(
            Method::PUT,
            PC,
            Some(TOKEN),
            Some(
                json!({"entries": [{"key": "a", "value": "1"}, {"key": " ", "value": "x"},
                                    {"key": "a ", "value": "2"}]}),
            ),
        )
        .await;
    assert_eq!(put.body, json!({"entries": [{"key": "a", "value": "2"}]}));

    // The bucket holds what a 0.101 reader expects.
    let js = async_nats::jetstream::new(app.nats.client().await);
    let kv = js.get_key_value("agent_meta").await.unwrap();
    let stored: Value = serde_json::from_slice(&kv.get("PC-02").await.unwrap().unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({"entries": [{"key": "site", "value": "Kyoto"}]})
    );
}

#[tokio::test]
async fn concurrent_writers_of_different_keys_all_land() {
    let app = App::start().await;
    let writes = (0..16).map(|i| {
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                &format!("{PC}/key"),
                Some(TOKEN),
                Some(json!({"key": format!("k{i:02}"), "value": i.to_string()})),
            )
            .await
        }
    });
    for a in futures::future::join_all(writes).await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let keys: Vec<String> = app.get(PC, Some(TOKEN)).await.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..16).map(|i| format!("k{i:02}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_metadata_requests_are_400s_naming_the_input_and_viewers_only_read() {
    let app = App::start().await;
    let viewer = app.login_as("vic", "viewer").await;
    for (method, uri, body, needle) in [
        (Method::GET, "/api/agents/bad%20id/meta", None, "pc_id"),
        (
            Method::PUT,
            "/api/agents/..x/meta/key",
            Some(json!({"key": "a", "value": "b"})),
            "pc_id",
        ),
        (
            Method::PUT,
            "/api/agents/PC-01/meta/key",
            Some(json!({"key": "  ", "value": "b"})),
            "key",
        ),
        (
            Method::PUT,
            "/api/agents/PC-01/meta/key",
            Some(json!({"key": "a"})),
            "value",
        ),
        (
            Method::PUT,
            "/api/agents/PC-01/meta/key",
            Some(json!({"key": "k".repeat(129), "value": "b"})),
            "key",
        ),
        (
            Method::PUT,
            "/api/agents/PC-01/meta/key",
            Some(json!({"key": "note", "value": "v".repeat(4097)})),
            "value",
        ),
        (
            Method::PUT,
            "/api/agents/PC-01/meta",
            Some(
                json!({"entries": (0..257).map(|i| json!({"key": format!("k{i}"), "value": ""})).collect::<Vec<_>>()}),
            ),
            "entries",
        ),
        (
            Method::PUT,
            "/api/agents/PC-01/meta",
            Some(json!({"entries": 3})),
            "entries",
        ),
        (Method::DELETE, "/api/agents/PC-01/meta/key", None, "key"),
        (
            Method::DELETE,
            "/api/agents/PC-01/meta/key?key=%20",
            None,
            "key",
        ),
    ] {
        let a = app
            .call(method.clone(), uri, Some(TOKEN), body.clone())
            .await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{method} {uri}: {}",
            a.body
        );
        assert!(a.error().contains(needle), "{method} {uri}: {}", a.error());
    }
    let pcs: Vec<String> = (0..1001).map(|i| format!("PC{i}")).collect();
    let a = app
        .get(
            &format!("/api/agents/meta?pcs={}", pcs.join(",")),
            Some(TOKEN),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("too many pcs"), "{}", a.error());
    // Nothing above was stored.
    assert_eq!(app.get(PC, Some(TOKEN)).await.body, json!({"entries": []}));

    assert_eq!(app.get(PC, Some(&viewer)).await.status, StatusCode::OK);
    let a = app
        .call(
            Method::PUT,
            &format!("{PC}/key"),
            Some(&viewer),
            Some(json!({"key": "a", "value": "b"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
}
