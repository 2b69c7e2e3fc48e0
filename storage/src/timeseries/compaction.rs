//! Pick + merge: a partition's files become one sorted file in which every
//! key appears once (the copy from the oldest segment wins).

use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;

use super::config::TimeSeriesConfig;
use super::partition::{PartitionDate, SegmentRange};
use super::persist::{read_file, write_file};
use super::read::PersistedFile;
use super::table::TableSpec;
use crate::{Error, Result};

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub date: PartitionDate,
    pub input_files: usize,
    pub input_rows: usize,
    pub output_rows: usize,
}

/// Whether a partition holding `files` files should be compacted now.
pub fn should_compact(
    config: &TimeSeriesConfig,
    date: PartitionDate,
    today: PartitionDate,
    files: usize,
) -> bool {
    files >= 2 && (date < today || files >= config.compaction_min_files)
}

/// Merges `inputs` (one partition's files) into one new file. The inputs
/// stay on disk; the caller swaps them out.
pub fn merge(
    spec: &TableSpec,
    config: &TimeSeriesConfig,
    root: &std::path::Path,
    date: PartitionDate,
    inputs: &[Arc<PersistedFile>],
) -> Result<(PersistedFile, CompactionOutcome)> {
    let mut ordered: Vec<&Arc<PersistedFile>> = inputs.iter().collect();
    ordered.sort_by_key(|f| f.range);
    let batches = ordered
        .iter()
        .map(|f| read_file(spec, &f.path))
        .collect::<Result<Vec<_>>>()?;
    let all = concat_batches(&spec.schema(), &batches).map_err(Error::arrow(spec.name))?;
    let merged = spec.sort_dedup(&all)?;
    let range = SegmentRange {
        first: ordered.iter().map(|f| f.range.first).min().unwrap_or(0),
        last: ordered.iter().map(|f| f.range.last).max().unwrap_or(0),
    };
    let file = write_file(spec, config, root, date, range, &merged)?;
    let outcome = CompactionOutcome {
        date,
        input_files: inputs.len(),
        input_rows: all.num_rows(),
        output_rows: merged.num_rows(),
    };
    Ok((file, outcome))
}
