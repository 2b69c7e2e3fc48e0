//! Persisting: the head, sorted by (PC, time), written as one fresh file
//! per date partition, then swapped in and the WAL segments it covered
//! deleted; the head's hard cap.

use super::*;

impl TimeSeriesTable {
    /// Whether the head has reached its persist threshold (rows or bytes).
    pub fn wants_persist(&self) -> bool {
        self.head_over(1)
    }

    /// Whether the head holds `factor` times a persist threshold.
    pub(super) fn head_over(&self, factor: usize) -> bool {
        let state = self.state_ref();
        let (rows, bytes) = state
            .head
            .iter()
            .fold((0, 0), |(r, b), c| (r + c.batch.num_rows(), b + c.bytes));
        rows >= self.config.persist_max_rows.saturating_mul(factor)
            || bytes >= self.config.persist_max_bytes.saturating_mul(factor)
    }

    /// Writes every row in the head to Parquet (one file per partition),
    /// swaps them in and deletes the WAL segments they came from. Rows
    /// written meanwhile stay in the head for the next persist. Runs
    /// beside a compaction; waits only for another persist.
    pub fn persist(&self) -> Result<PersistOutcome> {
        self.persist_if(|_| true)
    }

    /// [`Self::persist`] if `still`, asked once the persist lock is held
    /// (a persist that ran meanwhile may have emptied the head).
    pub(super) fn persist_if(&self, still: impl Fn(&Self) -> bool) -> Result<PersistOutcome> {
        let _persisting = lock(&self.persisting);
        if !still(self) {
            return Ok(PersistOutcome::default());
        }
        let sealed = {
            let mut writer = lock(&self.writer);
            if self.state_ref().head.is_empty() {
                return Ok(PersistOutcome::default());
            }
            writer.wal.rotate()
        };
        let chunks: Vec<HeadChunk> = self
            .state_ref()
            .head
            .iter()
            .filter(|c| c.segment <= sealed)
            .cloned()
            .collect();
        let written = self.write_chunks(&chunks, sealed)?;
        let outcome = PersistOutcome {
            rows: chunks.iter().map(|c| c.batch.num_rows()).sum(),
            files: written.iter().map(|f| f.path.clone()).collect(),
        };
        {
            let mut state = self.state_mut();
            for file in written {
                state
                    .partitions
                    .entry(file.date)
                    .or_default()
                    .push(Arc::new(file));
            }
            state.head.retain(|c| c.segment > sealed);
        }
        lock(&self.writer).wal.remove_through(sealed)?;
        self.forget_old_keys();
        drop(chunks);
        release_freed_memory();
        tracing::debug!(
            table = self.spec.name,
            rows = outcome.rows,
            files = outcome.files.len(),
            "persisted head"
        );
        Ok(outcome)
    }

    /// Writes the chunks' rows as one sorted file per partition, in
    /// slices: the rows are ordered by a permutation over the chunks (8
    /// bytes a row) and copied out [`PERSIST_SLICE`] rows at a time, so a
    /// persist holds the head plus one slice, not copies of the head.
    pub(super) fn write_chunks(
        &self,
        chunks: &[HeadChunk],
        sealed: u64,
    ) -> Result<Vec<PersistedFile>> {
        let keys: Vec<KeyColumns<'_>> = chunks
            .iter()
            .map(|c| KeyColumns::of(self.spec, &c.batch))
            .collect();
        let ranks = pc_ranks(&keys);
        let pcs = ranks.iter().flatten().max().map_or(0, |&r| r as usize + 1);
        // A counting sort by (day, PC) in commit order: the rows of each
        // day's file by PC, each PC's in the order they came. One pass
        // counts, the second places each row at its PC's next slot.
        let mut days: Vec<Day> = Vec::new();
        let mut last = 0;
        for (chunk, ranks) in chunks.iter().zip(&ranks) {
            let at = ts_column(&chunk.batch);
            for (i, &rank) in ranks.iter().enumerate() {
                let d = Day::find(&mut days, &mut last, at.value(i), pcs, self.spec.name)?;
                let day = &mut days[d];
                day.first = day.first.min(chunk.segment);
                day.next[rank as usize] += 1;
            }
        }
        for day in &mut days {
            let mut start = 0;
            for n in &mut day.next {
                (*n, start) = (start, start + *n);
            }
            day.rows = vec![(0, 0); start];
        }
        for (c, (chunk, ranks)) in chunks.iter().zip(&ranks).enumerate() {
            let at = ts_column(&chunk.batch);
            for (i, &rank) in ranks.iter().enumerate() {
                let d = Day::find(&mut days, &mut last, at.value(i), pcs, self.spec.name)?;
                let day = &mut days[d];
                let slot = &mut day.next[rank as usize];
                day.rows[*slot] = (c as u32, i as u32);
                *slot += 1;
            }
        }
        drop(ranks);
        days.sort_by_key(|d| d.date);
        let batches: Vec<&RecordBatch> = chunks.iter().map(|c| &c.batch).collect();
        let mut written = Vec::with_capacity(days.len());
        for Day {
            date,
            first,
            next: ends,
            mut rows,
            ..
        } in days
        {
            // Each PC's rows (`next` now holds where each ends) by time
            // and sequence, then commit order: rows of equal key keep it.
            let mut from = 0;
            for end in ends {
                order_by_time(&mut rows[from..end], &keys);
                from = end;
            }
            let range = SegmentRange {
                first,
                last: sealed,
            };
            let mut w = FileWriter::create(
                self.spec,
                &self.config,
                &self.root,
                date,
                range,
                FileKind::Fresh,
            )?;
            let mut picks = Vec::with_capacity(PERSIST_SLICE);
            for slice in rows.chunks(PERSIST_SLICE) {
                picks.clear();
                picks.extend(slice.iter().map(|&(c, i)| (c as usize, i as usize)));
                let batch = interleave_record_batch(&batches, &picks)
                    .map_err(Error::arrow(self.spec.name))?;
                w.write(&batch)?;
            }
            written.push(w.finish()?);
        }
        Ok(written)
    }
}

