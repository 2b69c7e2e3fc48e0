//! Perf ingest through the broker: today's core subscription (what the
//! reference backend does, and ours with `[capture] enabled = false`)
//! against the capture stream, live (published while consuming) and
//! catching up (published while no backend ran, drained at start). One
//! `nats-server -js` per run on a free port; the rows land in a fresh
//! table each time through the projectors the backend runs.
//!
//! Needs `nats-server` on PATH (scripts/bench.sh and scripts/test.sh put
//! it there); without it the section is skipped unless
//! `BENCH_NATS=required`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use kanade_backend::ingest::capture::{self, Capture, CaptureConfig};
use kanade_backend::ingest::{self, HostPerfProjection, Projection};
use kanade_storage::{RelationalStore, TimeSeriesConfig, TimeSeriesTable, HOST_PERF};
use tokio::sync::watch;

struct Broker {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broker() -> Option<Broker> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Broker {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    })
}

/// How one way of taking the samples did.
struct Taken {
    stored: u64,
    elapsed: Duration,
}

/// `messages` host samples of `pcs` PCs, one a minute each, ending now.
fn samples(messages: usize, pcs: usize) -> Vec<(String, Vec<u8>)> {
    let end: DateTime<Utc> = Utc::now();
    let per_pc = messages.div_ceil(pcs) as i64;
    (0..messages)
        .map(|i| {
            let pc = format!("pc-{:05}", i % pcs);
            let at = end - chrono::Duration::minutes(per_pc - (i / pcs) as i64);
            let body = serde_json::json!({
                "pc_id": pc, "at": at, "cpu_pct": (i % 100) as f64, "cpu_count": 8,
                "mem_used_bytes": 4_000_000_000u64 + i as u64, "mem_total_bytes": 16_000_000_000u64,
                "disk_read_bytes_per_sec": 1000.0, "disk_written_bytes_per_sec": 2000.0,
                "net_rx_bytes_per_sec": 300.0, "net_tx_bytes_per_sec": 400.0,
            });
            (
                format!("host_perf.{pc}"),
                serde_json::to_vec(&body).unwrap(),
            )
        })
        .collect()
}

async fn publish(client: &async_nats::Client, msgs: &[(String, Vec<u8>)]) {
    for (subject, body) in msgs {
        client
            .publish(subject.clone(), body.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
}

/// Waits until `want` rows are stored or nothing moved for 5 s.
async fn stored(base: u64, want: u64, since: Instant) -> Taken {
    let inserted = kanade_backend::metrics::get().ingest(HostPerfProjection::SUBJECT, "inserted");
    let (mut last, mut moved) = (0, Instant::now());
    loop {
        let now = inserted.get() - base;
        if now >= want {
            return Taken {
                stored: now,
                elapsed: since.elapsed(),
            };
        }
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > Duration::from_secs(5) {
            return Taken {
                stored: now,
                elapsed: moved.duration_since(since),
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn table(dir: &Path) -> (HostPerfProjection, RelationalStore) {
    std::fs::create_dir_all(dir).unwrap();
    let t = TimeSeriesTable::open(&HOST_PERF, dir, TimeSeriesConfig::default()).unwrap();
    (
        HostPerfProjection(Arc::new(t)),
        RelationalStore::open(dir).unwrap(),
    )
}

fn inserted_now() -> u64 {
    kanade_backend::metrics::get()
        .ingest(HostPerfProjection::SUBJECT, "inserted")
        .get()
}

async fn core(dir: &Path, msgs: &[(String, Vec<u8>)]) -> Taken {
    let broker = broker().unwrap();
    let client = async_nats::connect(&broker.url).await.unwrap();
    let (projection, _) = table(dir);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(ingest::run(client.clone(), Arc::new(projection), stopped));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = inserted_now();
    let t = Instant::now();
    publish(&client, msgs).await;
    let taken = stored(base, msgs.len() as u64, t).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    taken
}

/// Through the capture stream; `catch_up`: everything is published
/// before the consumer starts (a backend coming back).
async fn captured(dir: &Path, msgs: &[(String, Vec<u8>)], catch_up: bool) -> Taken {
    let broker = broker().unwrap();
    let client = async_nats::connect(&broker.url).await.unwrap();
    let js = jetstream::new(client.clone());
    let config = CaptureConfig::default();
    capture::ensure_stream(&js, &config).await.unwrap();
    let (projection, store) = table(dir);
    let (stop, stopped) = watch::channel(false);
    let consumer = Capture {
        projection: Arc::new(projection),
        stream: config.stream(),
    };
    let start = |consumer| {
        tokio::spawn(ingest::stream::run(
            js.clone(),
            store.clone(),
            Arc::new(consumer),
            stopped.clone(),
        ))
    };
    let base = inserted_now();
    let (task, t) = if catch_up {
        publish(&client, msgs).await;
        let mut s = js.get_stream(capture::STREAM).await.unwrap();
        while s.info().await.unwrap().state.messages < msgs.len() as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = Instant::now();
        (start(consumer), t)
    } else {
        let task = start(consumer);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        publish(&client, msgs).await;
        (task, t)
    };
    let taken = stored(base, msgs.len() as u64, t).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    taken
}

/// Prints the three ways side by side; the capture stream must store
/// every sample (the core subscription may drop under load: printed).
pub fn run(messages: usize, pcs: usize, dir: &Path) {
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        let required = std::env::var("BENCH_NATS").is_ok_and(|v| v == "required");
        assert!(
            !required,
            "BENCH_NATS=required but nats-server is not on PATH"
        );
        eprintln!("capture: nats-server not on PATH; section skipped");
        return;
    }
    let msgs = samples(messages, pcs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let core = rt.block_on(core(&dir.join("capture-core"), &msgs));
    let live = rt.block_on(captured(&dir.join("capture-live"), &msgs, false));
    let catch_up = rt.block_on(captured(&dir.join("capture-catch-up"), &msgs, true));
    let n = messages as u64;
    assert_eq!(
        live.stored, n,
        "the capture stream stored every live sample"
    );
    assert_eq!(
        catch_up.stored, n,
        "the capture stream stored every sample sent while down"
    );
    let rate = |t: &Taken| t.stored as f64 / t.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "\nperf ingest through the broker, {messages} host samples of {pcs} PCs (published as fast as the client can):"
    );
    eprintln!(
        "  core subscription (today)       {:>9.0} rows/s, stored {}/{n} ({} lost)",
        rate(&core),
        core.stored,
        n - core.stored.min(n)
    );
    eprintln!(
        "  capture stream, live            {:>9.0} rows/s, stored {}/{n}  ({:.2}× core)",
        rate(&live),
        live.stored,
        rate(&live) / rate(&core)
    );
    eprintln!(
        "  capture stream, catching up     {:>9.0} rows/s, stored {}/{n}  ({:.2}× core)",
        rate(&catch_up),
        catch_up.stored,
        rate(&catch_up) / rate(&core)
    );
}
