//! The questions the API asks, answered with DataFusion.
//!
//! A query's journey: take a [`kanade_storage::Snapshot`] of the table for
//! the query's time range (partitions outside it are never opened), expose
//! the snapshot's head batches and Parquet files to a fresh DataFusion
//! session as one table ([`session`]), run the plan (filters on `at` and
//! `pc_id` reach the Parquet scan, which prunes row groups and pages with
//! the files' statistics), and turn the Arrow result into plain structs.
//! The session shares one runtime, so Parquet footers stay cached across
//! queries; the snapshot is held until the result is collected, so a
//! concurrent persist or compaction never removes a file mid-read.

mod error;
mod export;
mod fastpath;
pub mod inventory;
mod metric;
mod perf;
mod process;
mod relational;
mod session;

pub use error::{Error, Result};
pub use export::{ExportStream, ExportTable};
pub use fastpath::ReadStats;
pub use metric::{Aggregate, HostMetric, ProcessMetric};
pub use perf::{FleetPoint, HostPoint, TopRow};
pub use process::{ActiveInvestigation, LatestTick, ProcessRow, Timeline, TimelinePoint};
pub use relational::ScanDurations;
pub use session::PerfQueries;
