//! Page permissions, as kanade 0.101 has them: an account may be limited
//! to some pages (feature keys of `kanade_shared::feature::Feature`), by
//! its own `allowed_features` or, taking precedence, by its permission
//! group. The router asks [`denial`] for every routed request: each route
//! belongs to the page that owns it ([`feature_for_route`]), a few are
//! shared by several pages ([`shared_owners`]), and the rest are commons:
//! open to unrestricted accounts, closed to restricted ones but for the
//! self-service routes every session needs ([`RESTRICTED_COMMONS`]).
//! The role gates apply as well; a page permission never widens a role.

use axum::http::Method;
use kanade_shared::feature::Feature;
use kanade_storage::{PermissionGroupRecord, UserRecord};

/// Routes a restricted account may always call.
const RESTRICTED_COMMONS: [&str; 11] = [
    "/api/version",
    "/api/command-signing",
    "/api/auth/me",
    "/api/auth/change-password",
    "/api/auth/mfa/init",
    "/api/auth/mfa/verify",
    "/api/auth/mfa/disable",
    "/api/auth/passkeys",
    "/api/auth/passkeys/register/start",
    "/api/auth/passkeys/register/finish",
    "/api/auth/passkeys/{id}/remove",
];

/// The feature keys of `keys` a caller may store: each known, in the
/// catalogue's order, once; the unknown key is the error.
pub fn canonical(keys: &[String]) -> Result<Vec<String>, String> {
    Feature::canonicalize(keys)
}

/// The known features among stored keys (a key no longer in the
/// catalogue is dropped, never an error).
fn known(keys: &[String]) -> Vec<Feature> {
    keys.iter().filter_map(|k| Feature::parse(k)).collect()
}

/// The pages an account may use: `None` for all. An account in a group
/// gets the group's pages; a group that is gone leaves its own list, else
/// none but the commons (never all: a group always restricts).
pub fn effective(user: &UserRecord, group: Option<&PermissionGroupRecord>) -> Option<Vec<Feature>> {
    match (&user.permission_group, group) {
        (Some(_), Some(g)) => Some(known(&g.features)),
        (Some(_), None) => Some(
            user.allowed_features
                .as_deref()
                .map(known)
                .unwrap_or_default(),
        ),
        (None, _) => user.allowed_features.as_deref().map(known),
    }
}

/// The page that owns a route (by its matched pattern); `None`: commons.
pub fn feature_for_route(route: &str) -> Option<Feature> {
    Some(match route {
        "/api/inventory/jobs"
        | "/api/inventory/by-job/{manifest_id}"
        | "/api/inventory/{id}"
        | "/api/inventory/{id}/search/{field}"
        | "/api/inventory/{id}/search-scalars"
        | "/api/inventory/{id}/search/{field}/export"
        | "/api/inventory/{id}/history/pc/{pc_id}"
        | "/api/inventory/{id}/history/search"
        | "/api/inventory/{id}/history/first_seen" => Feature::Inventory,
        "/api/checks" | "/api/checks/{check_name}" => Feature::Compliance,
        "/api/results"
        | "/api/results/{result_id}"
        | "/api/results/{result_id}/tail"
        | "/api/executions"
        | "/api/executions/{exec_id}" => Feature::Activity,
        "/api/obs_events"
        | "/api/obs_events/kinds"
        | "/api/obs_events/sources"
        | "/api/obs_events/lane_seeds" => Feature::Events,
        "/api/audit" => Feature::Audit,
        "/api/views" | "/api/views/{id}" | "/api/views/{id}/yaml" => Feature::Views,
        "/api/analytics" => Feature::Analytics,
        "/api/agents/installer"
        | "/api/agents/installer.sh"
        | "/api/agents/installer.ps1"
        | "/api/agents/install-attempts"
        | "/api/agents/install-attempts/{id}" => Feature::AgentInstall,
        "/api/collect/bundles" | "/api/collect/bundles/{*key}" => Feature::Collect,
        "/api/agents/{pc_id}/logs" => Feature::Logs,
        "/api/jobs"
        | "/api/jobs/{id}"
        | "/api/jobs/{id}/yaml"
        | "/api/jobs/{id}/kill"
        | "/api/scripts/status"
        | "/api/scripts/{id}/revoke"
        | "/api/scripts/{id}/unrevoke" => Feature::Jobs,
        "/api/schedules"
        | "/api/schedules/coverage"
        | "/api/schedules/{id}"
        | "/api/schedules/{id}/yaml"
        | "/api/schedules/{id}/preview"
        | "/api/schedules/{id}/status"
        | "/api/schedules/{id}/coverage"
        | "/api/schedules/{id}/enable"
        | "/api/schedules/{id}/disable" => Feature::Schedules,
        "/api/group-defs"
        | "/api/group-defs/{id}"
        | "/api/group-defs/{id}/yaml"
        | "/api/group-defs/{id}/members"
        | "/api/groups"
        | "/api/groups/{name}/email" => Feature::Groups,
        "/api/notifications"
        | "/api/notifications/{id}"
        | "/api/notifications/{id}/ack_status"
        | "/api/notifications/{id}/recall" => Feature::Notifications,
        "/api/agents/releases"
        | "/api/agents/releases/{version}"
        | "/api/agents/rollout"
        | "/api/agents/publish" => Feature::Rollout,
        "/api/app-artifacts"
        | "/api/app-artifacts/{role}/{version}/{package}"
        | "/api/app-artifacts/{role}/{version}/{package}/metadata"
        | "/api/app-packages"
        | "/api/app-packages/{name}/{version}"
        | "/api/script-objects"
        | "/api/script-objects/{name}/{version}" => Feature::Apps,
        "/api/agents/{pc_id}/meta" | "/api/agents/{pc_id}/meta/key" => Feature::Agents,
        "/api/agents/{pc_id}/effective_config"
        | "/api/config"
        | "/api/config/defaults"
        | "/api/config/fields/{field}"
        | "/api/groups/{name}/config"
        | "/api/groups/{name}/config/fields/{field}"
        | "/api/groups/{name}/config/inherited"
        | "/api/pcs/{pc_id}/config"
        | "/api/pcs/{pc_id}/config/fields/{field}"
        | "/api/pcs/{pc_id}/config/inherited" => Feature::Config,
        "/api/jetstream/status" => Feature::Jetstream,
        "/api/run" => Feature::Run,
        "/api/exec/{job_id}"
        | "/api/deploy-plans"
        | "/api/deploy-plans/{plan_id}"
        | "/api/deploy-plans/{plan_id}/approve"
        | "/api/deploy-plans/{plan_id}/revoke" => Feature::Exec,
        "/api/server-settings"
        | "/api/server-settings/defaults"
        | "/api/server-settings/support-codes/{scope}"
        | "/api/server/restart"
        | "/api/admin/backup" => Feature::Settings,
        "/api/accounts"
        | "/api/accounts/{username}"
        | "/api/accounts/{username}/reset-link"
        | "/api/accounts/{username}/mfa"
        | "/api/accounts/{username}/passkeys"
        | "/api/query"
        | "/api/permission-groups"
        | "/api/permission-groups/{name}" => Feature::Accounts,
        _ => return None,
    })
}

