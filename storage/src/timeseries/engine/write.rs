//! Writing: dedup against the known keys, the WAL append (fsynced), the
//! head push; the accepted time window; forgetting keys past the dedup
//! horizon.

use super::*;

impl TimeSeriesTable {
    /// Commits `batch` (of this table's schema): rows whose key is already
    /// known are dropped, the rest are fsynced to the WAL and then visible
    /// to every new snapshot. Blocking (fsync): call off the async runtime.
    /// A write that leaves the head above its hard cap persists it before
    /// returning (see the module doc).
    pub fn write(&self, batch: &RecordBatch) -> Result<WriteOutcome> {
        let outcome = self.append(batch)?;
        if outcome.inserted > 0 && self.head_over(HEAD_HARD_CAP) {
            // The rows are committed whatever the persist does: a failure
            // is the persist pass's to retry, not the writer's.
            if let Err(e) = self.persist_if(|t| t.head_over(HEAD_HARD_CAP)) {
                tracing::error!(table = self.spec.name, error = %e, "inline persist of a full head failed");
            }
        }
        Ok(outcome)
    }

    /// Dedup, WAL append and head push, under the writer lock.
    pub(super) fn append(&self, batch: &RecordBatch) -> Result<WriteOutcome> {
        let mut writer = lock(&self.writer);
        let fresh = self.spec.retain_new(batch, &mut writer.keys)?;
        let outcome = WriteOutcome {
            inserted: fresh.num_rows(),
            duplicates: batch.num_rows() - fresh.num_rows(),
        };
        if fresh.num_rows() == 0 {
            return Ok(outcome);
        }
        if let Err(e) = writer.wal.append(&fresh) {
            for key in self.spec.keys(&fresh) {
                writer.keys.remove(key);
            }
            return Err(e);
        }
        let now = Utc::now().timestamp_micros();
        if self.spec.recent_secs > 0 {
            self.recent
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .observe(&fresh, now);
        }
        if self.spec.fleet_secs > 0 {
            self.fleet
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .observe(&fresh, now);
        }
        if self.spec.tracks_latest {
            // Under the writer lock, so the index sees writes in commit order.
            let observed = self.latest_mut().observe(&fresh);
            if let Err(e) = observed {
                tracing::warn!(table = self.spec.name, error = %e, "latest-rows index not updated");
            }
        }
        let chunk = HeadChunk::new(writer.wal.current_seq(), fresh);
        self.state_mut().head.push(chunk);
        Ok(outcome)
    }

    /// The oldest and newest `at` a sample may carry at `now`: the start
    /// of the oldest partition retention keeps, and `now` plus
    /// `max_future_secs`. Ingest refuses what falls outside, so a broken
    /// clock never creates a partition retention cannot reach.
    pub fn accepted_times(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let oldest = PartitionDate::of(now).minus_days(self.retention.days);
        let oldest = DateTime::from_timestamp_micros(oldest.start_micros()).unwrap_or(now);
        let ahead = chrono::TimeDelta::try_seconds(
            i64::try_from(self.config.max_future_secs).unwrap_or(i64::MAX),
        )
        .unwrap_or(chrono::TimeDelta::MAX);
        (
            oldest,
            now.checked_add_signed(ahead)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    pub(super) fn forget_old_keys(&self) {
        let horizon = dedup_horizon(&self.config);
        let mut writer = lock(&self.writer);
        writer.keys.retain_since(horizon);
        let state = self.state_ref();
        for chunk in &state.head {
            for key in self.spec.keys(&chunk.batch) {
                writer.keys.insert(key);
            }
        }
    }
}
