//! `kanade-backend simulate`: a fleet of fake agents on a real broker, for
//! demos and load tests. Each tick every PC publishes a heartbeat and a
//! host_perf sample; PCs under investigation also publish a process_perf
//! tick. At speed 1 a tick is the agents' 60 s cadence; `--speed 60`
//! makes it one second. Samples carry the wall-clock time they are sent;
//! `--backfill 2h` first publishes that much history at the 60 s cadence,
//! so a demo (or a browser test) opens on charts with lines in them.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use kanade_shared::wire::{Heartbeat, HostPerf, ProcessPerf, ProcessSnapshot};

/// What to simulate.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Number of PCs.
    #[arg(long)]
    pub pcs: usize,
    /// How many of them publish process samples (investigation mode).
    #[arg(long, default_value_t = 0)]
    pub investigate: usize,
    /// Speed-up over the agents' 60 s cadence.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Stop after this many ticks (default: run until interrupted).
    #[arg(long)]
    pub ticks: Option<u64>,
    /// Publish this much history (e.g. `2h`, `1d`) before going live.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub backfill: Option<Duration>,
}

const PROCESS_NAMES: [&str; 10] = [
    "chrome.exe",
    "MsMpEng.exe",
    "Teams.exe",
    "explorer.exe",
    "svchost.exe",
    "outlook.exe",
    "code.exe",
    "SearchIndexer.exe",
    "OneDrive.exe",
    "System",
];

/// CPU as kanade-agent reports it: an f32 percentage widened to f64.
fn agent_cpu(pct: f64) -> f64 {
    f64::from(pct as f32)
}

/// A rate as kanade-agent computes it: whole bytes counted over a tick
/// divided by the tick's measured length (a few ms off the nominal 60 s),
/// so a full-mantissa f64, never a round number.
fn agent_rate(pc: usize, t: u64, salt: u64, peak: f64) -> f64 {
    let elapsed = 60.0 + (wave(pc, t, salt + 100) - 0.5) * 0.01;
    (wave(pc, t, salt) * peak * 60.0).floor() / elapsed
}

/// A smooth, deterministic wobble in [0, 1) for PC `pc` at tick `t`.
fn wave(pc: usize, t: u64, salt: u64) -> f64 {
    let phase = (pc as f64 * 0.7 + salt as f64 * 1.3) % std::f64::consts::TAU;
    let slow = ((t as f64) / 15.0 + phase).sin();
    let fast = ((t as f64) * 1.7 + phase * 3.0).sin();
    (0.5 + 0.35 * slow + 0.15 * fast).clamp(0.0, 0.999)
}

/// Publishes the fleet until `ticks` ran out (or forever).
pub async fn run(nats_url: &str, args: &SimulateArgs) -> Result<()> {
    anyhow::ensure!(args.pcs > 0, "--pcs must be at least 1");
    anyhow::ensure!(args.speed > 0.0, "--speed must be positive");
    anyhow::ensure!(
        args.investigate <= args.pcs,
        "--investigate cannot exceed --pcs"
    );
    let client =
        kanade_shared::nats_client::connect(kanade_shared::nats_client::NatsRole::Agent, nats_url)
            .await?;
    let mut tick = match args.backfill {
        Some(span) => backfill(&client, args, span).await?,
        None => 0,
    };
    let live_ticks = args.ticks.map(|n| n + tick);
    let period = Duration::from_secs_f64(60.0 / args.speed);
    let mut interval = tokio::time::interval(period);
    eprintln!(
        "simulating {} PCs ({} under investigation) every {:.2?} on {nats_url}",
        args.pcs, args.investigate, period
    );
    while live_ticks.is_none_or(|n| tick < n) {
        interval.tick().await;
        publish_heartbeats(&client, args, tick).await?;
        publish_tick(&client, args, tick, Utc::now()).await?;
        client.flush().await.context("flush to the broker")?;
        tick += 1;
    }
    eprintln!("done: {tick} ticks");
    Ok(())
}

