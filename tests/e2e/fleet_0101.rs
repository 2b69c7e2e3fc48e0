//! A kanade 0.101 fleet against our backend: signed commands checked as an
//! enforcing agent checks them, declared groups reaching 0.101 agents
//! through `agent_groups_derived` beside 0.43 agents on hand-set groups,
//! manifests kept whole, the controller tier and `once_per_version`.
//! Real nats-server, the real binary, real HTTP; the agents are stand-ins
//! that follow the agents' rules (subjects, KV membership, signatures).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{
    error_of, eventually, js_publish_bytes, json_body, publish_json, yaml, Backend, Nats, TOKEN,
};
use chrono::Utc;
use futures::StreamExt;
use kanade_shared::manifest::Manifest;
use kanade_shared::signing::{self, KeyPolicy, KeyRing, SigHeaders};
use kanade_shared::wire::{AgentGroups, Command};
use reqwest::Method;
use serde_json::{json, Value};

/// Scheduler cadences for tests.
const FAST: &str = "[scheduler]\nreconcile_interval_secs = 1\nlease_ttl_secs = 3\n";

const JOB_YAML: &str =
    "id: patch\nversion: '1'\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 1m\n";

/// A call with the service token, as the CLI makes it.
async fn send(
    b: &Backend,
    method: Method,
    path: &str,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    crate::common::send(b, method, path, TOKEN, body).await
}

/// Which agent generation a stand-in plays.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Generation {
    /// Joins only the groups of `agent_groups`; ignores signatures.
    V043,
    /// Waits for `agent_groups_derived` and joins the union; with a key
    /// ring it enforces signed commands (refusing with exit 123).
    V0101,
}

/// What a stand-in agent received and how it judged it.
#[derive(Clone, Debug)]
struct Seen {
    subject: String,
    /// `Ok` when verified (or not checked), else the refusal reason.
    verdict: Result<(), String>,
    payload: Value,
}

#[derive(Clone)]
struct Agent {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The groups it has joined so far (as read from KV).
    groups: Arc<Mutex<Option<BTreeSet<String>>>>,
}

impl Agent {
    /// Starts the agent `pc`: heartbeats every second, follows its group
    /// membership from KV and answers each command meant for it.
    async fn start(
        nats: &Nats,
        pc: &'static str,
        generation: Generation,
        ring: Option<KeyRing>,
    ) -> Self {
        let groups: Arc<Mutex<Option<BTreeSet<String>>>> = Arc::default();
        let agent = Agent {
            seen: Arc::default(),
            groups: Arc::clone(&groups),
        };
        let client = nats.client().await;
        tokio::spawn(follow_groups(
            client.clone(),
            pc,
            generation,
            Arc::clone(&groups),
        ));
        tokio::spawn(heartbeats(client.clone(), pc, generation, ring.is_some()));
        let mut sub = client.subscribe("commands.>").await.unwrap();
        let mut notes = client.subscribe("notifications.>").await.unwrap();
        client.flush().await.unwrap();
        let for_me = {
            let groups = Arc::clone(&groups);
            move |subject: &str, prefix: &str| -> bool {
                let rest = &subject[prefix.len()..];
                if rest == "all" {
                    return true;
                }
                if let Some(p) = rest.strip_prefix("pc.") {
                    return p == pc;
                }
                let joined = groups.lock().unwrap().clone().unwrap_or_default();
                rest.strip_prefix("group.")
                    .is_some_and(|g| joined.contains(g))
            }
        };
        let (seen, fm) = (Arc::clone(&agent.seen), for_me.clone());
        tokio::spawn(async move {
            while let Some(m) = notes.next().await {
                if fm(&m.subject, "notifications.") {
                    seen.lock().unwrap().push(Seen {
                        subject: m.subject.to_string(),
                        verdict: Ok(()),
                        payload: serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
                    });
                }
            }
        });
        let seen = Arc::clone(&agent.seen);
        let js = async_nats::jetstream::new(client.clone());
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if !for_me(&m.subject, "commands.") {
                    continue;
                }
                let verdict = match &ring {
                    None => Ok(()),
                    Some(ring) => verify(ring, &m),
                };
                let payload: Value = serde_json::from_slice(&m.payload).unwrap();
                seen.lock().unwrap().push(Seen {
                    subject: m.subject.to_string(),
                    verdict: verdict.clone(),
                    payload,
                });
                let cmd: Command = serde_json::from_slice(&m.payload).unwrap();
                answer(&js, pc, &cmd, verdict).await;
            }
        });
        agent
    }

    /// Whether it has joined `group` (a group command sent before that
    /// is not for it, as for a real agent not yet subscribed).
    fn joined(&self, group: &str) -> bool {
        self.groups
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|g| g.contains(group))
    }

    fn subjects(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.subject.clone())
            .collect()
    }

    fn commands(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.subject.starts_with("commands."))
            .cloned()
            .collect()
    }
}

