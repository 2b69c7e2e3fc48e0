//! The exec pipeline, shared by `POST /api/exec/{job}` and the scheduler:
//! check everything the caller sent before touching anything, then pin
//! `script_current`, record the `executions` row, keep delayed rollout
//! waves in redb (they survive a restart), publish the rest and audit.

use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

use kanade_shared::kv::{
    BUCKET_SCRIPT_CURRENT, BUCKET_SERVER_SETTINGS, KEY_SERVER_SETTINGS, OBJECT_SCRIPTS,
};
use kanade_shared::manifest::{Execute, FanoutPlan, Manifest, Target, Tier};
use kanade_shared::subject;
use kanade_shared::wire::ServerSettings;
use kanade_shared::wire::{Command, RetrySpec};
use kanade_storage::{ExecutionRecord, PendingWave};
use serde::Serialize;

use super::{check_token, parse_duration, Control, Error, Result};
use crate::audit::Caller;

/// What an accepted exec answers (the CLI reads every field).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExecOutcome {
    pub exec_id: String,
    pub job_id: String,
    pub version: String,
    pub target_count: u32,
    pub subjects: Vec<String>,
}

/// Who asked for the exec: the audit actor and `initiated_by`.
#[derive(Debug, Clone)]
pub struct Initiator<'a> {
    /// `operator` (HTTP) or `scheduler`.
    pub actor: &'static str,
    pub caller: Option<&'a Caller>,
}

/// Where the script comes from, resolved once per exec.
struct ScriptSource {
    inline: String,
    object: Option<(String, String)>,
}

/// One publish of the exec: now, or after `delay` (a rollout wave).
#[derive(Debug)]
struct Dispatch {
    subject: String,
    delay: std::time::Duration,
}

impl Control {
    /// Fans `manifest` out to `plan`'s targets. Nothing is written or
    /// published unless every input checks out.
    pub async fn exec(
        &self,
        manifest: &Manifest,
        plan: &FanoutPlan,
        by: Initiator<'_>,
        retry: Option<RetrySpec>,
    ) -> Result<ExecOutcome> {
        let shell = manifest.execute.require_shell().map_err(|e| {
            Error::invalid(
                "execute",
                format!("typed operations are not dispatched: {e}"),
            )
        })?;
        let controller_plan;
        let plan = if requires_controller(manifest) {
            controller_plan = self.controller_plan(plan).await?;
            &controller_plan
        } else {
            plan
        };
        let dispatches = plan_dispatches(plan)?;
        shell
            .validate_script_source()
            .map_err(|m| Error::invalid("execute", m))?;
        let script = self.resolve_script(shell).await?;
        let timeout = parse_duration("execute.timeout", &shell.timeout)?;
        let jitter = match plan.jitter.as_deref() {
            Some(j) => Some(parse_duration("jitter", j)?.as_secs()),
            None => None,
        };
        let exec_id = uuid::Uuid::new_v4().to_string();
        let target_count = self.target_count(plan, dispatches.len()).await;
        let now = Utc::now();
        if let Err(e) = self
            .put(
                BUCKET_SCRIPT_CURRENT,
                &manifest.id,
                manifest.version.clone(),
            )
            .await
        {
            tracing::warn!(job = %manifest.id, error = %e, "script_current not pinned");
        }
        self.store.insert_execution(&ExecutionRecord {
            exec_id: exec_id.clone(),
            job_id: manifest.id.clone(),
            version: manifest.version.clone(),
            initiated_by: by.actor.to_string(),
            initiated_at: now,
            target_count: i64::from(target_count),
            status: "pending".into(),
            ..Default::default()
        })?;
        let command = |deadline_at: Option<DateTime<Utc>>| Command {
            id: manifest.id.clone(),
            version: manifest.version.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            exec_id: Some(exec_id.clone()),
            command_kind: Default::default(),
            bypass_local_limit: shell.bypass_local_limit,
            shell: shell.shell.into(),
            script: script.inline.clone(),
            script_object: script.object.as_ref().map(|o| o.0.clone()),
            script_object_sha256: script.object.as_ref().map(|o| o.1.clone()),
            timeout_secs: timeout.as_secs(),
            jitter_secs: jitter,
            run_as: shell.run_as,
            cwd: shell.cwd.clone(),
            deadline_at,
            staleness: manifest.staleness.clone(),
            emit: manifest.emit.clone(),
            check: manifest.check.clone(),
            collect: manifest.collect.clone(),
            retry,
            finalize: manifest.finalize.as_ref().map(|f| f.lower()),
        };
        let mut later = Vec::new();
        for (i, d) in dispatches.iter().enumerate() {
            let payload = encode(&command(plan.deadline_at))?;
            if d.delay.is_zero() {
                self.publish(d.subject.clone(), payload).await?;
            } else {
                let due_at = chrono::Duration::from_std(d.delay)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .ok_or_else(|| {
                        Error::invalid(format!("rollout.waves[{i}].delay"), "too far in the future")
                    })?;
                later.push(PendingWave {
                    exec_id: exec_id.clone(),
                    wave: i as u32,
                    due_at,
                    subject: d.subject.clone(),
                    payload,
                });
            }
        }
        if !later.is_empty() {
            self.store.insert_pending_waves(&later)?;
        }
        self.flush().await;
        let outcome = ExecOutcome {
            exec_id,
            job_id: manifest.id.clone(),
            version: manifest.version.clone(),
            target_count,
            subjects: dispatches.into_iter().map(|d| d.subject).collect(),
        };
        self.audit_exec(&outcome, plan, &by).await;
        Ok(outcome)
    }

