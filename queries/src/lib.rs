//! The questions the API asks, answered with DataFusion.
//!
//! A query's journey: take a [`kanade_storage::Snapshot`] of the table for
//! the query's time range (partitions outside it are never opened), expose
//! the snapshot's head batches and Parquet files to the long-lived
//! DataFusion session as one table ([`provider`]: the filters' bounds on
//! `at` and `pc_id` choose the files, row groups and pages to read from
//! the cached footers and page indexes), run the plan, and turn the Arrow
//! result into plain structs. Every scanned file is pinned by the plan, so
//! a concurrent persist or compaction never removes a file mid-read. The
//! fixed-shape questions skip the planner ([`fastpath`]).

mod error;
mod export;
mod fastpath;
mod footer;
pub mod inventory;
mod metric;
mod perf;
mod process;
mod provider;
mod relational;
mod relational_sql;
mod session;
mod sql;
mod sqlite_fns;

pub use error::{Error, Result};
pub use export::{ExportStream, ExportTable};
pub use fastpath::ReadStats;
pub use metric::{Aggregate, HostMetric, ProcessMetric};
pub use perf::{FleetPoint, HostPoint, TopRow};
pub use process::{ActiveInvestigation, LatestTick, Timeline, TimelinePoint};
pub use provider::ProviderStats;
pub use relational::ScanDurations;
pub use session::PerfQueries;
pub use sql::{SqlAnswer, SqlExtras, SqlLimits};
