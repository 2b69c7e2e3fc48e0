//! kanade-backend, columnar edition: the server's wiring. Config, the
//! HTTP API, the NATS projectors and start-up/shutdown live here; the
//! stores are in `kanade-storage`, the queries in `kanade-queries`.

pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod control;
pub mod ingest;
pub mod mail;
pub mod metrics;
pub mod server;
pub mod sql;
pub mod tables;
pub mod tasks;
