//! The storage crate's error type.

use std::path::PathBuf;

use crate::timeseries::PartitionDate;

/// Result alias of the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside the embedded stores.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("arrow error in table {table}: {source}")]
    Arrow {
        table: &'static str,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    #[error("parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("redb error on {path}: {source}")]
    Redb {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("redb error: {0}")]
    RedbOp(#[source] redb::Error),
    #[error("cannot decode a row of {table}: {source}")]
    Codec {
        table: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("batch of table {table}: {message}")]
    Shape {
        table: &'static str,
        message: String,
    },
    #[error("invalid partition date {0:?} (expected YYYY-MM-DD)")]
    InvalidPartitionDate(String),
    #[error("timestamp {micros} µs of table {table} is out of range")]
    TimestampOutOfRange { table: &'static str, micros: i64 },
    #[error("invalid storage config: {0}")]
    InvalidConfig(String),
    #[error("partition {date} of table {table}: {message}")]
    Partition {
        table: &'static str,
        date: PartitionDate,
        message: String,
    },
}

impl Error {
    pub(crate) fn redb(path: &std::path::Path, e: impl Into<redb::Error>) -> Error {
        Error::Redb {
            path: path.to_path_buf(),
            source: e.into(),
        }
    }

    pub(crate) fn redb_op(e: impl Into<redb::Error>) -> Error {
        Error::RedbOp(e.into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn arrow(
        table: &'static str,
    ) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> Error {
        move |source| Error::Arrow { table, source }
    }

    pub(crate) fn parquet(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(datafusion::parquet::errors::ParquetError) -> Error {
        let path = path.into();
        move |source| Error::Parquet { path, source }
    }
}
