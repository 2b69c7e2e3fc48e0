//! Maintenance: compaction of a day's files into one, the rollups of new
//! files, retention by whole partitions.

use super::*;

impl TimeSeriesTable {
    /// Compacts every partition that qualifies (closed partitions with two
    /// or more files, today's with `compaction_min_files` or more). A head
    /// holding rows of a closed day (its last hours, late samples) is
    /// persisted first, so the day is merged once with all its rows rather
    /// than again when they land as one more file.
    pub fn compact(&self, today: PartitionDate) -> Result<Vec<CompactionOutcome>> {
        let _compacting = lock(&self.compacting);
        let today_from = today.start_micros();
        let holds_closed = |t: &Self| t.state_ref().head.iter().any(|c| c.min_at < today_from);
        if holds_closed(self) {
            self.persist_if(holds_closed)?;
        }
        let candidates: Vec<(PartitionDate, Vec<Arc<PersistedFile>>)> = self
            .state_ref()
            .partitions
            .iter()
            .filter(|(d, f)| should_compact(&self.config, **d, today, f))
            .map(|(d, f)| (*d, f.clone()))
            .collect();
        let mut outcomes = Vec::new();
        for (date, inputs) in candidates {
            outcomes.push(self.compact_date(date, &inputs, today)?.1);
        }
        self.roll_up(today)?;
        release_freed_memory();
        Ok(outcomes)
    }

    /// Merges `inputs` (files of partition `date`) into one file and
    /// swaps it in, keeping files a persist added meanwhile; the day's
    /// rollups (those retention still keeps on `today`) are built from
    /// the merged rows as they are written and installed after the swap.
    /// Under the compaction lock.
    pub(super) fn compact_date(
        &self,
        date: PartitionDate,
        inputs: &[Arc<PersistedFile>],
        today: PartitionDate,
    ) -> Result<(Arc<PersistedFile>, CompactionOutcome)> {
        let range = merged_range(inputs);
        let levels = self.stale_rollups(date, range, today);
        let mut rollups = match levels.as_slice() {
            [] => None,
            some => Some(RollupBuilder::new(
                self.spec,
                &self.config,
                some,
                date,
                range,
            )?),
        };
        let mut sink = |b: &RecordBatch| rollups.as_mut().map_or(Ok(()), |r| r.push(b));
        let (file, outcome) = merge(self.spec, &self.config, &self.root, date, inputs, &mut sink)?;
        let built = rollups.map(RollupBuilder::finish).transpose()?;
        let file = Arc::new(file);
        let mut state = self.state_mut();
        let files = state.partitions.entry(date).or_default();
        files.retain(|f| !inputs.iter().any(|i| Arc::ptr_eq(f, i)));
        files.push(Arc::clone(&file));
        for input in inputs {
            input.mark_obsolete();
        }
        drop(state);
        tracing::info!(table = self.spec.name, %date, files = outcome.input_files, rows = outcome.output_rows, "compacted partition");
        if let Some((files, done)) = built {
            install_rollups(&levels, files, &done);
        }
        Ok((file, outcome))
    }

    /// Rolls up every raw file that lacks a rollup retention still keeps
    /// (the files persists wrote since the last pass, a data directory
    /// from before rollups), each on its own. Runs under the compaction
    /// lock, after compaction.
    pub(super) fn roll_up(&self, today: PartitionDate) -> Result<Vec<RollupOutcome>> {
        if self.rollups.is_empty() {
            return Ok(Vec::new());
        }
        let sources: Vec<Arc<PersistedFile>> = self
            .state_ref()
            .partitions
            .values()
            .flatten()
            .cloned()
            .collect();
        let mut outcomes = Vec::new();
        for source in sources {
            outcomes.extend(self.roll_up_file(&source, today)?);
        }
        Ok(outcomes)
    }

    /// Rolls `source` (one file of its partition) up into every rollup
    /// that lacks a file of its range and keeps its day (nothing when
    /// none does).
    pub(super) fn roll_up_file(
        &self,
        source: &PersistedFile,
        today: PartitionDate,
    ) -> Result<Vec<RollupOutcome>> {
        let stale = self.stale_rollups(source.date, source.range, today);
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let (files, done) = rollup::build(self.spec, &self.config, &stale, source)?;
        install_rollups(&stale, files, &done);
        Ok(done)
    }

    /// The rollups that want a file of `date` built from the raw file
    /// covering segments `range`: those retention keeps on `today` without
    /// one of that range. A rollup of the same segments is of the same
    /// rows (a lone fresh file rolled up, then compacted) and stays: a new
    /// one would take its file name.
    pub(super) fn stale_rollups(
        &self,
        date: PartitionDate,
        range: SegmentRange,
        today: PartitionDate,
    ) -> Vec<&RollupLevel> {
        self.rollups
            .iter()
            .filter(|l| !l.retention.is_expired(date, today))
            .filter(|l| !l.has(date, range))
            .collect()
    }

    /// Removes every partition past retention on `today`; returns the
    /// dropped dates. Files are deleted at once unless a running query
    /// still holds them, in which case they go when it finishes.
    pub fn drop_expired(&self, today: PartitionDate) -> Result<Vec<PartitionDate>> {
        let _compacting = lock(&self.compacting);
        // A day about to go is rolled up first if it never was (a
        // partition left with several files, a data directory from before
        // rollups): its rollups outlive it.
        if !self.rollups.is_empty() {
            let expiring: Vec<(PartitionDate, Vec<Arc<PersistedFile>>)> = self
                .state_ref()
                .partitions
                .iter()
                .filter(|(d, _)| self.retention.is_expired(**d, today))
                .map(|(d, f)| (*d, f.clone()))
                .collect();
            for (date, files) in expiring {
                let source = match files.as_slice() {
                    [] => continue,
                    [one] => Arc::clone(one),
                    _ => self.compact_date(date, &files, today)?.0,
                };
                self.roll_up_file(&source, today)?;
            }
        }
        let expired: Vec<(PartitionDate, Vec<Arc<PersistedFile>>)> = {
            let mut state = self.state_mut();
            let dates: Vec<PartitionDate> = state
                .partitions
                .keys()
                .copied()
                .filter(|d| self.retention.is_expired(*d, today))
                .collect();
            dates
                .into_iter()
                .filter_map(|d| state.partitions.remove(&d).map(|f| (d, f)))
                .collect()
        };
        let mut dropped = Vec::new();
        for (date, files) in expired {
            for f in &files {
                f.mark_obsolete();
            }
            drop(files);
            tracing::info!(table = self.spec.name, %date, "dropped expired partition");
            dropped.push(date);
        }
        if !dropped.is_empty() {
            let kept_from = today.minus_days(self.retention.days);
            self.latest_mut().evict_before(kept_from.start_micros());
        }
        for level in &self.rollups {
            level.drop_expired(today);
        }
        Ok(dropped)
    }
}

/// Puts each level's new file in place (`files` in `levels`' order).
fn install_rollups(levels: &[&RollupLevel], files: Vec<PersistedFile>, done: &[RollupOutcome]) {
    for (level, file) in levels.iter().zip(files) {
        level.install(file);
    }
    for o in done {
        tracing::info!(table = o.table, date = %o.date, rows = o.input_rows, windows = o.windows, "rolled up partition");
    }
}
