//! The binary's subcommands besides serving: `simulate` (a fake fleet on a
//! real broker), `import-sqlite` (migrate a reference database) and
//! `export` (Parquet over HTTP from a running backend).

pub mod backup;
pub mod export;
pub mod import;
pub mod simulate;
