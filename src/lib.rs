//! kanade-backend, columnar edition: the server's wiring. Config, the
//! HTTP API, the NATS projectors and start-up/shutdown live here; the
//! stores are in `kanade-storage`, the queries in `kanade-queries`.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod export_cli;
pub mod housekeeping;
pub mod import;
pub mod projector;
pub mod server;
pub mod simulate;
pub mod state;
pub mod web;