/// Publishes `span` of history ending one cadence before now; returns
/// the number of ticks published, where the live ticks carry on.
async fn backfill(client: &async_nats::Client, args: &SimulateArgs, span: Duration) -> Result<u64> {
    let ticks = span.as_secs() / 60;
    let start = Utc::now() - chrono::Duration::seconds(60 * ticks as i64);
    for tick in 0..ticks {
        let at = start + chrono::Duration::seconds(60 * tick as i64);
        publish_tick(client, args, tick, at).await?;
        client.flush().await.context("flush to the broker")?;
    }
    eprintln!("backfilled {ticks} ticks from {start}");
    Ok(ticks)
}

/// Every PC says it is alive.
async fn publish_heartbeats(
    client: &async_nats::Client,
    args: &SimulateArgs,
    tick: u64,
) -> Result<()> {
    let at = Utc::now();
    for pc in 0..args.pcs {
        let pc_id = format!("SIM-{pc:05}");
        let heartbeat: Heartbeat = serde_json::from_value(serde_json::json!({
            "pc_id": pc_id, "at": at, "agent_version": "0.43.56",
            "hostname": format!("sim-host-{pc:05}"), "os_family": "windows",
            "agent_cpu_pct": wave(pc, tick, 9) * 2.0, "agent_rss_bytes": 40_000_000,
        }))?;
        publish(client, format!("heartbeat.{pc_id}"), &heartbeat).await?;
    }
    Ok(())
}

/// One host sample per PC, and a process tick per investigated PC, at `at`.
async fn publish_tick(
    client: &async_nats::Client,
    args: &SimulateArgs,
    tick: u64,
    at: DateTime<Utc>,
) -> Result<()> {
    for pc in 0..args.pcs {
        let pc_id = format!("SIM-{pc:05}");
        let mem_total = 16_i64 << 30;
        let sample = HostPerf {
            pc_id: pc_id.clone(),
            at,
            cpu_pct: Some(agent_cpu(wave(pc, tick, 1) * 100.0)),
            cpu_count: Some(8),
            mem_used_bytes: Some((wave(pc, tick, 2) * mem_total as f64) as i64),
            mem_total_bytes: Some(mem_total),
            swap_used_bytes: Some(0),
            swap_total_bytes: Some(4 << 30),
            disk_read_bytes_per_sec: Some(agent_rate(pc, tick, 3, 5e6)),
            disk_written_bytes_per_sec: Some(agent_rate(pc, tick, 4, 2e6)),
            net_rx_bytes_per_sec: Some(agent_rate(pc, tick, 5, 1e6)),
            net_tx_bytes_per_sec: Some(agent_rate(pc, tick, 6, 3e5)),
        };
        publish(client, format!("host_perf.{pc_id}"), &sample).await?;
        if pc < args.investigate {
            let processes = PROCESS_NAMES
                .iter()
                .enumerate()
                .map(|(i, name)| ProcessSnapshot {
                    pid: 1000 + i as u32,
                    name: (*name).to_string(),
                    cpu_pct: agent_cpu(wave(pc, tick, 10 + i as u64) * 100.0 / (i as f64 + 1.0)),
                    rss_bytes: (wave(pc, tick, 20 + i as u64) * 8e8) as i64,
                    disk_read_bytes_per_sec: Some(agent_rate(pc, tick, 30 + i as u64, 1e5)),
                    disk_written_bytes_per_sec: None,
                })
                .collect();
            let tick_msg = ProcessPerf {
                pc_id: pc_id.clone(),
                at,
                processes,
            };
            publish(client, format!("process_perf.{pc_id}"), &tick_msg).await?;
        }
    }
    Ok(())
}

async fn publish(
    client: &async_nats::Client,
    subject: String,
    value: &impl serde::Serialize,
) -> Result<()> {
    let payload = serde_json::to_vec(value)?;
    client
        .publish(subject, payload.into())
        .await
        .context("publish to the broker")
}