/// The head's hard cap, in multiples of the persist thresholds
/// (`persist_max_rows`, `persist_max_bytes`).
pub const HEAD_HARD_CAP: usize = 2;

/// Rows copied out of the head per write of a persist.
const PERSIST_SLICE: usize = 8_192;

/// A chunk's key columns, for ordering its rows without copying them.
struct KeyColumns<'a> {
    pc: &'a StringArray,
    at: &'a TimestampMicrosecondArray,
    seq: Option<&'a Int64Array>,
}

impl<'a> KeyColumns<'a> {
    fn of(spec: &TableSpec, batch: &'a RecordBatch) -> Self {
        Self {
            pc: string_column(batch, "pc_id"),
            at: ts_column(batch),
            seq: spec.seq_column().and_then(|c| {
                batch
                    .column_by_name(c)
                    .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
            }),
        }
    }
}

/// Per chunk and row, the rank of the row's pc_id among every pc_id of
/// `chunks` in text order. A chunk holds a PC's rows together, so the
/// previous row's PC is nearly always the row's.
fn pc_ranks(chunks: &[KeyColumns<'_>]) -> Vec<Vec<u32>> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let by_id: Vec<Vec<u32>> = chunks
        .iter()
        .map(|k| {
            let mut last: Option<(&str, u32)> = None;
            (0..datafusion::arrow::array::Array::len(k.pc))
                .map(|i| {
                    let pc = k.pc.value(i);
                    match last {
                        Some((p, id)) if p == pc => id,
                        _ => {
                            let id = *ids.entry(pc).or_insert_with(|| {
                                names.push(pc);
                                names.len() as u32 - 1
                            });
                            last = Some((pc, id));
                            id
                        }
                    }
                })
                .collect()
        })
        .collect();
    let mut sorted: Vec<u32> = (0..names.len() as u32).collect();
    sorted.sort_unstable_by_key(|&id| names[id as usize]);
    let mut rank = vec![0; names.len()];
    for (r, id) in sorted.into_iter().enumerate() {
        rank[id as usize] = r as u32;
    }
    by_id
        .into_iter()
        .map(|ids| ids.into_iter().map(|id| rank[id as usize]).collect())
        .collect()
}

/// One partition's share of a persist: its first WAL segment, and its
/// rows as (chunk, row) grouped by PC rank (`next`: per rank, the next
/// free slot once counted).
struct Day {
    day: i64,
    date: PartitionDate,
    first: u64,
    next: Vec<usize>,
    rows: Vec<(u32, u32)>,
}

impl Day {
    const MICROS: i64 = 86_400 * 1_000_000;

    /// The index in `days` of the day of `micros`, added if new; `last`
    /// (the previous row's) is tried first.
    fn find(
        days: &mut Vec<Day>,
        last: &mut usize,
        micros: i64,
        pcs: usize,
        table: &'static str,
    ) -> Result<usize> {
        let day = micros.div_euclid(Self::MICROS);
        if days.get(*last).is_some_and(|d| d.day == day) {
            return Ok(*last);
        }
        *last = match days.iter().position(|d| d.day == day) {
            Some(i) => i,
            None => {
                let date = PartitionDate::of_micros(micros)
                    .ok_or(Error::TimestampOutOfRange { table, micros })?;
                days.push(Day {
                    day,
                    date,
                    first: u64::MAX,
                    next: vec![0; pcs],
                    rows: Vec::new(),
                });
                days.len() - 1
            }
        };
        Ok(*last)
    }
}

/// Orders one PC's rows (in commit order) by (at, seq, commit order). A
/// PC's ticks come in time order, each tick's rows together, so sorting
/// each run of equal `at` by its sequence nearly always orders them all;
/// anything else (late samples) is sorted whole.
fn order_by_time(rows: &mut [(u32, u32)], keys: &[KeyColumns<'_>]) {
    let at = |&(c, i): &(u32, u32)| keys[c as usize].at.value(i as usize);
    let seq = |&(c, i): &(u32, u32)| keys[c as usize].seq.map_or(0, |s| s.value(i as usize));
    let mut from = 0;
    while from < rows.len() {
        let t = at(&rows[from]);
        let end = from + rows[from..].iter().take_while(|r| at(r) == t).count();
        if end - from > 1 {
            rows[from..end].sort_unstable_by_key(|r| (seq(r), *r));
        }
        from = end;
    }
    let key = |r: &(u32, u32)| (at(r), seq(r), *r);
    if !rows.windows(2).all(|w| key(&w[0]) <= key(&w[1])) {
        rows.sort_unstable_by_key(key);
    }
}
