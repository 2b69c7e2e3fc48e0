//! Online backup of the table (its files hard-linked with the WAL taken
//! under the writer lock) and the check of every row.

use super::*;

impl TimeSeriesTable {
    /// Copies the table as it is now into the data directory `dest`: the
    /// write-ahead log and the list of files are taken together under the
    /// writer, persist and compaction locks (no append, persist or compaction
    /// in between, so every row is in exactly one of them), then the
    /// files, pinned by the snapshot, are hard-
    /// linked (copied across file systems). Writes go on meanwhile; only
    /// persist and compaction wait. Opening `dest` gives the same rows.
    pub fn backup_to(&self, dest: &Path) -> Result<TableBackup> {
        let _compacting = lock(&self.compacting);
        let _persisting = lock(&self.persisting);
        let (snapshot, wal_bytes) = {
            let writer = lock(&self.writer);
            let wal_bytes = writer.wal.copy_to(&dest.join("wal").join(self.spec.name))?;
            (self.snapshot(None), wal_bytes)
        };
        let mut out = TableBackup {
            wal_bytes,
            ..TableBackup::default()
        };
        // The table's files, then each rollup's (which may be all that is
        // left of days past the raw retention).
        let mut copies: Vec<(Arc<PersistedFile>, &Path, PathBuf)> = snapshot
            .files()
            .iter()
            .map(|f| {
                (
                    Arc::clone(f),
                    self.root.as_path(),
                    dest.join(self.spec.name),
                )
            })
            .collect();
        for level in &self.rollups {
            copies.extend(level.read().values().flatten().map(|f| {
                (
                    Arc::clone(f),
                    level.root.as_path(),
                    dest.join(level.spec.name),
                )
            }));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for (file, from_root, root) in copies {
            let relative = file.path().strip_prefix(from_root).map_err(|_| {
                Error::InvalidConfig(format!(
                    "{} is outside the table directory {}",
                    file.path().display(),
                    from_root.display()
                ))
            })?;
            let to = root.join(relative);
            let dir = to.parent().unwrap_or(&root).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
            if std::fs::hard_link(file.path(), &to).is_err() {
                std::fs::copy(file.path(), &to).map_err(Error::io(&to))?;
            }
            out.files += 1;
            out.file_bytes += file.bytes;
            dirs.insert(dir);
        }
        for dir in dirs {
            super::super::partition::fsync_dir(&dir)?;
        }
        Ok(out)
    }

    /// Decodes every row of every file and counts them with the head's:
    /// a full read, for checking a backup.
    pub fn verify(&self) -> Result<u64> {
        let snapshot = self.snapshot(None);
        let mut rows: u64 = snapshot.head.iter().map(|b| b.num_rows() as u64).sum();
        for f in &snapshot.files {
            rows += super::super::parquet_file::read_file(self.spec, &f.path)?.num_rows() as u64;
        }
        Ok(rows)
    }
}
