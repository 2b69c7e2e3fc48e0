//! The HTTP API: one file per resource, the router built in [`app`] so
//! tests and `main` drive the same thing.

mod accounts;
mod agent_actions;
mod agent_meta;
mod agents;
mod analytics;
mod app_artifacts;
mod audit;
mod auth;
mod backup;
mod checks;
mod collect;
mod deploy_plans;
mod error;
mod executions;
mod export;
mod fleet_config;
mod freeze;
mod group_defs;
mod health;
mod install_attempts;
mod installer;
mod inventory;
mod inventory_table;
mod jobs;
mod metrics;
mod notifications;
mod objects;
mod obs_events;
pub(crate) mod offload;
mod params;
mod passkeys;
mod password_links;
mod perf;
mod permission_groups;
mod processes;
mod query;
mod ready;
mod releases;
mod results;
mod schedules;
mod server;
mod server_settings;
pub mod state;
mod table_state;
mod views;
mod web;

use axum::middleware;
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};

pub use accounts::seed_bootstrap_admin;
pub use error::ApiError;
pub use params::ApiJson;
pub(crate) use server_settings::apply_stored_store_limits;
pub use server_settings::current as server_settings_current;

use crate::api::state::AppState;

/// The whole HTTP surface of the backend.
///
/// Every `/api/` route needs an identity (see [`auth::authenticate`]);
/// reads are open to viewers, and the account routes to admins only.
/// Mutating routes for operators join an operator group layered with
/// [`auth::require_operator`] the same way.
pub fn app(state: AppState) -> Router {
    let admin = Router::new()
        .route("/api/accounts", get(accounts::list).post(accounts::create))
        .route(
            "/api/accounts/{username}",
            patch(accounts::update).delete(accounts::delete),
        )
        .route("/api/admin/backup", post(backup::backup))
        .route(
            "/api/accounts/{username}/reset-link",
            post(password_links::reset_link),
        )
        .route(
            "/api/accounts/{username}/mfa",
            axum::routing::delete(accounts::mfa_reset),
        )
        .route("/api/query", post(query::execute))
        .route(
            "/api/accounts/{username}/passkeys",
            axum::routing::delete(passkeys::admin_reset),
        )
        .route(
            "/api/permission-groups",
            get(permission_groups::list).post(permission_groups::create),
        )
        .route(
            "/api/permission-groups/{name}",
            patch(permission_groups::update).delete(permission_groups::delete),
        )
        .route_layer(middleware::from_fn(auth::require_admin));
    let operator = Router::new()
        .route("/api/jobs", post(jobs::create))
        .route("/api/jobs/{id}", delete(jobs::delete))
        .route("/api/jobs/{id}/kill", post(jobs::kill))
        .route("/api/exec/{job_id}", post(jobs::exec))
        .route("/api/scripts/{id}/revoke", post(jobs::revoke))
        .route("/api/scripts/{id}/unrevoke", post(jobs::unrevoke))
        .route("/api/schedules", post(schedules::create))
        .route("/api/schedules/{id}", delete(schedules::delete))
        .route("/api/schedules/{id}/enable", post(schedules::enable))
        .route("/api/schedules/{id}/disable", post(schedules::disable))
        .route(
            "/api/freeze",
            axum::routing::put(freeze::put).delete(freeze::delete),
        )
        .route(
            "/api/config",
            axum::routing::put(fleet_config::put_global).delete(fleet_config::delete_global),
        )
        .route(
            "/api/config/fields/{field}",
            axum::routing::put(fleet_config::put_global_field)
                .delete(fleet_config::delete_global_field),
        )
        .route(
            "/api/groups/{name}/config/fields/{field}",
            axum::routing::put(fleet_config::put_group_field)
                .delete(fleet_config::delete_group_field),
        )
        .route(
            "/api/pcs/{pc_id}/config/fields/{field}",
            axum::routing::put(fleet_config::put_pc_field).delete(fleet_config::delete_pc_field),
        )
        .route(
            "/api/groups/{name}/config",
            axum::routing::put(fleet_config::put_group).delete(fleet_config::delete_group),
        )
        .route(
            "/api/pcs/{pc_id}/config",
            axum::routing::put(fleet_config::put_pc).delete(fleet_config::delete_pc),
        )
        .route(
            "/api/agents/{pc_id}/groups",
            axum::routing::put(fleet_config::put_membership).post(fleet_config::add_group),
        )
        .route(
            "/api/agents/{pc_id}/groups/{group}",
            delete(fleet_config::remove_group),
        )
        .route(
            "/api/groups/{name}/email",
            axum::routing::put(fleet_config::put_contacts),
        )
        .route("/api/run", post(agent_actions::run))
        .route(
            "/api/agents/publish",
            post(releases::publish).layer(upload_limit(&objects::AGENT_RELEASES)),
        )
        .route("/api/agents/releases/{version}", delete(releases::delete))
        .route("/api/agents/rollout", post(releases::rollout))
        .route("/api/group-defs", post(group_defs::create))
        .route("/api/views", post(views::create))
        .route("/api/views/{id}", delete(views::delete))
        .route("/api/agents/install-attempts", get(install_attempts::list))
        .route(
            "/api/agents/install-attempts/{id}",
            get(install_attempts::detail),
        )
        .route("/api/collect/bundles/{*key}", delete(collect::delete))
        .route(
            "/api/deploy-plans",
            get(deploy_plans::list).post(deploy_plans::create),
        )
        .route("/api/deploy-plans/{plan_id}", get(deploy_plans::read))
        .route(
            "/api/deploy-plans/{plan_id}/approve",
            post(deploy_plans::approve),
        )
        .route(
            "/api/deploy-plans/{plan_id}/revoke",
            post(deploy_plans::revoke),
        )
        .route(
            "/api/app-artifacts",
            post(app_artifacts::publish).layer(upload_limit(&objects::APP_PACKAGES)),
        )
        .route("/api/checks/{check_name}", delete(checks::delete))
        .route("/api/server/restart", post(server::restart))
        .route(
            "/api/server-settings",
            axum::routing::put(server_settings::put),
        )
        .route(
            "/api/server-settings/support-codes/{scope}",
            axum::routing::put(server_settings::put_support_code)
                .delete(server_settings::delete_support_code),
        )
        .route("/api/group-defs/{id}", delete(group_defs::delete))
        .route("/api/agents/{pc_id}", delete(agents::delete))
        .route(
            "/api/agents/{pc_id}/meta",
            axum::routing::put(agent_meta::put_meta),
        )
        .route(
            "/api/agents/{pc_id}/meta/key",
            axum::routing::put(agent_meta::set_key).delete(agent_meta::remove_key),
        )
        .route("/api/agents/{pc_id}/ping", post(agent_actions::ping))
        .route("/api/notifications", post(notifications::send))
        .route("/api/notifications/{id}", patch(notifications::edit))
        .route(
            "/api/notifications/{id}/recall",
            post(notifications::recall),
        )
        .route(
            "/api/app-packages/{name}/{version}",
            post(objects::upload_package)
                .layer(upload_limit(&objects::APP_PACKAGES))
                .delete(objects::delete_package),
        )
        .route(
            "/api/script-objects/{name}/{version}",
            post(objects::upload_script)
                .layer(upload_limit(&objects::SCRIPTS))
                .delete(objects::delete_script),
        )
        .route_layer(middleware::from_fn(auth::require_operator));
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(ready::readyz))
        .route("/api/version", get(version))
        .route("/api/auth/login", post(accounts::login))
        .route("/api/auth/me", get(accounts::me))
        .route("/api/auth/change-password", post(accounts::change_password))
        .route(
            "/api/auth/password-setup/{token}",
            get(password_links::info).post(password_links::set),
        )
        .route("/api/auth/forgot-password", post(password_links::forgot))
        .route("/api/auth/mfa/init", post(accounts::mfa_init))
        .route("/api/auth/mfa/verify", post(accounts::mfa_verify))
        .route("/api/auth/mfa/disable", post(accounts::mfa_disable))
        .route("/api/auth/passkey/config", get(passkeys::config))
        .route("/api/auth/passkey/login/start", post(passkeys::login_start))
        .route(
            "/api/auth/passkey/login/finish",
            post(passkeys::login_finish),
        )
        .route("/api/auth/passkeys", get(passkeys::list))
        .route(
            "/api/auth/passkeys/register/start",
            post(passkeys::register_start),
        )
        .route(
            "/api/auth/passkeys/register/finish",
            post(passkeys::register_finish),
        )
        .route("/api/auth/passkeys/{id}/remove", post(passkeys::remove))
        .route("/api/agents", get(agents::list))
        .route("/api/agents/versions", get(agents::versions))
        .route("/api/agents/meta", get(agent_meta::bulk))
        .route("/api/agents/meta-keys", get(agent_meta::keys))
        .route("/api/agents/{pc_id}", get(agents::detail))
        .route("/api/agents/{pc_id}/meta", get(agent_meta::get_meta))
        .route("/api/agents/{pc_id}/perf", get(perf::host_timeline))
        .route("/api/agents/{pc_id}/processes", get(processes::latest))
        .route(
            "/api/agents/{pc_id}/processes/timeline",
            get(processes::timeline),
        )
        .route("/api/health/fleet", get(health::fleet))
        .route("/api/health/scan_durations", get(health::scan_durations))
        .route("/api/jetstream/status", get(health::jetstream_status))
        .route("/api/audit", get(audit::list))
        .route("/api/executions", get(executions::list))
        .route("/api/executions/{exec_id}", get(executions::detail))
        .route("/api/obs_events", get(obs_events::list))
        .route("/api/obs_events/kinds", get(obs_events::kinds))
        .route("/api/obs_events/sources", get(obs_events::sources))
        .route("/api/obs_events/recent", get(obs_events::recent))
        .route("/api/obs_events/lane_seeds", get(obs_events::lane_seeds))
        .route("/api/export/{table}", get(export::export))
        .route("/api/results", get(results::list))
        .route("/api/results/{result_id}", get(results::detail))
        .route("/api/results/{result_id}/tail", get(results::tail))
        .route("/api/perf/fleet", get(perf::fleet))
        .route("/api/perf/top", get(perf::top))
        .route(
            "/api/perf/active-investigations",
            get(perf::active_investigations),
        )
        .route("/api/jobs", get(jobs::list))
        .route("/api/jobs/{id}/yaml", get(jobs::yaml))
        .route("/api/scripts/status", get(jobs::scripts_status))
        .route("/api/schemas/manifest.json", get(jobs::manifest_schema))
        .route("/api/schemas/schedule.json", get(jobs::schedule_schema))
        .route("/api/group-defs", get(group_defs::list))
        .route("/api/views", get(views::list))
        .route("/api/agents/installer", get(installer::installer))
        .route("/api/agents/installer.sh", get(installer::one_liner_sh))
        .route("/api/agents/installer.ps1", get(installer::one_liner_ps1))
        .route(
            "/api/install-reports/{id}",
            post(install_attempts::report).layer(axum::extract::DefaultBodyLimit::max(
                install_attempts::REPORT_BYTES,
            )),
        )
        .route("/api/collect/bundles", get(collect::list))
        .route("/api/collect/bundles/{*key}", get(collect::download))
        .route("/api/views/{id}/yaml", get(views::yaml))
        .route("/api/schemas/view.json", get(views::schema))
        .route("/api/analytics", get(analytics::analytics))
        .route("/api/group-defs/{id}/members", get(group_defs::members))
        .route("/api/group-defs/{id}/yaml", get(group_defs::yaml))
        .route("/api/schemas/group-def.json", get(group_defs::schema))
        .route("/api/schedules", get(schedules::list))
        .route("/api/schedules/coverage", get(schedules::coverage_all))
        .route("/api/schedules/upcoming", get(schedules::upcoming))
        .route("/api/schedules/{id}/yaml", get(schedules::yaml))
        .route("/api/schedules/{id}/preview", get(schedules::preview))
        .route("/api/schedules/{id}/status", get(schedules::status))
        .route("/api/schedules/{id}/coverage", get(schedules::coverage))
        .route("/api/freeze", get(freeze::get))
        .route("/api/config", get(fleet_config::get_global))
        .route("/api/config/defaults", get(fleet_config::defaults))
        .route(
            "/api/groups/{name}/config/inherited",
            get(fleet_config::group_inherited),
        )
        .route(
            "/api/pcs/{pc_id}/config/inherited",
            get(fleet_config::pc_inherited),
        )
        .route("/api/groups", get(fleet_config::list_groups))
        .route("/api/groups/{name}/email", get(fleet_config::get_contacts))
        .route("/api/groups/{name}/config", get(fleet_config::get_group))
        .route("/api/pcs/{pc_id}/config", get(fleet_config::get_pc))
        .route(
            "/api/agents/{pc_id}/effective_config",
            get(fleet_config::effective),
        )
        .route(
            "/api/agents/{pc_id}/groups",
            get(fleet_config::get_membership),
        )
        .route("/api/agents/{pc_id}/logs", get(agent_actions::logs))
        .route("/api/agents/releases", get(releases::list))
        .route("/api/checks", get(checks::list))
        .route("/api/app-packages", get(objects::list_packages))
        .route(
            "/api/app-packages/{name}/{version}",
            get(objects::download_package),
        )
        .route(
            "/api/app-artifacts/{role}/{version}/{package}",
            get(app_artifacts::download),
        )
        .route(
            "/api/app-artifacts/{role}/{version}/{package}/metadata",
            get(app_artifacts::metadata),
        )
        .route("/api/script-objects", get(objects::list_scripts))
        .route(
            "/api/script-objects/{name}/{version}",
            get(objects::download_script),
        )
        .route("/api/notifications", get(notifications::list))
        .route("/api/notifications/{id}", get(notifications::detail))
        .route(
            "/api/notifications/{id}/ack_status",
            get(notifications::ack_status),
        )
        .route("/api/inventory/jobs", get(inventory::jobs))
        .route(
            "/api/inventory/by-job/{manifest_id}",
            get(inventory::by_job),
        )
        .route("/api/inventory/{id}", get(inventory::for_pc))
        .route("/api/inventory/{id}/search/{field}", get(inventory::search))
        .route(
            "/api/inventory/{id}/search-scalars",
            get(inventory::search_scalars),
        )
        .route(
            "/api/inventory/{id}/search/{field}/export",
            get(inventory::search_export),
        )
        .route(
            "/api/inventory/{id}/history/pc/{pc_id}",
            get(inventory::history_for_pc),
        )
        .route(
            "/api/inventory/{id}/history/search",
            get(inventory::history_search),
        )
        .route(
            "/api/inventory/{id}/history/first_seen",
            get(inventory::history_first_seen),
        )
        .route("/api/command-signing", get(command_signing))
        .route("/api/server-settings", get(server_settings::get))
        .route(
            "/api/server-settings/defaults",
            get(server_settings::defaults),
        )
        .route("/metrics", get(metrics::scrape))
        .merge(operator)
        .merge(admin)
        .route_layer(middleware::from_fn(auth::require_features))
        .fallback(web::fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn(error::catch_panics))
        .layer(middleware::map_response(error::json_errors))
        .layer(middleware::from_fn(metrics::track))
        .with_state(state)
}

/// The body limit of an upload route: the kind's cap plus room for the
/// multipart framing (the handler enforces the cap on the file itself).
fn upload_limit(kind: &objects::Kind) -> axum::extract::DefaultBodyLimit {
    let max = kind.max_bytes.saturating_add(1 << 20);
    axum::extract::DefaultBodyLimit::max(usize::try_from(max).unwrap_or(usize::MAX))
}

/// `GET /health`: liveness, unauthenticated.
async fn health() -> &'static str {
    "ok"
}

#[derive(serde::Serialize)]
struct VersionResponse {
    version: &'static str,
}

/// `GET /api/command-signing`: the key id and fingerprint commands are
/// signed with (both null when they go out unsigned).
async fn command_signing(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<crate::control::signing::SigningIdentity> {
    Json(state.control.signer.identity())
}

/// `GET /api/version`: the build version, unauthenticated.
async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: env!("CARGO_PKG_VERSION"),
    })
}
