//! Collected bundles as an agent leaves them in the `collections` object
//! store: listed with the job's `collect:` name, downloaded whole or by
//! range, deleted by operators only (audited).

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{eventually, yaml, Backend, Nats, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_listed_named_streamed_and_deleted_by_operators() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let js = async_nats::jetstream::new(nats.client().await);
    let store = eventually("collections store", || async {
        js.get_object_store("collections").await.ok()
    })
    .await;
    let job = "id: shots\nversion: '1'\nexecute:\n  shell: sh\n  script: echo\n  timeout: 1m\ncollect:\n  name: Screenshots\n  description: What the user saw\n";
    let (status, body) = crate::common::send(&b, Method::POST, "/api/jobs", TOKEN, yaml(job)).await;
    assert_eq!(status, 200, "{body}");
    // Bigger than one object-store chunk, so a range crosses chunks.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for (key, bytes) in [
        ("PC1/shots/20260101__20260625T220000.123Z.zip", big.clone()),
        ("PC2/shots/20260626T010000.000Z.zip", b"PK small".to_vec()),
        ("PC2/gone-job/20260624T000000.000Z.zip", b"PK old".to_vec()),
        ("stray-object", b"x".to_vec()),
    ] {
        store.put(key, &mut bytes.as_slice()).await.unwrap();
    }

    let list = eventually("the job is known", || async {
        let (_, list) = b.get("/api/collect/bundles").await;
        (list[1]["name"] == "Screenshots").then_some(list)
    })
    .await;
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "PC2/shots/20260626T010000.000Z.zip",
            "PC1/shots/20260101__20260625T220000.123Z.zip",
            "PC2/gone-job/20260624T000000.000Z.zip"
        ],
        "newest first; a key not shaped as a bundle is not listed"
    );
    let first = &list[1];
    assert_eq!(
        (
            &first["pc_id"],
            &first["job_id"],
            &first["label"],
            &first["collected_at"],
            &first["size"]
        ),
        (
            &json!("PC1"),
            &json!("shots"),
            &json!("20260101"),
            &json!("20260625T220000.123Z"),
            &json!(300_000)
        )
    );
    assert_eq!(first["description"], "What the user saw");
    assert!(
        first["digest"].as_str().unwrap().starts_with("SHA-256="),
        "{first}"
    );
    assert_eq!(list[2]["name"], Value::Null);
    assert_eq!(list[0]["label"], Value::Null);

    let http = reqwest::Client::new();
    let url = |k: &str| format!("{}/api/collect/bundles/{k}", b.base);
    let whole = http
        .get(url(keys[1]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "application/zip");
    assert_eq!(
        whole.headers()["content-disposition"],
        "attachment; filename=\"PC1-shots-20260101__20260625T220000.123Z.zip\""
    );
    let etag = whole.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(whole.bytes().await.unwrap().as_ref(), big.as_slice());
    let part = http
        .get(url(keys[1]))
        .bearer_auth(TOKEN)
        .header("range", "bytes=131000-131099")
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &big[131_000..131_100]);
    let stale = http
        .get(url(keys[1]))
        .bearer_auth(TOKEN)
        .header("if-match", "\"SHA-256=nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    assert_eq!(b.get("/api/collect/bundles/PC9/x/y.zip").await.0, 404);

    // Viewers read but never delete; operators delete once.
    let viewer = crate::common::viewer_token(&b).await;
    assert_eq!(
        b.get_with(&format!("/api/collect/bundles/{}", keys[0]), Some(&viewer))
            .await
            .0,
        200
    );
    let (status, _, _) = b
        .call(
            Method::DELETE,
            &format!("/api/collect/bundles/{}", keys[0]),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = b
        .call(
            Method::DELETE,
            &format!("/api/collect/bundles/{}", keys[0]),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _, body) = b
        .call(
            Method::DELETE,
            &format!("/api/collect/bundles/{}", keys[0]),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, list) = b.get("/api/collect/bundles").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    eventually("the deletion is audited", || async {
        let (_, audit) = b.get("/api/audit?action=collect_bundle_delete").await;
        let rows = audit
            .as_array()
            .or_else(|| audit["rows"].as_array())?
            .clone();
        (rows.len() == 1).then_some(())
    })
    .await;
}