/// Routes several pages read (pickers, shared lists): any one of their
/// features opens them, for reads only.
fn shared_owners(route: &str) -> Option<&'static [Feature]> {
    const PICKER: [Feature; 10] = [
        Feature::Run,
        Feature::Exec,
        Feature::Inventory,
        Feature::Activity,
        Feature::Events,
        Feature::Logs,
        Feature::Analytics,
        Feature::Notifications,
        Feature::Rollout,
        Feature::Config,
    ];
    const GROUPS: [Feature; 4] = [
        Feature::Groups,
        Feature::Config,
        Feature::Exec,
        Feature::Rollout,
    ];
    const JOBS: [Feature; 2] = [Feature::Jobs, Feature::Exec];
    // The pages whose tables can show metadata columns.
    const META: [Feature; 6] = [
        Feature::Agents,
        Feature::Inventory,
        Feature::Activity,
        Feature::Events,
        Feature::Compliance,
        Feature::Collect,
    ];
    match route {
        "/api/agents" => Some(&PICKER),
        "/api/agents/meta" | "/api/agents/meta-keys" => Some(&META),
        "/api/groups" => Some(&GROUPS),
        "/api/jobs" => Some(&JOBS),
        _ => None,
    }
}

/// Why a caller limited to `allowed` may not call `route` with `method`;
/// `None` when it may (always, for an unrestricted caller or a request
/// that matched no route).
pub fn denial(allowed: Option<&[Feature]>, method: &Method, route: Option<&str>) -> Option<String> {
    let (allowed, route) = (allowed?, route?);
    if RESTRICTED_COMMONS.contains(&route) {
        return None;
    }
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let Some(owners) = shared_owners(route).filter(|_| read) {
        return if owners.iter().any(|f| allowed.contains(f)) {
            None
        } else {
            Some("account not permitted to access this route".into())
        };
    }
    match feature_for_route(route) {
        Some(f) if allowed.contains(&f) => None,
        Some(f) => Some(format!(
            "account not permitted to access this page (requires {})",
            f.as_str()
        )),
        None => Some("account not permitted to access this route".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restricted_caller_reaches_its_pages_and_the_self_service_routes_only() {
        let jobs = [Feature::Jobs];
        let get = Method::GET;
        assert_eq!(denial(None, &get, Some("/api/audit")), None, "unrestricted");
        assert_eq!(denial(Some(&jobs), &get, Some("/api/jobs/{id}")), None);
        assert_eq!(denial(Some(&jobs), &get, Some("/api/auth/me")), None);
        assert!(denial(Some(&jobs), &get, Some("/api/audit"))
            .unwrap()
            .contains("requires audit"));
        assert!(
            denial(Some(&jobs), &get, Some("/api/agents/{pc_id}/perf")).is_some(),
            "commons"
        );
        assert!(denial(Some(&[]), &get, Some("/api/jobs")).is_some());
        // A shared list opens to any owner, for reads only.
        let exec = [Feature::Exec];
        assert_eq!(denial(Some(&exec), &get, Some("/api/jobs")), None);
        assert!(denial(Some(&exec), &Method::POST, Some("/api/jobs")).is_some());
        assert_eq!(denial(Some(&jobs), &get, None), None, "no route matched");
    }

    #[test]
    fn a_group_always_restricts_and_wins_over_the_account_list() {
        let mut user = UserRecord {
            allowed_features: Some(vec!["jobs".into(), "retired-page".into()]),
            ..Default::default()
        };
        assert_eq!(effective(&user, None), Some(vec![Feature::Jobs]));
        user.permission_group = Some("helpdesk".into());
        let group = PermissionGroupRecord {
            name: "helpdesk".into(),
            features: vec!["audit".into()],
            ..Default::default()
        };
        assert_eq!(effective(&user, Some(&group)), Some(vec![Feature::Audit]));
        assert_eq!(
            effective(&user, None),
            Some(vec![Feature::Jobs]),
            "a vanished group"
        );
        user.allowed_features = None;
        assert_eq!(effective(&user, None), Some(vec![]), "never all pages");
        user.permission_group = None;
        assert_eq!(effective(&user, None), None);
    }
}
