//! Retention: partitions older than the policy are dropped whole.

use super::partition::PartitionDate;

/// How many days of partitions a table keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub days: u32,
}

impl RetentionPolicy {
    /// Whether partition `date` is past retention on `today`: a partition
    /// is kept while `date >= today - days`.
    pub fn is_expired(self, date: PartitionDate, today: PartitionDate) -> bool {
        date < today.minus_days(self.days)
    }
}
