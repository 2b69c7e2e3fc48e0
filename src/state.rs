//! What every handler can reach.

use kanade_queries::PerfQueries;

use crate::auth::AuthConfig;

/// Shared, cheaply cloned state of the HTTP side.
#[derive(Clone, Debug)]
pub struct AppState {
    pub queries: PerfQueries,
    pub auth: AuthConfig,
}
