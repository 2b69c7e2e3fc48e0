//! Inventory questions: exploded rows searched across the fleet
//! ([`explode`]), the changes between a PC's inventories ([`layout`]
//! decides what a change is) and their history ([`history`]).

pub mod explode;
pub mod history;
pub mod layout;

pub use explode::{DatasetStats, ExplodeIndex, Filter, RefreshPolicy, SearchPage};
pub use history::{FirstSeen, HistoryEvent, HistoryFilter, HistoryQueries};
pub use layout::{element_changes, scalar_changes, Change, Kind, Layout, Typed};