    async fn audit_exec(&self, o: &ExecOutcome, plan: &FanoutPlan, by: &Initiator<'_>) {
        crate::audit::record(
            &self.nats,
            by.actor,
            "exec",
            Some(&o.job_id),
            by.caller,
            serde_json::json!({
                "exec_id": o.exec_id,
                "subjects": o.subjects,
                "target_count": o.target_count,
                "version": o.version,
                "wave_mode": plan.rollout.as_ref().is_some_and(|r| !r.waves.is_empty()),
            }),
        )
        .await;
    }

    /// Live PCs the exec expects an answer from (at least 1); when the
    /// roster cannot be read, one per subject.
    async fn target_count(&self, plan: &FanoutPlan, subjects: usize) -> u32 {
        let target = match &plan.rollout {
            Some(r) => kanade_shared::manifest::Target {
                groups: r.waves.iter().map(|w| w.group.clone()).collect(),
                ..Default::default()
            },
            None => plan.target.clone(),
        };
        match self.roster(&target, true).await {
            Ok(pcs) => u32::try_from(pcs.len()).unwrap_or(u32::MAX).max(1),
            Err(e) => {
                tracing::warn!(error = %e, "roster unavailable; target_count from subjects");
                u32::try_from(subjects).unwrap_or(u32::MAX)
            }
        }
    }

    /// `plan` narrowed to the live members of the controller group (the
    /// trusted runners of `tier: controller` jobs), addressed one by one.
    /// No controller group, or none of its members live in the target,
    /// is a conflict naming why: such a job never reaches another PC.
    async fn controller_plan(&self, plan: &FanoutPlan) -> Result<FanoutPlan> {
        if plan.rollout.as_ref().is_some_and(|r| !r.waves.is_empty()) {
            return Err(Error::Conflict(
                "tier: controller jobs can't use rollout waves — the controller tier targets trusted runners, not a fleet rollout".into(),
            ));
        }
        let settings: Option<ServerSettings> = self
            .get_json(BUCKET_SERVER_SETTINGS, KEY_SERVER_SETTINGS)
            .await?;
        let Some(group) = settings
            .as_ref()
            .and_then(|s| s.effective_controller_group())
        else {
            return Err(Error::Conflict(
                "tier: controller but no controller_group is configured (server settings) — refusing to dispatch (fail-safe)".into(),
            ));
        };
        let controllers = Target {
            groups: vec![group.to_string()],
            ..Default::default()
        };
        let members: BTreeSet<String> =
            self.roster(&controllers, true).await?.into_iter().collect();
        let wanted: BTreeSet<String> = if plan.target.all {
            members.clone()
        } else {
            self.roster(&plan.target, false)
                .await?
                .into_iter()
                .collect()
        };
        let pcs: Vec<String> = wanted.intersection(&members).cloned().collect();
        if pcs.is_empty() {
            return Err(Error::Conflict(format!(
                "no online member of controller_group '{group}' matches this target — a tier: controller job needs a live controller runner"
            )));
        }
        Ok(FanoutPlan {
            target: Target {
                pcs,
                ..Default::default()
            },
            ..plan.clone()
        })
    }

    /// Inline script, or the object-store entry with its sha256 (hex).
    async fn resolve_script(&self, m: &Execute) -> Result<ScriptSource> {
        if let Some(s) = m.script.as_deref().filter(|s| !s.is_empty()) {
            return Ok(ScriptSource {
                inline: s.to_string(),
                object: None,
            });
        }
        let Some(key) = m.script_object.as_deref() else {
            return Err(Error::invalid(
                "execute",
                "one of `script` or `script_object` must be set (a `script_file` is inlined by the CLI)",
            ));
        };
        let store = self
            .js
            .get_object_store(OBJECT_SCRIPTS)
            .await
            .map_err(|e| {
                Error::Unavailable(format!("object store `{OBJECT_SCRIPTS}` unavailable: {e}"))
            })?;
        let info = store.info(key).await.map_err(|e| {
            Error::NotFound(format!(
                "script_object {key:?} not found in `{OBJECT_SCRIPTS}`: {e}"
            ))
        })?;
        let digest = info
            .digest
            .as_deref()
            .ok_or_else(|| Error::Broker(format!("script_object {key:?} has no digest")))?;
        Ok(ScriptSource {
            inline: String::new(),
            object: Some((key.to_string(), digest_hex(key, digest)?)),
        })
    }
}

