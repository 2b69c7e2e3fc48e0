//! What every handler can reach.

use kanade_queries::PerfQueries;
use kanade_storage::RelationalStore;

use crate::auth::AuthConfig;

/// Shared, cheaply cloned state of the HTTP side.
#[derive(Clone, Debug)]
pub struct AppState {
    pub queries: PerfQueries,
    /// The perf tables, for their sizes in `/metrics`.
    pub tables: crate::tables::Tables,
    pub store: RelationalStore,
    /// For request/reply to agents (live tail).
    pub nats: async_nats::Client,
    pub auth: AuthConfig,
    /// Jobs, schedules, freeze and exec over the broker's KV buckets.
    pub control: crate::control::Control,
    /// How long a filtered scan may run (`[server] scan_budget_secs`).
    pub scan_budget: std::time::Duration,
    /// Peers whose `X-Forwarded-For` is believed (`[server] trusted_proxies`).
    pub trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    pub inventory: Inventory,
    /// `[nats] url`: where installers point agents unless the server
    /// settings say otherwise.
    pub nats_url: String,
    /// `[server] public_url`: where links sent by mail point.
    pub public_url: Option<String>,
    /// Operators' SQL (`POST /api/query`, dynamic groups, views).
    pub sql: crate::sql::SqlRunner,
    /// Dynamic groups' last answers.
    pub group_members: crate::sql::GroupMembers,
    /// Views' SQL widgets' last answers.
    pub view_answers: crate::sql::ViewAnswers,
    /// `[server.webauthn]`: passkeys, when configured.
    pub passkeys: Option<std::sync::Arc<crate::auth::passkey::Passkeys>>,
    /// Asked by `POST /api/server/restart`: the backend stops as on
    /// SIGTERM and exits 1, for its supervisor to start it again.
    pub restart: std::sync::Arc<tokio::sync::Notify>,
}

/// The inventory side: registered manifests, exploded rows, history.
#[derive(Clone, Debug)]
pub struct Inventory {
    pub manifests: std::sync::Arc<crate::control::manifests::Manifests>,
    pub explode: std::sync::Arc<kanade_queries::inventory::ExplodeIndex>,
    pub history: kanade_queries::inventory::HistoryQueries,
}
