//! The metrics and aggregates a caller may ask for, each accepting the
//! reference backend's short aliases and full column names.

/// A host_perf metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMetric {
    CpuPct,
    MemUsedBytes,
    DiskReadBytesPerSec,
    DiskWrittenBytesPerSec,
    NetRxBytesPerSec,
    NetTxBytesPerSec,
}

impl HostMetric {
    /// Parses a metric name; `None` when unknown.
    pub fn try_parse(s: &str) -> Option<Self> {
        Some(match s {
            "cpu_pct" | "cpu" => Self::CpuPct,
            "mem_used_bytes" | "mem" | "memory" => Self::MemUsedBytes,
            "disk_read_bytes_per_sec" | "disk_read" => Self::DiskReadBytesPerSec,
            "disk_written_bytes_per_sec" | "disk_written" => Self::DiskWrittenBytesPerSec,
            "net_rx_bytes_per_sec" | "net_rx" => Self::NetRxBytesPerSec,
            "net_tx_bytes_per_sec" | "net_tx" => Self::NetTxBytesPerSec,
            _ => return None,
        })
    }

    /// The column it reads (also its name in responses).
    pub fn column(self) -> &'static str {
        match self {
            Self::CpuPct => "cpu_pct",
            Self::MemUsedBytes => "mem_used_bytes",
            Self::DiskReadBytesPerSec => "disk_read_bytes_per_sec",
            Self::DiskWrittenBytesPerSec => "disk_written_bytes_per_sec",
            Self::NetRxBytesPerSec => "net_rx_bytes_per_sec",
            Self::NetTxBytesPerSec => "net_tx_bytes_per_sec",
        }
    }

    /// Accepted spellings, for error messages.
    pub const ACCEPTED: &'static str =
        "cpu, mem, disk_read, disk_written, net_rx, net_tx (or the full column names)";
}

/// A process_perf metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessMetric {
    CpuPct,
    RssBytes,
    DiskReadBytesPerSec,
    DiskWrittenBytesPerSec,
}

impl ProcessMetric {
    /// Parses a metric name; `None` when unknown.
    pub fn try_parse(s: &str) -> Option<Self> {
        Some(match s {
            "cpu_pct" | "cpu" => Self::CpuPct,
            "rss_bytes" | "rss" | "mem" | "memory" => Self::RssBytes,
            "disk_read_bytes_per_sec" | "disk_read" => Self::DiskReadBytesPerSec,
            "disk_written_bytes_per_sec" | "disk_written" => Self::DiskWrittenBytesPerSec,
            _ => return None,
        })
    }

    /// The column it reads (also its name in responses).
    pub fn column(self) -> &'static str {
        match self {
            Self::CpuPct => "cpu_pct",
            Self::RssBytes => "rss_bytes",
            Self::DiskReadBytesPerSec => "disk_read_bytes_per_sec",
            Self::DiskWrittenBytesPerSec => "disk_written_bytes_per_sec",
        }
    }

    /// Accepted spellings, for error messages.
    pub const ACCEPTED: &'static str =
        "cpu, rss, disk_read, disk_written (or the full column names)";
}

/// How a fleet series combines the PCs of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Avg,
    Max,
}

impl Aggregate {
    /// Parses `avg` (or `mean`) and `max`; `None` otherwise.
    pub fn try_parse(s: &str) -> Option<Self> {
        match s {
            "avg" | "mean" => Some(Self::Avg),
            "max" => Some(Self::Max),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Avg => "avg",
            Self::Max => "max",
        }
    }
}

#[cfg(test)]
mod tests {
    use kanade_storage::{HostPerfRow, ProcessPerfRow};

    use super::*;

    /// Every alias names a column the table declares: a renamed column
    /// fails here, not as an empty chart.
    #[test]
    fn every_metric_reads_a_declared_column() {
        let host = [
            "cpu",
            "mem",
            "disk_read",
            "disk_written",
            "net_rx",
            "net_tx",
        ];
        for alias in host {
            let m = HostMetric::try_parse(alias).unwrap();
            assert!(HostPerfRow::charted().contains(&m.column()), "{alias}");
            assert_eq!(HostMetric::try_parse(m.column()), Some(m));
        }
        let process = ["cpu", "rss", "disk_read", "disk_written"];
        for alias in process {
            let m = ProcessMetric::try_parse(alias).unwrap();
            assert!(ProcessPerfRow::COLUMNS.contains(&m.column()), "{alias}");
            assert_eq!(ProcessMetric::try_parse(m.column()), Some(m));
        }
    }
}
