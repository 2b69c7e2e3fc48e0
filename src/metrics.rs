//! What the backend counts about itself, served as `GET /metrics`
//! (OpenMetrics text, with `prometheus-client`): ingest per source and
//! outcome, HTTP requests per route and status with latency, the perf
//! tables' head, write-ahead log and files, persist / compaction /
//! retention passes, stream consumers' position and lag, the broker
//! connection and scheduler fires.
//!
//! One process-wide set: counters are bumped where things happen; the
//! sizes and positions that are cheaper to read than to track are set
//! when `/metrics` is scraped.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// Subject filter or stream, e.g. `host_perf.>` or `RESULTS`.
    pub source: &'static str,
    /// received | inserted | duplicate | malformed | rejected |
    /// commit_failure. `received`, `malformed` and `rejected` count
    /// messages; `inserted` and `duplicate` count rows (a process tick is
    /// one row per process).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route's template (`/api/agents/:pc_id/perf`), `fallback` when
    /// no route matched.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    pub table: &'static str,
    /// persist | compaction | retention
    pub pass: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub stream: &'static str,
    pub consumer: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn pass_buckets() -> Histogram {
    // 5 ms … ~10 min.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub ingest: Family<IngestLabels, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_seconds: Histograms<RouteLabels>,
    pub passes: Family<PassLabels, Counter>,
    pub pass_seconds: Histograms<PassLabels>,
    pub pass_rows: Family<PassLabels, Counter>,
    pub partitions_dropped: Family<TableLabels, Counter>,
    pub head_rows: Family<TableLabels, Gauge>,
    pub head_bytes: Family<TableLabels, Gauge>,
    pub wal_segments: Family<TableLabels, Gauge>,
    pub wal_bytes: Family<TableLabels, Gauge>,
    pub partitions: Family<TableLabels, Gauge>,
    pub files: Family<TableLabels, Gauge>,
    pub file_bytes: Family<TableLabels, Gauge>,
    pub consumer_position: Family<ConsumerLabels, Gauge>,
    pub consumer_lag: Family<ConsumerLabels, Gauge>,
    pub nats_connected: Gauge,
    pub nats_reconnects: Counter,
    pub scheduler_fires: Counter,
    pub scheduler_fire_failures: Counter,
    /// Panics of supervised background jobs (each restarted).
    pub job_panics: Counter,
    /// 1 when `/readyz` found nothing wrong at the last check or scrape.
    pub ready: Gauge,
    /// The query engine's counts since start, by kind (see
    /// [`Metrics::queries`]).
    pub query_engine: Family<QueryLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// scans | files_in_snapshots | files_scanned | row_groups_in_files |
    /// row_groups_scanned | footer_loads | fleet_from_memory
    pub kind: &'static str,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("kanade"),
            ingest: Family::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_buckets),
            passes: Family::default(),
            pass_seconds: Family::new_with_constructor(pass_buckets),
            pass_rows: Family::default(),
            partitions_dropped: Family::default(),
            head_rows: Family::default(),
            head_bytes: Family::default(),
            wal_segments: Family::default(),
            wal_bytes: Family::default(),
            partitions: Family::default(),
            files: Family::default(),
            file_bytes: Family::default(),
            consumer_position: Family::default(),
            consumer_lag: Family::default(),
            nats_connected: Gauge::default(),
            nats_reconnects: Counter::default(),
            scheduler_fires: Counter::default(),
            scheduler_fire_failures: Counter::default(),
            job_panics: Counter::default(),
            ready: Gauge::default(),
            query_engine: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "ingest_messages",
            "Messages (received, malformed, rejected) and rows (inserted, duplicate) per source",
            m.ingest.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests per route and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency per route",
            m.http_seconds.clone(),
        );
        r.register(
            "storage_passes",
            "Persist, compaction and retention passes that did work",
            m.passes.clone(),
        );
        r.register(
            "storage_pass_duration_seconds",
            "Duration of the passes that did work",
            m.pass_seconds.clone(),
        );
        r.register(
            "storage_pass_rows",
            "Rows written by persists and compactions",
            m.pass_rows.clone(),
        );
        r.register(
            "storage_partitions_dropped",
            "Partitions removed by retention",
            m.partitions_dropped.clone(),
        );
        r.register(
            "storage_head_rows",
            "Rows in the in-memory head",
            m.head_rows.clone(),
        );
        r.register(
            "storage_head_bytes",
            "Arrow memory of the head",
            m.head_bytes.clone(),
        );
        r.register(
            "storage_wal_segments",
            "Write-ahead log segments on disk",
            m.wal_segments.clone(),
        );
        r.register(
            "storage_wal_bytes",
            "Write-ahead log bytes on disk",
            m.wal_bytes.clone(),
        );
        r.register(
            "storage_partitions",
            "Date partitions on disk",
            m.partitions.clone(),
        );
        r.register("storage_files", "Parquet files on disk", m.files.clone());
        r.register(
            "storage_file_bytes",
            "Parquet bytes on disk",
            m.file_bytes.clone(),
        );
        r.register(
            "stream_consumer_position",
            "Last stream sequence applied by a projection",
            m.consumer_position.clone(),
        );
        r.register(
            "stream_consumer_lag",
            "Messages the broker still holds for a projection (pending and unacked)",
            m.consumer_lag.clone(),
        );
        r.register(
            "nats_connected",
            "1 while the broker connection is up",
            m.nats_connected.clone(),
        );
        r.register(
            "nats_reconnects",
            "Broker connections re-established",
            m.nats_reconnects.clone(),
        );
        r.register(
            "scheduler_fires",
            "Schedule fires this backend made",
            m.scheduler_fires.clone(),
        );
        r.register(
            "scheduler_fire_failures",
            "Schedule fires whose exec failed",
            m.scheduler_fire_failures.clone(),
        );
        r.register(
            "background_job_panics",
            "Panics of supervised background jobs; each was restarted",
            m.job_panics.clone(),
        );
        r.register(
            "ready",
            "1 when the backend was ready at the last /readyz check or scrape (see /readyz for the reasons)",
            m.ready.clone(),
        );
        r.register(
            "query_engine",
            "Since start: SQL table scans, the files and row groups in their snapshots and those scanned, file footers parsed, fleet series answered from the in-memory windows",
            m.query_engine.clone(),
        );
        m
    }

    /// Sets the perf queries' counts.
    pub fn queries(&self, q: &kanade_queries::PerfQueries) {
        let p = q.provider_stats();
        for (kind, v) in [
            ("scans", p.scans),
            ("files_in_snapshots", p.files_in_snapshots),
            ("files_scanned", p.files_scanned),
            ("row_groups_in_files", p.row_groups_in_files),
            ("row_groups_scanned", p.row_groups_scanned),
            ("footer_loads", q.file_metadata_loads()),
            ("fleet_from_memory", q.fleet_answers_from_memory()),
        ] {
            self.query_engine
                .get_or_create(&QueryLabels { kind })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// The counter of one ingest source and outcome.
    pub fn ingest(&self, source: &'static str, outcome: &'static str) -> Counter {
        self.ingest
            .get_or_create(&IngestLabels { source, outcome })
            .clone()
    }

    /// Records a storage pass that did work.
    pub fn pass(&self, table: &'static str, pass: &'static str, seconds: f64, rows: Option<u64>) {
        let labels = PassLabels { table, pass };
        self.passes.get_or_create(&labels).inc();
        self.pass_seconds.get_or_create(&labels).observe(seconds);
        if let Some(rows) = rows {
            self.pass_rows.get_or_create(&labels).inc_by(rows);
        }
    }

    /// Sets a table's sizes.
    pub fn table(&self, table: &'static str, s: &kanade_storage::TableStats) {
        let l = TableLabels { table };
        let set = |f: &Family<TableLabels, Gauge>, v: u64| {
            f.get_or_create(&l)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.head_rows, s.head_rows);
        set(&self.head_bytes, s.head_bytes);
        set(&self.wal_segments, s.wal_segments);
        set(&self.wal_bytes, s.wal_bytes);
        set(&self.partitions, s.partitions);
        set(&self.files, s.files);
        set(&self.file_bytes, s.file_bytes);
    }

    /// The OpenMetrics text of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_reach_the_text() {
        let m = Metrics::new();
        m.ingest("host_perf.>", "received").inc_by(3);
        m.pass("host_perf", "persist", 0.25, Some(10));
        m.table(
            "host_perf",
            &kanade_storage::TableStats {
                wal_bytes: 4096,
                ..Default::default()
            },
        );
        let text = m.encode();
        for line in [
            "kanade_ingest_messages_total{source=\"host_perf.>\",outcome=\"received\"} 3",
            "kanade_storage_pass_rows_total{table=\"host_perf\",pass=\"persist\"} 10",
            "kanade_storage_wal_bytes{table=\"host_perf\"} 4096",
            "kanade_nats_connected 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
