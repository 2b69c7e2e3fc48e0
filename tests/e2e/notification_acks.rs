//! EVENTS `events.notifications.acked.>` → redb notification_acks. The
//! table has no endpoint of its own yet, so the test waits until the
//! durable consumer's ack floor passes the messages (acks follow commits),
//! stops the backend and reads the real redb file.

use crate::common::{eventually, Backend, Nats};
use chrono::Utc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_are_one_row_per_recipient() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let js = async_nats::jetstream::new(nats.client().await);
    let t = Utc::now();
    let ack = |n: &str, pc: &str, at: chrono::DateTime<Utc>| {
        serde_json::to_vec(&serde_json::json!({"notification_id": n, "pc_id": pc, "user_sid": "S-1-5-21", "acked_at": at})).unwrap()
    };
    let mut last_seq = 0;
    for (subject, payload) in [
        (
            "events.notifications.acked.pc1.S-1-5-21.n1",
            ack("n1", "pc1", t),
        ),
        (
            "events.notifications.acked.pc2.S-1-5-21.n1",
            ack("n1", "pc2", t),
        ),
        (
            "events.notifications.acked.pc1.S-1-5-21.n1",
            ack("n1", "pc1", t + chrono::Duration::minutes(5)),
        ),
        (
            "events.notifications.acked.pc1.S-1-5-21.n2",
            b"garbage".to_vec(),
        ),
    ] {
        last_seq = eventually("EVENTS accepts", || {
            let (js, payload) = (js.clone(), payload.clone());
            async move {
                js.publish(subject, payload.into())
                    .await
                    .ok()?
                    .await
                    .ok()
                    .map(|a| a.sequence)
            }
        })
        .await;
    }
    eventually("consumer acked everything", || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("EVENTS").await.ok()?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer("columnar-notification-acks-projector-v2")
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.ack_floor.stream_sequence >= last_seq).then_some(())
        }
    })
    .await;
    assert!(b.sigterm().success());
    let store = kanade_storage::RelationalStore::open(&data).unwrap();
    let acks = store.notification_acks("n1").unwrap();
    let pcs: Vec<&str> = acks.iter().map(|a| a.pc_id.as_str()).collect();
    assert_eq!(pcs, vec!["pc1", "pc2"]);
    assert_eq!(
        acks[0].acked_at,
        t + chrono::Duration::minutes(5),
        "as in kanade 0.101, the last acknowledgement in stream order wins"
    );
    assert_eq!(acks[1].acked_at, t);
    assert!(
        store.notification_acks("n2").unwrap().is_empty(),
        "garbage skipped"
    );
}
