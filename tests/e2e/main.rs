//! The end-to-end tests, as one test binary (every binary links DataFusion,
//! so one link instead of one per file): a module per area, each starting
//! its own `nats-server` and backends (see `common`).

mod common;

mod accounts_api;
mod agent_meta_api;
mod agents_api;
mod audit_api;
mod backup;
mod check_status;
mod collect_api;
mod control_plane;
mod dashboard_browser;
mod export_api;
mod fleet_0101;
mod fleet_admin;
mod health_api;
mod import_sqlite;
mod installer_api;
mod inventory_api;
mod inventory_search;
mod lifecycle;
mod metrics_api;
mod notification_acks;
mod obs_events_api;
mod passkeys_api;
mod perf_api;
mod query_api;
mod query_oracle;
mod results_api;
mod router;
mod simulate;
mod views_api;
mod wire_input;