/// Whether `m` may only run on the controller group: `tier: controller`,
/// or a job that feeds a table (its output is trusted).
fn requires_controller(m: &Manifest) -> bool {
    m.tier == Some(Tier::Controller) || !m.feed.is_empty()
}

/// The subjects of `plan`, each with its delay, after checking every
/// name and delay the caller sent.
fn plan_dispatches(plan: &FanoutPlan) -> Result<Vec<Dispatch>> {
    if let Some(rollout) = &plan.rollout {
        let mut out = Vec::with_capacity(rollout.waves.len());
        for (i, w) in rollout.waves.iter().enumerate() {
            check_token(&format!("rollout.waves[{i}].group"), &w.group)?;
            out.push(Dispatch {
                subject: subject::commands_group(&w.group),
                delay: parse_duration(&format!("rollout.waves[{i}].delay"), &w.delay)?,
            });
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    let t = &plan.target;
    if !t.is_specified() {
        return Err(Error::invalid(
            "target",
            "must specify at least one of `all` / `groups` / `pcs` (or set `rollout.waves`)",
        ));
    }
    let now = |subject| Dispatch {
        subject,
        delay: std::time::Duration::ZERO,
    };
    let mut out = Vec::new();
    if t.all {
        out.push(now(subject::COMMANDS_ALL.to_string()));
    }
    for g in &t.groups {
        check_token("target.groups", g)?;
        out.push(now(subject::commands_group(g)));
    }
    for pc in &t.pcs {
        check_token("target.pcs", pc)?;
        out.push(now(subject::commands_pc(pc)));
    }
    Ok(out)
}

fn encode(c: &Command) -> Result<String> {
    serde_json::to_string(c).map_err(|e| Error::Broker(format!("encode command: {e}")))
}

/// `SHA-256=<base64url>` (the object store's digest) as lowercase hex.
fn digest_hex(key: &str, digest: &str) -> Result<String> {
    use base64::Engine;
    let b64 = digest.strip_prefix("SHA-256=").unwrap_or(digest);
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
        .map_err(|e| Error::Broker(format!("digest of {key:?} does not decode: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanade_shared::manifest::{Rollout, Target, Wave};

    #[test]
    fn subjects_follow_the_target_and_bad_names_are_refused() {
        let plan = FanoutPlan {
            target: Target {
                all: true,
                groups: vec!["canary".into()],
                pcs: vec!["PC-1".into()],
            },
            ..Default::default()
        };
        let subjects: Vec<_> = plan_dispatches(&plan)
            .unwrap()
            .into_iter()
            .map(|d| d.subject)
            .collect();
        assert_eq!(
            subjects,
            ["commands.all", "commands.group.canary", "commands.pc.PC-1"]
        );
        let empty = plan_dispatches(&FanoutPlan::default()).unwrap_err();
        assert!(empty.to_string().contains("`target`"), "{empty}");
        let bad = FanoutPlan {
            target: Target {
                pcs: vec!["a.b".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(plan_dispatches(&bad)
            .unwrap_err()
            .to_string()
            .contains("target.pcs"));
    }

    #[test]
    fn waves_carry_their_delays_and_a_bad_delay_names_its_wave() {
        let plan = |delay: &str| FanoutPlan {
            rollout: Some(Rollout {
                strategy: Default::default(),
                waves: vec![
                    Wave {
                        group: "canary".into(),
                        delay: "0s".into(),
                    },
                    Wave {
                        group: "rest".into(),
                        delay: delay.into(),
                    },
                ],
            }),
            ..Default::default()
        };
        let d = plan_dispatches(&plan("10m")).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].subject, "commands.group.rest");
        assert_eq!(d[1].delay, std::time::Duration::from_secs(600));
        let err = plan_dispatches(&plan("soon")).unwrap_err().to_string();
        assert!(err.contains("rollout.waves[1].delay"), "{err}");
    }

    #[test]
    fn object_digests_become_hex() {
        // sha256("") in the object store's spelling.
        let d = "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            digest_hex("k", d).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(digest_hex("k", "SHA-256=???").is_err());
    }
}
