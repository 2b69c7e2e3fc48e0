//! `kanade-backend simulate` against a test broker: its fleet shows up
//! through the API of a backend on the same broker.

use std::process::Command;

use crate::common::{eventually, Backend, Nats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_fleet_is_visible_through_the_api() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let config = dir.path().join("sim.toml");
    std::fs::write(&config, format!("[nats]\nurl = \"{}\"\n", nats.url)).unwrap();
    // Publish until the backend has subscribed and shows the whole fleet.
    eventually("simulated agents", || async {
        let status = Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
            .args([
                "simulate",
                "--pcs",
                "4",
                "--investigate",
                "2",
                "--speed",
                "600",
                "--ticks",
                "3",
                "--config",
            ])
            .arg(&config)
            .status()
            .unwrap();
        assert!(status.success());
        let (_, agents) = b.get("/api/agents").await;
        (agents.as_array()?.len() == 4).then_some(())
    })
    .await;
    let (_, agent) = b.get("/api/agents/SIM-00001").await;
    assert_eq!(agent["hostname"], "sim-host-00001");
    let top = eventually("top PCs", || async {
        let (_, top) = b.get("/api/perf/top?limit=10").await;
        (top["rows"].as_array()?.len() == 4).then_some(top)
    })
    .await;
    assert!(top["rows"][0]["hostname"]
        .as_str()
        .unwrap()
        .starts_with("sim-host-"));
    let (_, active) = b.get("/api/perf/active-investigations").await;
    assert_eq!(active["rows"].as_array().unwrap().len(), 2);
    let (_, procs) = b.get("/api/agents/SIM-00000/processes").await;
    assert_eq!(procs["processes"].as_array().unwrap().len(), 10);
}
