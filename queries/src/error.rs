//! The queries crate's error type.

/// Result alias of the queries crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong answering a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("query on {table} failed: {source}")]
    DataFusion {
        table: &'static str,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("reading {table} failed: {source}")]
    Storage {
        table: &'static str,
        #[source]
        source: Box<kanade_storage::Error>,
    },
    /// An operator's SQL that cannot run (`memory`: it needed more than
    /// its cap): the caller's to fix.
    #[error("{message}")]
    Sql { message: String, memory: bool },
    #[error("unexpected result shape from {table}: {message}")]
    Shape {
        table: &'static str,
        message: String,
    },
}

impl Error {
    pub(crate) fn df(
        table: &'static str,
    ) -> impl FnOnce(datafusion::error::DataFusionError) -> Error {
        move |source| Error::DataFusion { table, source }
    }

    pub(crate) fn storage(table: &'static str) -> impl FnOnce(kanade_storage::Error) -> Error {
        move |e| Error::Storage {
            table,
            source: Box::new(e),
        }
    }
}