/// The agent's signature check: the four headers, the ring, the clock.
fn verify(ring: &KeyRing, m: &async_nats::Message) -> Result<(), String> {
    let get = |name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let headers = SigHeaders {
        sig_b64: get(signing::SIG),
        kid: get(signing::SIG_KID),
        alg: get(signing::SIG_ALG),
        at_ms: get(signing::SIG_AT),
    };
    signing::verify(ring, &m.payload, &headers, Utc::now().timestamp_millis())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Started event and result as an agent sends them; a refused command
/// gets the agent's exit 123, not skipped.
async fn answer(
    js: &async_nats::jetstream::Context,
    pc: &str,
    cmd: &Command,
    verdict: Result<(), String>,
) {
    let now = Utc::now();
    let result_id = format!("{}-{pc}", cmd.request_id);
    let exec_id = cmd.exec_id.clone().unwrap_or_default();
    let (code, stderr, skipped) = match &verdict {
        Ok(()) => (0, String::new(), false),
        Err(e) => (123, format!("refused: {e}"), false),
    };
    if verdict.is_ok() {
        let started = json!({
            "result_id": result_id, "request_id": cmd.request_id, "exec_id": exec_id,
            "pc_id": pc, "started_at": now, "manifest_id": cmd.id, "version": cmd.version,
        });
        js_publish_bytes(
            js,
            format!("events.started.{exec_id}.{pc}"),
            serde_json::to_vec(&started).unwrap(),
        )
        .await;
    }
    let result = json!({
        "result_id": result_id, "request_id": cmd.request_id, "exec_id": cmd.exec_id,
        "pc_id": pc, "exit_code": code, "stdout": "ok", "stderr": stderr,
        "started_at": now, "finished_at": now, "manifest_id": cmd.id, "skipped": skipped,
    });
    js_publish_bytes(
        js,
        format!("results.{}", cmd.request_id),
        serde_json::to_vec(&result).unwrap(),
    )
    .await;
}

async fn heartbeats(client: async_nats::Client, pc: &str, generation: Generation, enforcing: bool) {
    loop {
        let mut hb = json!({"pc_id": pc, "at": Utc::now(), "hostname": pc});
        match generation {
            Generation::V043 => hb["agent_version"] = json!("0.43.56"),
            Generation::V0101 => {
                hb["agent_version"] = json!("0.101.0");
                hb["agent_arch"] = json!("x86_64");
                hb["enforcing"] = json!(enforcing);
                hb["command_keys"] = json!(["test-kid:0011223344556677"]);
                hb["command_protocols"] = json!(["legacy", "kanade.command.v2"]);
                hb["last_logon_user"] = json!("CORP\\alice");
                hb["last_logon_display_name"] = json!("Alice");
            }
        }
        publish_json(&client, format!("heartbeat.{pc}"), &hb).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Membership as each generation reads it: 0.43 from `agent_groups`,
/// 0.101 from both buckets, joining nothing until the derived one exists.
async fn follow_groups(
    client: async_nats::Client,
    pc: &str,
    generation: Generation,
    groups: Arc<Mutex<Option<BTreeSet<String>>>>,
) {
    let js = async_nats::jetstream::new(client);
    loop {
        let read = async {
            let mut joined = BTreeSet::new();
            let mut buckets = vec!["agent_groups"];
            if generation == Generation::V0101 {
                buckets.push("agent_groups_derived");
            }
            for bucket in buckets {
                let kv = js.get_key_value(bucket).await.ok()?;
                if let Ok(Some(v)) = kv.get(pc).await {
                    let g: AgentGroups = serde_json::from_slice(&v).ok()?;
                    joined.extend(g.groups);
                }
            }
            Some(joined)
        };
        if let Some(joined) = read.await {
            *groups.lock().unwrap() = Some(joined);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A command-signing key made by `kanade-backend command-key-generate`:
/// the environment it prints, and the ring an agent builds from it.
fn generated_key(kid: &str) -> (Vec<(String, String)>, KeyRing) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
        .args(["command-key-generate", "--kid", kid])
        .env_remove("KANADE_COMMAND_SIGNING_KID")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let env: Vec<(String, String)> = text
        .lines()
        .filter(|l| l.starts_with("KANADE_COMMAND_SIGNING_"))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(env.len(), 2, "{text}");
    let secret = &env.iter().find(|(k, _)| k.ends_with("_KEY")).unwrap().1;
    let public = signing::decode_secret(secret).unwrap().verifying_key();
    // The keyring entry printed for the agents names the same key.
    let entry = signing::keyring_entry(kid, &public, "backend").to_string();
    assert!(text.contains(&entry), "{text}");
    let mut ring = KeyRing::new();
    ring.insert(kid, public, KeyPolicy::backend("backend"));
    (env, ring)
}

async fn register_job(b: &Backend, text: &str) {
    eventually("jobs bucket ready", || async {
        let (status, body) = send(b, Method::POST, "/api/jobs", yaml(text)).await;
        match status {
            200 => Some(()),
            503 => None,
            _ => panic!("{status} {body}"),
        }
    })
    .await;
}

async fn exec(b: &Backend, job: &str, target: Value) -> (u16, Value) {
    send(
        b,
        Method::POST,
        &format!("/api/exec/{job}"),
        json_body(json!({ "target": target })),
    )
    .await
}

async fn kv_put(nats: &Nats, bucket: &str, key: &str, value: Value) {
    let js = async_nats::jetstream::new(nats.client().await);
    let kv = eventually("bucket exists", || async {
        js.get_key_value(bucket).await.ok()
    })
    .await;
    kv.put(key, value.to_string().into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_fleet_gets_signed_commands_group_execs_schedules_and_notifications() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let (env, ring) = generated_key("test-kid");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let b = Backend::start_with_env(&nats.url, &dir.path().join("data"), FAST, &env);

    let old = Agent::start(&nats, "PC-OLD", Generation::V043, None).await;
    let new = Agent::start(&nats, "PC-NEW", Generation::V0101, Some(ring.clone())).await;
    let out = Agent::start(&nats, "PC-OUT", Generation::V0101, Some(ring.clone())).await;

    // The backend says which key signs.
    let (status, id) = send(&b, Method::GET, "/api/command-signing", None).await;
    assert_eq!(status, 200);
    assert_eq!(id["kid"], "test-kid", "{id}");
    let (_, key, _) = ring.get("test-kid").unwrap();
    assert_eq!(id["fingerprint"], json!(signing::fingerprint(key)));

    // PC-OLD joins `legacy` by hand; PC-NEW joins `clients` declared.
    eventually("membership set", || async {
        let body = json_body(json!({"groups": ["legacy"]}));
        (send(&b, Method::PUT, "/api/agents/PC-OLD/groups", body)
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    let def = "id: clients\ndescription: the desks\nmembers: [PC-NEW]\ntags: [office]\n";
    let (status, summary) = eventually("group_defs ready", || async {
        let r = send(&b, Method::POST, "/api/group-defs", yaml(def)).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary,
        json!({"id": "clients", "description": "the desks", "kind": "static", "member_count": 1, "tags": ["office"]})
    );
    let js = async_nats::jetstream::new(nats.client().await);
    eventually("PC-NEW derived into clients", || async {
        let kv = js.get_key_value("agent_groups_derived").await.ok()?;
        let v = kv.get("PC-NEW").await.ok()??;
        let g: AgentGroups = serde_json::from_slice(&v).ok()?;
        (g.groups == ["clients"]).then_some(())
    })
    .await;
    let (_, groups) = send(&b, Method::GET, "/api/groups", None).await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["clients", "legacy"], "{groups}");

    // Group execs reach exactly their members, signed.
    register_job(&b, JOB_YAML).await;
    eventually("the agents are alive", || async {
        let (_, agents) = send(&b, Method::GET, "/api/agents", None).await;
        (agents.as_array()?.len() == 3).then_some(())
    })
    .await;
    eventually("the agents joined their groups", || async {
        (old.joined("legacy") && new.joined("clients")).then_some(())
    })
    .await;
    for (group, member) in [("legacy", &old), ("clients", &new)] {
        let (status, body) = exec(&b, "patch", json!({"groups": [group]})).await;
        assert_eq!(status, 200, "{body}");
        let subject = format!("commands.group.{group}");
        eventually("the member got it", || async {
            member.subjects().contains(&subject).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(old.subjects(), ["commands.group.legacy"]);
    assert_eq!(new.subjects(), ["commands.group.clients"]);
    assert_eq!(out.subjects(), Vec::<String>::new());
    let verdicts: Vec<_> = new.commands().into_iter().map(|s| s.verdict).collect();
    assert_eq!(
        verdicts,
        [Ok(())],
        "the enforcing agent verified the command"
    );

    // A group schedule fires at exactly the members of the declared group
    // (a job none of them ran yet: `once` skips who already succeeded).
    register_job(&b, &JOB_YAML.replace("id: patch", "id: desk-check")).await;
    let (status, body) = send(
        &b,
        Method::POST,
        "/api/schedules",
        yaml("id: desks\njob_id: desk-check\nwhen: {per_pc: once}\ntarget: {groups: [clients]}\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually("the schedule fired at PC-NEW", || async {
        new.subjects()
            .contains(&"commands.pc.PC-NEW".to_string())
            .then_some(())
    })
    .await;

    // Group notifications too.
    for (group, member) in [("clients", &new), ("legacy", &old)] {
        let note = json!({"title": format!("hello {group}"), "body": "b", "priority": "info", "target": {"groups": [group]}});
        let (status, body) = send(&b, Method::POST, "/api/notifications", json_body(note)).await;
        assert_eq!(status, 200, "{body}");
        let subject = format!("notifications.group.{group}");
        eventually("the member got the notification", || async {
            member.subjects().contains(&subject).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        old.subjects(),
        ["commands.group.legacy", "notifications.group.legacy"]
    );
    assert_eq!(
        new.subjects(),
        [
            "commands.group.clients",
            "commands.pc.PC-NEW",
            "notifications.group.clients"
        ]
    );
    assert_eq!(out.subjects(), Vec::<String>::new());

    // An unsigned command is refused by the enforcing agent: exit 123,
    // a failure, kept out of check status.
    let unsigned = json!({"id": "patch", "version": "1", "request_id": "forged-1", "shell": "sh", "script": "rm -rf /", "timeout_secs": 5});
    let client = nats.client().await;
    publish_json(&client, "commands.pc.PC-OUT".into(), &unsigned).await;
    let verdict = eventually("the forged command refused", || async {
        let seen = out.commands();
        let s = seen.first()?;
        Some(s.verdict.clone())
    })
    .await;
    assert_eq!(verdict, Err("no signature".to_string()));
    let failed = eventually("the refusal recorded as a failure", || async {
        let (_, rows) = send(
            &b,
            Method::GET,
            "/api/results?status=failure&pc_id=PC-OUT",
            None,
        )
        .await;
        let rows = rows.as_array()?.clone();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(failed[0]["exit_code"], 123);
    assert_eq!(failed[0]["skipped"], false);

    // The 0.101 heartbeat facts are kept on the agent and shown.
    let (_, agent) = send(&b, Method::GET, "/api/agents/PC-NEW", None).await;
    assert_eq!(agent["enforcing"], true, "{agent}");
    assert_eq!(agent["agent_arch"], "x86_64");
    assert_eq!(agent["command_keys"], json!(["test-kid:0011223344556677"]));
    assert_eq!(
        agent["command_protocols"],
        json!(["legacy", "kanade.command.v2"])
    );
    assert_eq!(agent["last_logon_user"], "CORP\\alice");
    let (_, agent) = send(&b, Method::GET, "/api/agents/PC-OLD", None).await;
    assert!(agent.get("enforcing").is_none(), "{agent}");
    let (_, versions) = send(&b, Method::GET, "/api/agents/versions", None).await;
    assert_eq!(
        versions,
        json!([{"version": "0.101.0", "total": 2, "active": 2}, {"version": "0.43.56", "total": 1, "active": 1}])
    );
}

/// Every manifest field 0.101 added, as an operator writes them.
const FULL_0101_JOB: &str = r#"# a controller job with every 0.101 field
id: vuln-feed
version: '2.1'
description: pulls the vulnerability feed
tier: controller
tags: [security, nightly]
origin:
  path: jobs/vuln-feed.yaml
  repo: git@example.com:ops/kanade-jobs.git
execute:
  shell: pwsh
  script: |
    Invoke-RestMethod https://feed.example.com/cves.json
  timeout: 10m
  bypass_local_limit: true
collect:
  name: evidence
  description: the raw feed
  max_size: 20MB
  files_field: paths
finalize:
  shell: pwsh
  script: Write-Output done
  timeout: 30s
  on_each_bundle: true
feed:
  - id: cves
    field: items
    primary_key: [cve_id]
check:
  name: feed-fresh
  label: Feed freshness
  health: false
  alert:
    on: [fail, warn]
    notify_groups: [secops]
    priority: warn
    require_ack: true
    toast: true
    title: The feed is stale
    body: check the controller
client:
  name: Refresh feed
  category: maintenance
  category_label: Maintenance
  category_icon: wrench
  category_order: 3
  visible_to: {groups: [secops]}
  confirm: {message: Refresh now?}
  unlock: support
"#;

#[tokio::test(flavor = "multi_thread")]
async fn manifests_are_kept_whole_and_controller_jobs_reach_only_the_controller_group() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), FAST);
    let ctl = Agent::start(&nats, "PC-CTL", Generation::V0101, None).await;
    let desk = Agent::start(&nats, "PC-DESK", Generation::V0101, None).await;

    register_job(&b, FULL_0101_JOB).await;
    // The YAML comes back byte for byte; the catalog holds every field.
    let resp = reqwest::Client::new()
        .get(format!("{}/api/jobs/vuln-feed/yaml", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), FULL_0101_JOB);
    let written: Manifest = serde_yaml::from_str(FULL_0101_JOB).unwrap();
    let js = async_nats::jetstream::new(nats.client().await);
    let stored = js
        .get_key_value("jobs")
        .await
        .unwrap()
        .get("vuln-feed")
        .await
        .unwrap()
        .unwrap();
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored, serde_json::to_value(&written).unwrap());
    for field in [
        "tier", "tags", "origin", "collect", "finalize", "feed", "client",
    ] {
        assert!(stored.get(field).is_some(), "{field} dropped: {stored}");
    }
    assert_eq!(stored["check"]["alert"]["title"], "The feed is stale");
    assert_eq!(stored["execute"]["shell"], "pwsh");
    let (_, jobs) = send(&b, Method::GET, "/api/jobs", None).await;
    assert_eq!(jobs[0]["tier"], "controller", "{jobs}");

    // A typo is refused naming the key; so is a tier nobody knows.
    let (status, err) = send(
        &b,
        Method::POST,
        "/api/jobs",
        yaml(&JOB_YAML.replace("id: patch", "id: patch\ntierr: controller")),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("tierr"), "{err}");
    let (status, err) = send(
        &b,
        Method::POST,
        "/api/jobs",
        yaml(&format!("{JOB_YAML}tier: edge\n")),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("tier"), "{err}");

    // No controller group: refused, naming why; nothing published.
    eventually("the agents are alive", || async {
        let (_, agents) = send(&b, Method::GET, "/api/agents", None).await;
        (agents.as_array()?.len() == 2).then_some(())
    })
    .await;
    let (status, err) = exec(&b, "vuln-feed", json!({"all": true})).await;
    assert_eq!(status, 409, "{err}");
    assert!(error_of(&err).contains("controller_group"), "{err}");

    // With one: only its live members, addressed one by one.
    let (status, body) = send(
        &b,
        Method::POST,
        "/api/group-defs",
        json_body(json!({"id": "controllers", "members": ["PC-CTL"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    kv_put(
        &nats,
        "server_settings",
        "current",
        json!({"controller_group": "controllers"}),
    )
    .await;
    eventually("PC-CTL derived into controllers", || async {
        let kv = js.get_key_value("agent_groups_derived").await.ok()?;
        kv.get("PC-CTL").await.ok()?.map(|_| ())
    })
    .await;
    let (status, body) = exec(&b, "vuln-feed", json!({"all": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subjects"], json!(["commands.pc.PC-CTL"]), "{body}");
    let (status, err) = exec(&b, "vuln-feed", json!({"pcs": ["PC-DESK"]})).await;
    assert_eq!(status, 409, "{err}");
    eventually("the controller ran it", || async {
        (!ctl.commands().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(desk.subjects(), Vec::<String>::new());
    // The command carries what the agent needs for collect and finalize.
    let cmd = &ctl.commands()[0].payload;
    assert_eq!(cmd["shell"], "pwsh");
    assert_eq!(cmd["bypass_local_limit"], true);
    assert_eq!(cmd["collect"]["files_field"], "paths", "{cmd}");
    assert_eq!(cmd["finalize"]["on_each_bundle"], true, "{cmd}");
    assert_eq!(cmd["finalize"]["timeout_secs"], 30, "{cmd}");
}

#[tokio::test(flavor = "multi_thread")]
async fn once_per_version_fires_once_per_pc_and_version_across_restarts() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, FAST);
    let one = Agent::start(&nats, "PC-1", Generation::V0101, None).await;
    let two = Agent::start(&nats, "PC-2", Generation::V043, None).await;
    register_job(&b, JOB_YAML).await;
    let (status, body) = send(
        &b,
        Method::POST,
        "/api/schedules",
        yaml("id: rollout\njob_id: patch\nwhen: {per_pc: once_per_version}\ntarget: {pcs: [PC-1, PC-2]}\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let fired = |a: &Agent, version: &str| {
        a.commands()
            .iter()
            .filter(|s| s.payload["version"] == version)
            .count()
    };
    eventually("version 1 reached both", || async {
        (fired(&one, "1") == 1 && fired(&two, "1") == 1).then_some(())
    })
    .await;
    // Its successes are recorded; a restart fires nothing more.
    eventually("both covered", || async {
        let (_, cov) = send(&b, Method::GET, "/api/schedules/rollout/coverage", None).await;
        (cov["ok"] == 2).then_some(())
    })
    .await;
    b.sigterm();
    let b = Backend::start(&nats.url, &data, FAST);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((fired(&one, "1"), fired(&two, "1")), (1, 1));
    // A new version re-arms every PC, once.
    register_job(&b, &JOB_YAML.replace("version: '1'", "version: '2'")).await;
    eventually("version 2 reached both", || async {
        (fired(&one, "2") == 1 && fired(&two, "2") == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(one.commands().len() + two.commands().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn group_definitions_are_checked_listed_and_removed() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let def = "# desks\nid: desks\nmembers: [PC-1, PC-2]\n";
    let created = eventually("group_defs ready", || async {
        let r = send(&b, Method::POST, "/api/group-defs", yaml(def)).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!(created.0, 200, "{}", created.1);
    let dynamic = json!({"id": "win", "query": "SELECT pc_id FROM agents", "refresh": "30m"});
    assert_eq!(
        send(
            &b,
            Method::POST,
            "/api/group-defs",
            json_body(dynamic.clone())
        )
        .await
        .0,
        200
    );

    let (_, mut list) = send(&b, Method::GET, "/api/group-defs", None).await;
    // The dynamic one also says how it last resolved (once it has).
    if let Some(m) = list[1].as_object_mut().unwrap().remove("membership") {
        assert_eq!(m["count"], 0, "{m}");
    }
    assert_eq!(
        list,
        json!([{"id": "desks", "members": ["PC-1", "PC-2"]}, dynamic])
    );
    let (status, members) = send(&b, Method::GET, "/api/group-defs/desks/members", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        members,
        json!({"id": "desks", "kind": "static", "count": 2, "members": ["PC-1", "PC-2"]})
    );
    let text = reqwest::Client::new()
        .get(format!("{}/api/group-defs/desks/yaml", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, def);
    let (_, schema) = send(&b, Method::GET, "/api/schemas/group-def.json", None).await;
    assert!(schema["properties"]["members"].is_object(), "{schema}");

    // Bad input names what is wrong.
    for (body, status, needle) in [
        (yaml("id: a b\nmembers: [x]\n"), 400, "group.id"),
        (
            yaml("id: both\nmembers: [x]\nquery: SELECT 1\n"),
            400,
            "mutually exclusive",
        ),
        (yaml("id: none\n"), 400, "members"),
        (yaml("id: typo\nmembrs: [x]\n"), 400, "membrs"),
        (yaml("id: r\nmembers: [x]\nrefresh: soon\n"), 400, "refresh"),
        (
            yaml("id: q\nquery: SELECT hostname FROM agents\n"),
            400,
            "`pc_id` column",
        ),
        (
            yaml("id: q\nquery: DELETE FROM agents\n"),
            400,
            "query failed",
        ),
        (
            yaml("id: q\nquery: SELECT pc_id FROM nowhere\n"),
            400,
            "nowhere",
        ),
    ] {
        let (got, err) = send(&b, Method::POST, "/api/group-defs", body).await;
        assert_eq!(got, status, "{err}");
        assert!(error_of(&err).contains(needle), "{needle}: {err}");
    }
    assert_eq!(
        send(&b, Method::GET, "/api/group-defs/nope/members", None)
            .await
            .0,
        404
    );
    assert_eq!(
        send(&b, Method::GET, "/api/group-defs/a%20b/yaml", None)
            .await
            .0,
        400
    );
    assert_eq!(
        send(&b, Method::GET, "/api/group-defs/win/members", None).await,
        (
            200,
            json!({"id": "win", "kind": "dynamic", "count": 0, "members": []})
        )
    );
    assert_eq!(
        send(&b, Method::GET, "/api/group-defs/q/members", None)
            .await
            .0,
        404,
        "a refused definition is not stored"
    );

    // The derived membership follows: in, then out once deleted.
    let js = async_nats::jetstream::new(nats.client().await);
    let kv = js.get_key_value("agent_groups_derived").await.unwrap();
    eventually("PC-1 derived into desks", || async {
        kv.get("PC-1").await.ok()?.map(|_| ())
    })
    .await;
    assert_eq!(
        send(&b, Method::DELETE, "/api/group-defs/desks", None)
            .await
            .0,
        204
    );
    assert_eq!(
        send(&b, Method::DELETE, "/api/group-defs/desks", None)
            .await
            .0,
        404
    );
    eventually("PC-1 left desks", || async {
        kv.get("PC-1").await.ok()?.is_none().then_some(())
    })
    .await;
    let (status, _) = send(&b, Method::GET, "/api/group-defs/desks/yaml", None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_settings_merge_key_by_key_and_keep_secrets() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let (status, empty) = eventually("server_settings ready", || async {
        let r = send(&b, Method::GET, "/api/server-settings", None).await;
        (r.0 != 503).then_some(r)
    })
    .await;
    assert_eq!((status, empty), (200, json!({})));
    let (_, defaults) = send(&b, Method::GET, "/api/server-settings/defaults", None).await;
    assert_eq!(defaults["collect_retention_days"], 30, "{defaults}");

    let first = json!({
        "controller_group": " ctl ", "agent_prune_days": 30,
        "agent_install": {"nats_url": "nats://broker:4222", "nats_token": "s3cret"},
    });
    let (status, shown) = send(&b, Method::PUT, "/api/server-settings", json_body(first)).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["controller_group"], "ctl", "trimmed: {shown}");
    assert_eq!(shown["agent_install"]["nats_token_set"], true);
    assert!(
        shown["agent_install"].get("nats_token").is_none(),
        "{shown}"
    );
    // A second operator's edit of another key keeps the first's, and a
    // secret left out of the body is kept.
    let second = json!({"agent_prune_days": null, "session_ttl_hours": 8, "agent_install": {"nats_url": "nats://b2:4222"}});
    let (status, shown) = send(&b, Method::PUT, "/api/server-settings", json_body(second)).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["controller_group"], "ctl");
    assert!(shown.get("agent_prune_days").is_none(), "{shown}");
    assert_eq!(shown["session_ttl_hours"], 8);
    let js = async_nats::jetstream::new(nats.client().await);
    // Object-store limits reach the broker's streams with the change.
    let limits = json!({
        "object_store_caps": {"app_packages_mib": 3000},
        "collect_retention_days": 12, "result_output_retention_days": 3,
    });
    let (status, shown) = send(&b, Method::PUT, "/api/server-settings", json_body(limits)).await;
    assert_eq!(status, 200, "{shown}");
    let config = |name: &'static str| {
        let js = js.clone();
        async move {
            js.get_stream(name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .config
                .clone()
        }
    };
    assert_eq!(config("OBJ_app_packages").await.max_bytes, 3000 << 20);
    let day = Duration::from_secs(86_400);
    assert_eq!(config("OBJ_collections").await.max_age, day * 12);
    assert_eq!(config("OBJ_result_output").await.max_age, day * 3);
    // A store that kept other limits (born before the setting, or edited
    // by hand) gets the stored ones back at start.
    let mut edited = config("OBJ_app_packages").await;
    edited.max_bytes = 1 << 30;
    js.update_stream(edited).await.unwrap();
    assert!(b.sigterm().success());
    b = Backend::start(&nats.url, &dir.path().join("data"), "");
    eventually("cap restored at start", || async {
        (config("OBJ_app_packages").await.max_bytes == 3000 << 20).then_some(())
    })
    .await;
    let raw = js
        .get_key_value("server_settings")
        .await
        .unwrap()
        .get("current")
        .await
        .unwrap()
        .unwrap();
    let raw: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(raw["agent_install"]["nats_token"], "s3cret", "{raw}");
    assert_eq!(raw["agent_install"]["nats_url"], "nats://b2:4222");
    for (body, status, needle) in [
        (json!({"agent_prune_days": 0}), 422, "agent_prune_days"),
        (json!({"session_ttl_hours": 9000}), 422, "session_ttl_hours"),
        (
            json!({"mail": {"host": "smtp", "port": 25, "from": "not-an-address"}}),
            422,
            "mail.from",
        ),
        // Refused by the parser that sends: never saved to fail later.
        (
            json!({"mail": {"host": "smtp", "port": 25, "from": "ops..desk@example.com"}}),
            422,
            "mail.from",
        ),
        (json!({"agent_install": {"nats_user": "u"}}), 400, "pair"),
        (json!([1, 2]), 422, "object"),
    ] {
        let (got, err) = send(
            &b,
            Method::PUT,
            "/api/server-settings",
            json_body(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(error_of(&err).contains(needle), "{body}: {err}");
    }

    // Support codes: hashed, projected for the agents, never shown.
    let (status, shown) = send(
        &b,
        Method::PUT,
        "/api/server-settings/support-codes/desk",
        json_body(json!({"code": "correct-horse", "label": "Help desk", "ttl_minutes": 30})),
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown["support_codes"],
        json!([{"scope": "desk", "label": "Help desk", "ttl_minutes": 30}])
    );
    let projected = js
        .get_key_value("fleet_config")
        .await
        .unwrap()
        .get("support_codes")
        .await
        .unwrap()
        .unwrap();
    let projected: Value = serde_json::from_slice(&projected).unwrap();
    let hash = projected["support_codes"][0]["hash"].as_str().unwrap();
    assert!(hash.starts_with("$argon2"), "{projected}");
    assert!(!hash.contains("correct-horse"));
    for (path, body, needle) in [
        (
            "/api/server-settings/support-codes/desk",
            json!({"code": "short"}),
            "8 characters",
        ),
        (
            "/api/server-settings/support-codes/a%20b",
            json!({"code": "long-enough"}),
            "slug",
        ),
        (
            "/api/server-settings/support-codes/desk",
            json!({"code": "long-enough", "ttl_minutes": 999}),
            "ttl_minutes",
        ),
    ] {
        let (got, err) = send(&b, Method::PUT, path, json_body(body)).await;
        assert_eq!(got, 422, "{err}");
        assert!(error_of(&err).contains(needle), "{err}");
    }
    let (status, shown) = send(
        &b,
        Method::DELETE,
        "/api/server-settings/support-codes/desk",
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert!(shown.get("support_codes").is_none(), "{shown}");
    let projected = js
        .get_key_value("fleet_config")
        .await
        .unwrap()
        .get("support_codes")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&projected).unwrap(),
        json!({"support_codes": []})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_fields_are_set_one_at_a_time_and_inheritance_is_shown() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let put = |path: &'static str, v: &'static str| {
        let b = &b;
        async move { send(b, Method::PUT, path, json_body(json!({"value": v}))).await }
    };
    let (status, out) = eventually("agent_config ready", || async {
        let r = put("/api/config/fields/max_local_concurrent", "3").await;
        (r.0 != 503 && r.0 != 502).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out,
        json!({"scope": {"max_local_concurrent": 3}, "changed": true})
    );
    assert_eq!(
        put("/api/config/fields/max_local_concurrent", "3").await.1["changed"],
        false
    );
    assert_eq!(
        put("/api/config/fields/heartbeat_interval", "20s").await.0,
        200
    );
    assert_eq!(
        put("/api/config/fields/client_display_name", "Desk helper")
            .await
            .0,
        200
    );
    for (path, v, needle) in [
        (
            "/api/config/fields/max_local_concurrent",
            "0",
            "max_local_concurrent",
        ),
        (
            "/api/config/fields/heartbeat_interval",
            "soon",
            "heartbeat_interval",
        ),
        ("/api/config/fields/colour", "red", "supported"),
    ] {
        let (got, err) = put(path, v).await;
        assert_eq!(got, 400, "{path}: {err}");
        assert!(error_of(&err).contains(needle), "{path}: {err}");
    }
    assert_eq!(
        put("/api/groups/canary/config/fields/heartbeat_interval", "5s")
            .await
            .0,
        200
    );
    assert_eq!(
        put("/api/pcs/PC-1/config/fields/process_perf_top_n", "7")
            .await
            .0,
        200
    );
    let (status, _) = send(
        &b,
        Method::PUT,
        "/api/agents/PC-1/groups",
        json_body(json!({"groups": ["canary"]})),
    )
    .await;
    assert_eq!(status, 200);

    // What a scope inherits excludes its own layer.
    let (_, group) = send(&b, Method::GET, "/api/groups/canary/config/inherited", None).await;
    assert_eq!(
        (
            group["heartbeat_interval"].as_str(),
            group["max_local_concurrent"].as_u64()
        ),
        (Some("20s"), Some(3)),
        "{group}"
    );
    let (_, pc) = send(&b, Method::GET, "/api/pcs/PC-1/config/inherited", None).await;
    assert_eq!(pc["heartbeat_interval"], "5s", "{pc}");
    assert_eq!(
        pc["process_perf_top_n"], 20,
        "the PC's own 7 is not inherited: {pc}"
    );
    let (_, eff) = send(&b, Method::GET, "/api/agents/PC-1/effective_config", None).await;
    assert_eq!(eff["effective"]["process_perf_top_n"], 7);
    assert_eq!(eff["effective"]["client_display_name"], "Desk helper");
    assert_eq!(eff["sources"]["max_local_concurrent"], "global", "{eff}");
    assert_eq!(eff["my_groups"], json!(["canary"]));
    let (_, defaults) = send(&b, Method::GET, "/api/config/defaults", None).await;
    assert_eq!(defaults["heartbeat_interval"], "30s", "{defaults}");

    let (status, out) = send(
        &b,
        Method::DELETE,
        "/api/config/fields/heartbeat_interval",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out["changed"], true);
    assert!(out["scope"].get("heartbeat_interval").is_none(), "{out}");
    assert_eq!(send(&b, Method::DELETE, "/api/config", None).await.0, 204);
    let (_, global) = send(&b, Method::GET, "/api/config", None).await;
    assert_eq!(global, json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_are_detailed_edited_recalled_and_unacked() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let client = nats.client().await;
    let mut amends = client.subscribe("notif-amend").await.unwrap();
    let mut delivered = client.subscribe("notifications.>").await.unwrap();
    client.flush().await.unwrap();
    let note = json!({"id": "n-1", "title": "Reboot tonight", "body": "at 22:00", "priority": "warn", "require_ack": true, "toast": true, "target": {"pcs": ["PC-1", "PC-2"]}});
    let (status, sent) = eventually("NOTIFICATIONS ready", || async {
        let r = send(
            &b,
            Method::POST,
            "/api/notifications",
            json_body(note.clone()),
        )
        .await;
        (r.0 != 503 && r.0 != 502).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{sent}");
    let first = delivered.next().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&first.payload).unwrap()["toast"],
        true
    );

    // PC-1's user acks, then takes it back; PC-2 acks.
    let js = async_nats::jetstream::new(client.clone());
    let t0 = Utc::now();
    for (subject, body) in [
        (
            "events.notifications.acked.PC-1.S-1.n-1",
            json!({"notification_id": "n-1", "pc_id": "PC-1", "user_sid": "S-1", "acked_at": t0, "account": "alice"}),
        ),
        (
            "events.notifications.acked.PC-2.S-2.n-1",
            json!({"notification_id": "n-1", "pc_id": "PC-2", "user_sid": "S-2", "acked_at": t0}),
        ),
        (
            "events.notifications.unacked.PC-1.S-1.n-1",
            json!({"notification_id": "n-1", "pc_id": "PC-1", "user_sid": "S-1", "unacked_at": t0 + chrono::Duration::seconds(5)}),
        ),
    ] {
        js_publish_bytes(&js, subject.into(), body.to_string().into_bytes()).await;
    }
    let detail = eventually("the un-ack projected", || async {
        let (_, d) = send(&b, Method::GET, "/api/notifications/n-1", None).await;
        (d["acks"].as_array()?.len() == 2
            && d["acks"]
                .as_array()?
                .iter()
                .any(|a| a.get("unacked_at").is_some()))
        .then_some(d)
    })
    .await;
    assert_eq!(detail["notification"]["title"], "Reboot tonight");
    assert_eq!(
        detail["target"],
        json!({"all": false, "groups": [], "pcs": ["PC-1", "PC-2"]})
    );
    let audience: Vec<(String, bool)> = detail["audience"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["pc_id"].as_str().unwrap().to_string(),
                a["confirmed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        audience,
        [("PC-1".to_string(), false), ("PC-2".to_string(), true)],
        "revoked first: {detail}"
    );
    let (_, status_body) = send(&b, Method::GET, "/api/notifications/n-1/ack_status", None).await;
    assert_eq!(status_body["acks"][0]["account"], "alice", "{status_body}");

    // An edit replaces the content in place and can ask for new acks.
    let edit = json!({"title": "Reboot at 23:00", "body": "moved", "priority": "info", "require_ack": true, "reset_acks": true});
    let (status, out) = send(&b, Method::PATCH, "/api/notifications/n-1", json_body(edit)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["subjects"],
        json!(["notifications.pc.PC-1", "notifications.pc.PC-2"])
    );
    let (_, list) = send(&b, Method::GET, "/api/notifications", None).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "one copy per id: {list:?}");
    assert_eq!(list[0]["title"], "Reboot at 23:00");
    assert!(list[0]["edited_at"].is_string());
    let (_, d) = send(&b, Method::GET, "/api/notifications/n-1", None).await;
    assert_eq!(d["acks"], json!([]), "{d}");
    let (status, err) = send(
        &b,
        Method::PATCH,
        "/api/notifications/n-1",
        json_body(json!({"title": " ", "body": "", "priority": "info"})),
    )
    .await;
    assert_eq!(status, 400, "{err}");

    // A recall removes it and tells the agents.
    assert_eq!(
        send(&b, Method::POST, "/api/notifications/n-1/recall", None)
            .await
            .0,
        204
    );
    let amend = tokio::time::timeout(Duration::from_secs(5), amends.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&amend.payload).unwrap(),
        json!({"id": "n-1", "op": {"kind": "recall"}})
    );
    assert_eq!(
        send(&b, Method::GET, "/api/notifications/n-1", None)
            .await
            .0,
        404
    );
    assert_eq!(
        send(&b, Method::POST, "/api/notifications/n-1/recall", None)
            .await
            .0,
        404
    );
    let (_, list) = send(&b, Method::GET, "/api/notifications", None).await;
    assert_eq!(list, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_reports_agents_going_quiet_and_back_and_silent_ones_are_pruned() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fast = "[housekeeping]\ninterval_secs = 1\n";
    let mut b = Backend::start(&nats.url, &data, fast);
    let client = nats.client().await;
    let beat = |pc: &'static str, at: chrono::DateTime<Utc>| {
        let client = client.clone();
        async move {
            publish_json(
                &client,
                format!("heartbeat.{pc}"),
                &json!({"pc_id": pc, "at": at, "agent_version": "0.101.0", "hostname": pc}),
            )
            .await;
        }
    };
    // PC-W's last beat is just under the threshold: it goes quiet at once.
    // (Heartbeats are core NATS: sent until the backend has taken one.)
    let last = Utc::now() - chrono::Duration::seconds(115);
    eventually("PC-W known", || async {
        beat("PC-W", last).await;
        (send(&b, Method::GET, "/api/agents/PC-W", None).await.0 == 200).then_some(())
    })
    .await;
    let offline = eventually("agent_offline reported", || async {
        let (_, rows) = send(
            &b,
            Method::GET,
            "/api/obs_events?pc_id=PC-W&kind=agent_offline",
            None,
        )
        .await;
        let rows = rows["events"].as_array()?.clone();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(offline[0]["source"], "backend:heartbeat-watchdog");
    // The outage stays open across a restart: the PC coming back is
    // reported by the next backend.
    b.sigterm();
    let b = Backend::start(&nats.url, &data, fast);
    eventually("PC-W back", || async {
        beat("PC-W", Utc::now()).await;
        let (_, a) = send(&b, Method::GET, "/api/agents/PC-W", None).await;
        (a["last_heartbeat"].as_str()? > last.to_rfc3339().as_str()).then_some(())
    })
    .await;
    // (The backend's log is shown if this never happens.)
    let reported = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (_, rows) = send(
                &b,
                Method::GET,
                "/api/obs_events?pc_id=PC-W&kind=agent_online",
                None,
            )
            .await;
            if rows["events"].as_array().is_some_and(|r| !r.is_empty()) {
                return;
            }
            beat("PC-W", Utc::now()).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(
        reported.is_ok(),
        "agent_online never reported; backend log:\n{}",
        b.log_text()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, rows) = send(&b, Method::GET, "/api/obs_events?pc_id=PC-W", None).await;
    let kinds: Vec<&str> = rows["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["agent_online", "agent_offline"],
        "once each: {rows}"
    );

    // Pruning: a PC silent for days goes once agent_prune_days says so.
    let long_ago = Utc::now() - chrono::Duration::days(3);
    eventually("PC-GONE known", || async {
        beat("PC-GONE", long_ago).await;
        (send(&b, Method::GET, "/api/agents/PC-GONE", None).await.0 == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        send(&b, Method::GET, "/api/agents/PC-GONE", None).await.0,
        200,
        "no pruning unless set"
    );
    let (status, _) = send(
        &b,
        Method::PUT,
        "/api/server-settings",
        json_body(json!({"agent_prune_days": 1})),
    )
    .await;
    assert_eq!(status, 200);
    eventually("PC-GONE pruned", || async {
        (send(&b, Method::GET, "/api/agents/PC-GONE", None).await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(send(&b, Method::GET, "/api/agents/PC-W", None).await.0, 200);
    let (_, none) = send(&b, Method::GET, "/api/obs_events?pc_id=PC-GONE", None).await;
    assert_eq!(
        none["events"],
        json!([]),
        "silent before watching began: not reported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upcoming_fires_and_retired_checks() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(
        &nats.url,
        &dir.path().join("data"),
        "[scheduler]\nenabled = false\n",
    );
    register_job(&b, JOB_YAML).await;
    for (id, at) in [("late", "23:59"), ("early", "00:01")] {
        let text = format!("id: {id}\njob_id: patch\nwhen: {{calendar: {{at: '{at}'}}}}\ntz: utc\ntarget: {{all: true}}\n");
        assert_eq!(
            send(&b, Method::POST, "/api/schedules", yaml(&text))
                .await
                .0,
            200
        );
    }
    let per_pc = "id: reconcile\njob_id: patch\nwhen: {per_pc: once}\ntarget: {all: true}\n";
    assert_eq!(
        send(&b, Method::POST, "/api/schedules", yaml(per_pc))
            .await
            .0,
        200
    );
    let (status, up) = send(&b, Method::GET, "/api/schedules/upcoming?limit=1", None).await;
    assert_eq!(status, 200, "{up}");
    let (_, all) = send(&b, Method::GET, "/api/schedules/upcoming", None).await;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "calendar schedules only: {all}");
    assert_eq!(up.as_array().unwrap().len(), 1);
    assert_eq!(up[0]["id"], ids[0], "soonest first");
    assert!(
        all[0]["next_run"].as_str() <= all[1]["next_run"].as_str(),
        "{all}"
    );
    assert_eq!(
        send(&b, Method::GET, "/api/schedules/upcoming?limit=x", None)
            .await
            .0,
        400
    );

    // A retired check's states go when asked.
    register_job(&b, "id: disk\nversion: '1'\nexecute:\n  shell: sh\n  script: df\n  timeout: 1m\ncheck:\n  name: disk-free\n").await;
    let js = async_nats::jetstream::new(nats.client().await);
    for pc in ["PC-1", "PC-2"] {
        let now = Utc::now();
        let result = json!({"result_id": format!("r-{pc}"), "request_id": format!("q-{pc}"), "pc_id": pc, "exit_code": 0,
            "stdout": "{\"status\": \"fail\"}", "stderr": "", "started_at": now, "finished_at": now, "manifest_id": "disk"});
        js_publish_bytes(
            &js,
            format!("results.q-{pc}"),
            result.to_string().into_bytes(),
        )
        .await;
    }
    eventually("both checks projected", || async {
        let (_, checks) = send(&b, Method::GET, "/api/checks", None).await;
        (checks["rows"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let (status, out) = send(&b, Method::DELETE, "/api/checks/disk-free?pc_id=PC-1", None).await;
    assert_eq!((status, out), (200, json!({"deleted": 1})));
    let (status, out) = send(&b, Method::DELETE, "/api/checks/disk-free", None).await;
    assert_eq!((status, out), (200, json!({"deleted": 1})));
    let (status, out) = send(&b, Method::DELETE, "/api/checks/disk-free", None).await;
    assert_eq!((status, out), (200, json!({"deleted": 0})));
    let (_, checks) = send(&b, Method::GET, "/api/checks?include_ok=true", None).await;
    assert_eq!(checks["rows"], json!([]), "{checks}");
}

/// A typed client deployment job naming `plan_id` / `digest`, for an
/// artifact of `bytes`.
fn typed_job(plan_id: &str, digest: &str, bytes: &[u8]) -> Manifest {
    use kanade_shared::artifact::ArtifactSha256;
    let sha = String::from(ArtifactSha256::of(bytes));
    let manifest_sha = String::from(ArtifactSha256::of(b"signed package manifest"));
    let text = format!(
        "id: roll-client\nversion: 2.0.0\nrequire_approval: true\n\
         deploy_authorization:\n  plan_id: {plan_id}\n  plan_digest: {digest}\n\
         execute:\n  kind: typed_operation\n  payload_version: 1\n  timeout: 15m\n\
         \x20 operation:\n    type: deploy_client\n    spec:\n\
         \x20     artifact_identity: {{role: client, version: 2.3.4, os: windows, arch: x86_64, distro_abi: msvc, format: exe}}\n\
         \x20     package_object_key: client/2.3.4/windows-x86_64-msvc.exe\n\
         \x20     artifact_sha256: {sha}\n      artifact_size_bytes: {}\n\
         \x20     package_id: com.example.client\n      manifest_sha256: {manifest_sha}\n\
         \x20     opt_out_policy: respect\n      restart_gui_session_only: true\n",
        bytes.len()
    );
    kanade_shared::strict::from_yaml_str(&text).unwrap()
}

/// The body `kanade deploy plan create` sends: the digest computed as an
/// operator's tooling computes it, over targets in any order.
fn plan_request(plan_id: &str, targets: &[&str], bytes: &[u8], expires_in: i64) -> Value {
    use kanade_shared::artifact::{ArtifactIntegrity, ArtifactSha256};
    use kanade_shared::deploy_plan::{
        job_manifest_digest, ExecutionPolicy, PlanArtifact, PlanContent,
    };
    let zero = "0".repeat(64);
    let draft = typed_job(plan_id, &zero, bytes);
    let typed = draft.execute.typed().unwrap().clone();
    let artifact = PlanArtifact {
        identity: typed.operation.artifact_identity().clone(),
        integrity: ArtifactIntegrity::of(bytes),
        manifest_sha256: ArtifactSha256::of(b"signed package manifest"),
    };
    let now = Utc::now().timestamp();
    let content = PlanContent {
        record_version: 1,
        plan_id: plan_id.into(),
        job_id: draft.id.clone(),
        job_manifest_digest: job_manifest_digest(&draft).unwrap(),
        role: typed.operation.expected_role(),
        operation: typed.operation.clone(),
        artifact: artifact.clone(),
        targets: PlanContent::normalize_targets(
            &targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        )
        .unwrap(),
        not_before: now - 60,
        expires_at: now + expires_in,
        execution_policy: ExecutionPolicy::SingleUsePerTarget,
    };
    let digest = String::from(content.digest());
    json!({
        "plan_id": plan_id,
        "plan_digest": digest,
        "job": serde_json::to_value(typed_job(plan_id, &digest, bytes)).unwrap(),
        "artifact": artifact,
        "targets": targets,
        "not_before": content.not_before,
        "expires_at": content.expires_at,
        "execution_policy": "single_use_per_target",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_plans_are_registered_approved_once_and_revoked_never_dispatched() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let client = nats.client().await;
    for pc in ["PC-B", "PC-A"] {
        eventually("agent registered", || async {
            publish_json(
                &client,
                format!("heartbeat.{pc}"),
                &json!({"pc_id": pc, "at": Utc::now(), "agent_version": "0.101.0", "hostname": pc}),
            )
            .await;
            (send(&b, Method::GET, &format!("/api/agents/{pc}"), None)
                .await
                .0
                == 200)
                .then_some(())
        })
        .await;
    }
    let bytes = b"client installer bytes";
    let req = plan_request("plan-1", &["PC-B", "PC-A"], bytes, 3600);

    // Bad input: each a JSON 4xx naming what is wrong, nothing stored.
    let mut wrong_digest = req.clone();
    wrong_digest["plan_digest"] = json!("ab".repeat(32));
    let mut shell = req.clone();
    shell["job"] =
        serde_json::to_value(kanade_shared::strict::from_yaml_str::<Manifest>(JOB_YAML).unwrap())
            .unwrap();
    let mut unknown = req.clone();
    unknown["approved"] = json!(true);
    let mut dup = req.clone();
    dup["targets"] = json!(["PC-A", "PC-A"]);
    let stranger = plan_request("plan-9", &["PC-A", "pc-a"], bytes, 3600);
    let too_long = plan_request("plan-8", &["PC-A"], bytes, 3 * 86_400);
    for (body, status, needle) in [
        (&wrong_digest, 400, "plan_digest does not match"),
        (&shell, 400, "typed_operation"),
        (&unknown, 400, "approved"),
        (&dup, 400, "duplicate target"),
        (&stranger, 422, "not registered agents"),
        (&too_long, 400, "at most 86400s"),
    ] {
        let (s, v) = send(
            &b,
            Method::POST,
            "/api/deploy-plans",
            json_body(body.clone()),
        )
        .await;
        assert_eq!(s, status, "{v}");
        assert!(error_of(&v).contains(needle), "{needle}: {v}");
    }
    let (_, none) = send(&b, Method::GET, "/api/deploy-plans", None).await;
    assert_eq!(none, json!([]), "a refused plan is not stored");

    // Registered pending, targets in digest order, created by the caller.
    let (s, plan) = send(
        &b,
        Method::POST,
        "/api/deploy-plans",
        json_body(req.clone()),
    )
    .await;
    assert_eq!(s, 201, "{plan}");
    assert_eq!(plan["state"], "pending");
    assert_eq!(plan["revision"], 0);
    assert_eq!(plan["expired"], false);
    assert_eq!(plan["plan_digest"], req["plan_digest"]);
    assert_eq!(plan["content"]["targets"], json!(["PC-A", "PC-B"]));
    assert_eq!(plan["content"]["role"], "client");
    assert_eq!(plan["job"]["deploy_authorization"]["plan_id"], "plan-1");
    assert!(!plan["created_by"].as_str().unwrap().is_empty(), "{plan}");
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/deploy-plans",
        json_body(req.clone()),
    )
    .await;
    assert_eq!(s, 409, "plans are immutable: {v}");

    // Approval names what was reviewed; a stale revision or digest is refused.
    let approve = |digest: &Value, revision: i64| {
        json_body(json!({"plan_digest": digest, "revision": revision}))
    };
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/plan-1/approve",
        approve(&req["plan_digest"], 5),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(error_of(&v).contains("revision moved"), "{v}");
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/plan-1/approve",
        approve(&json!("cd".repeat(32)), 0),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(error_of(&v).contains("plan_digest differs"), "{v}");
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/nope/approve",
        approve(&req["plan_digest"], 0),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, approved) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/plan-1/approve",
        approve(&req["plan_digest"], 0),
    )
    .await;
    assert_eq!(s, 200, "{approved}");
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["revision"], 1);
    assert!(approved["approved_at"].is_i64(), "{approved}");
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/plan-1/approve",
        approve(&req["plan_digest"], 1),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(error_of(&v).contains("already approved"), "{v}");

    // Never dispatched: the typed job cannot become a catalog job.
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/jobs",
        json_body(plan["job"].clone()),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        error_of(&v).contains("typed native deployment is not enabled"),
        "{v}"
    );
    let (_, jobs) = send(&b, Method::GET, "/api/jobs", None).await;
    assert_eq!(jobs, json!([]), "{jobs}");

    // Revoke: a reason over 256 bytes is refused, then it lands once.
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/plan-1/revoke",
        json_body(json!({"reason": "x".repeat(300)})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, revoked) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/plan-1/revoke",
        json_body(json!({"reason": "wrong build"})),
    )
    .await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["revision"], 2);
    assert_eq!(revoked["revoke_reason"], "wrong build");
    let (s, v) = send(&b, Method::POST, "/api/deploy-plans/plan-1/revoke", None).await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = send(
        &b,
        Method::POST,
        "/api/deploy-plans/plan-1/approve",
        approve(&req["plan_digest"], 2),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(error_of(&v).contains("revoked"), "{v}");

    // Kept across a restart, newest first; viewers may not read plans.
    let second = plan_request("plan-2", &["PC-A"], bytes, 600);
    let (s, v) = send(&b, Method::POST, "/api/deploy-plans", json_body(second)).await;
    assert_eq!(s, 201, "{v}");
    assert!(b.sigterm().success());
    let b = Backend::start(&nats.url, &data, "");
    let (s, list) = send(&b, Method::GET, "/api/deploy-plans", None).await;
    assert_eq!(s, 200, "{list}");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plan_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&"plan-1") && ids.contains(&"plan-2"), "{list}");
    let (s, one) = send(&b, Method::GET, "/api/deploy-plans/plan-1", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (one["state"].as_str(), one["revision"].as_i64()),
        (Some("revoked"), Some(2))
    );
    let viewer = crate::common::viewer_token(&b).await;
    let (s, _) = crate::common::send(&b, Method::GET, "/api/deploy-plans", &viewer, None).await;
    assert_eq!(s, 403);

    // Artifact publication is off unless the operator opted in.
    let (ctype, body) = form(&[("metadata", b"{}".to_vec()), ("file", bytes.to_vec())]);
    let (s, v) = send(&b, Method::POST, "/api/app-artifacts", Some((&ctype, body))).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        error_of(&v).contains("KANADE_APP_ARTIFACT_PUBLICATION"),
        "{v}"
    );
}

/// A multipart body of `fields` in order (`send` takes it as a string).
fn form(fields: &[(&str, Vec<u8>)]) -> (String, String) {
    let boundary = "kanade-0101-boundary";
    let mut body = String::new();
    for (name, data) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n{}\r\n",
            String::from_utf8(data.clone()).unwrap()
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn app_artifacts_are_published_once_and_served_verified() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = Backend::start_with_env(
        &nats.url,
        &data,
        "",
        &[("KANADE_APP_ARTIFACT_PUBLICATION", "backend-exclusive")],
    );
    use kanade_shared::artifact::ArtifactIntegrity;
    let bytes = "cli tarball bytes ".repeat(20_000); // several object chunks
    let publication = |bytes: &str| {
        json!({
            "identity": {"role": "cli", "version": "1.2.3", "os": "linux", "arch": "x86_64", "distro_abi": "musl", "format": "tar_gz"},
            "integrity": ArtifactIntegrity::of(bytes.as_bytes()),
        })
    };
    let publish = |meta: Value, file: &str| {
        form(&[
            ("metadata", meta.to_string().into_bytes()),
            ("file", file.as_bytes().to_vec()),
        ])
    };
    let post = |(ctype, body): (String, String)| {
        let b = &b;
        async move { send(b, Method::POST, "/api/app-artifacts", Some((&ctype, body))).await }
    };
    let path = "/api/app-artifacts/cli/1.2.3/linux-x86_64-musl.tar_gz";
    // The broker's resources are made in the background at start.
    eventually("app_packages exists", || async {
        (send(&b, Method::GET, "/api/app-packages", None).await.0 == 200).then_some(())
    })
    .await;

    // Bytes that are not the declared ones, an agent role, a file first:
    // refused, nothing published.
    let (s, v) = post(publish(publication(&bytes), &bytes.replace("cli", "CLI"))).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("SHA-256 mismatch"), "{v}");
    let mut agent = publication(&bytes);
    agent["identity"]["role"] = json!("agent");
    let (s, v) = post(publish(agent, &bytes)).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = post(form(&[("file", bytes.as_bytes().to_vec())])).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("metadata must precede file"), "{v}");
    let (s, v) = send(&b, Method::GET, path, None).await;
    assert_eq!(s, 404, "{v}");

    // A viewer may not publish.
    let viewer = crate::common::viewer_token(&b).await;
    let (ctype, body) = publish(publication(&bytes), &bytes);
    let (s, v) = crate::common::send(
        &b,
        Method::POST,
        "/api/app-artifacts",
        &viewer,
        Some((&ctype, body)),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = send(&b, Method::GET, path, None).await;
    assert_eq!(s, 404, "nothing published by the viewer");

    // Published; the same publication again is the same answer.
    let (s, first) = post(publish(publication(&bytes), &bytes)).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first, publication(&bytes));
    let (s, again) = post(publish(publication(&bytes), &bytes)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again, first);
    // Other bytes under the taken identity: 409, the first stays.
    let other = bytes.replace("cli", "xyz");
    let (s, v) = post(publish(publication(&other), &other)).await;
    assert_eq!(s, 409, "{v}");
    assert!(error_of(&v).contains("different bytes"), "{v}");

    let (s, meta) = send(&b, Method::GET, &format!("{path}/metadata"), None).await;
    assert_eq!(s, 200, "{meta}");
    assert_eq!(meta, first);
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_bytes());
    let (s, v) = send(
        &b,
        Method::GET,
        "/api/app-artifacts/cli/1.2.3/linux-x86_64-gnu.tar_gz",
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // No staging entry is left behind, and exactly one entry holds the key.
    let js = async_nats::jetstream::new(nats.client().await);
    let store = js.get_object_store("app_packages").await.unwrap();
    let names: Vec<String> = store
        .list()
        .await
        .unwrap()
        .map(|o| o.unwrap().name)
        .collect()
        .await;
    assert_eq!(names, ["cli/1.2.3/linux-x86_64-musl.tar_gz"], "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_asked_over_the_api_persists_then_exits_for_the_supervisor() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut b = Backend::start(&nats.url, &data, "");
    let client = nats.client().await;
    let sample = json!({"pc_id": "PC-R", "at": Utc::now(), "cpu_pct": 12.5});
    eventually("sample in the head", || async {
        publish_json(&client, "host_perf.PC-R".into(), &sample).await;
        let (_, top) = send(&b, Method::GET, "/api/perf/top", None).await;
        (top["rows"].as_array()?.len() == 1).then_some(())
    })
    .await;
    assert!(
        crate::common::parquet_files(&data).is_empty(),
        "nothing persisted yet"
    );
    let viewer = crate::common::viewer_token(&b).await;
    let (s, _) = crate::common::send(&b, Method::POST, "/api/server/restart", &viewer, None).await;
    assert_eq!(s, 403, "viewers may not restart the backend");
    let (s, v) = send(&b, Method::POST, "/api/server/restart", None).await;
    assert_eq!((s, v), (202, json!({"status": "restarting"})));
    let status = b.wait();
    assert_eq!(status.code(), Some(1), "non-zero, for the supervisor");
    assert!(
        !crate::common::parquet_files(&data).is_empty(),
        "the head was persisted before the exit"
    );
    assert!(b.log_text().contains("head persisted"), "{}", b.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dynamic_group_follows_the_fleet_and_keeps_its_members_when_its_query_breaks() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start(&nats.url, &dir.path().join("data"), "");
    let one = Agent::start(&nats, "PC-1", Generation::V0101, None).await;
    let two = Agent::start(&nats, "PC-2", Generation::V0101, None).await;
    eventually("the agents are known", || async {
        let (_, agents) = send(&b, Method::GET, "/api/agents", None).await;
        (agents.as_array()?.len() == 2).then_some(())
    })
    .await;
    let set_role = |pc: &'static str, role: Option<&'static str>| {
        let b = &b;
        async move {
            let path = format!("/api/agents/{pc}/meta/key");
            let (status, body) = match role {
                Some(r) => {
                    let body = json_body(json!({"key": "role", "value": r}));
                    send(b, Method::PUT, &path, body).await
                }
                None => send(b, Method::DELETE, &format!("{path}?key=role"), None).await,
            };
            assert!(status < 300, "{status} {body}");
        }
    };
    set_role("PC-1", Some("kiosk")).await;
    let kiosks = "id: kiosks\nquery: |\n  SELECT m.pc_id, a.hostname FROM agent_meta m\n  JOIN agents a ON a.pc_id = m.pc_id\n  WHERE m.key = 'role' AND lower(m.value) = 'kiosk'\nrefresh: 1s\n";
    let (status, body) = send(&b, Method::POST, "/api/group-defs", yaml(kiosks)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "dynamic", "{body}");
    let joined = |a: &Agent| a.groups.lock().unwrap().clone().unwrap_or_default();
    eventually("PC-1 joins kiosks", || async {
        joined(&one).contains("kiosks").then_some(())
    })
    .await;
    assert!(!joined(&two).contains("kiosks"));

    // PC-2 becomes a kiosk, PC-1 stops being one: the group follows.
    set_role("PC-2", Some("KIOSK")).await;
    set_role("PC-1", None).await;
    eventually("PC-2 in, PC-1 out", || async {
        (joined(&two).contains("kiosks") && !joined(&one).contains("kiosks")).then_some(())
    })
    .await;
    let (status, members) = send(&b, Method::GET, "/api/group-defs/kiosks/members", None).await;
    assert_eq!(status, 200);
    assert_eq!(members["members"], json!(["PC-2"]), "{members}");

    // A definition written past the API whose query fails when run: the
    // group keeps PC-2 and says why.
    kv_put(
        &nats,
        "group_defs",
        "kiosks",
        json!({"id": "kiosks", "query": "SELECT pc_id FROM agent_meta WHERE CAST(value AS BIGINT) > 0", "refresh": "1s"}),
    )
    .await;
    let listed = eventually("the failure is listed", || async {
        let (_, list) = send(&b, Method::GET, "/api/group-defs", None).await;
        let g = list
            .as_array()?
            .iter()
            .find(|g| g["id"] == "kiosks")?
            .clone();
        g["membership"]["error"].is_string().then_some(g)
    })
    .await;
    assert!(listed["membership"]["count"].is_null(), "{listed}");
    let (status, err) = send(&b, Method::GET, "/api/group-defs/kiosks/members", None).await;
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("resolve group 'kiosks'"), "{err}");
    // Several passes later PC-2 is still in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(joined(&two).contains("kiosks"));
    assert!(!joined(&one).contains("kiosks"));

    // Fixed: it resolves again at once (a new query is a new answer).
    kv_put(
        &nats,
        "group_defs",
        "kiosks",
        json!({"id": "kiosks", "query": "SELECT pc_id FROM agents", "refresh": "1s"}),
    )
    .await;
    eventually("both in", || async {
        (joined(&one).contains("kiosks") && joined(&two).contains("kiosks")).then_some(())
    })
    .await;
}
