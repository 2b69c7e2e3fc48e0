//! `backend.toml`: the reference backend's file (`[server]`, `[nats]`,
//! `[db]`, `[log]`, teravars templating included) plus our `[storage]`.
//! Every section is optional, so no file at all means the local default.
//! A key we do not know or a value of the wrong type stops start-up with
//! the key's dotted name: a typo must not silently fall back to a default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kanade_storage::TimeSeriesConfig;
use serde::Deserialize;

/// The whole configuration of the backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerSection,
    pub nats: NatsSection,
    pub db: DbSection,
    pub log: LogSection,
    /// `[storage]` without `data_dir` (see [`Config::data_dir`]).
    pub storage: TimeSeriesConfig,
    /// `[housekeeping]`: reaping and retention of the relational tables.
    pub housekeeping: crate::tasks::housekeeping::HousekeepingConfig,
    /// `[scheduler]`: whether this backend may fire schedules, and its
    /// cadences.
    pub scheduler: crate::tasks::scheduler::SchedulerConfig,
    /// `[capture]`: the broker stream that keeps perf samples until they
    /// are stored.
    pub capture: crate::ingest::capture::CaptureConfig,
    /// `[mail]`: upstream reads mail settings from the `server_settings`
    /// KV bucket, not from this file; a file that still carries the section
    /// starts, and the section is reported as ignored.
    pub mail: Option<MailSection>,
    /// `[storage] data_dir`.
    #[serde(skip)]
    pub storage_data_dir: Option<PathBuf>,
}

/// `[mail]` as older upstream files have it; accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MailSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub encryption: Option<String>,
    pub from: Option<String>,
    pub username: Option<String>,
}

/// `[server.webauthn]`: the relying party passkeys are bound to. An empty
/// `rp_id` (the default) turns passkeys off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WebauthnSection {
    /// The relying-party id, a registrable domain such as `kanade.example.com`.
    pub rp_id: String,
    /// Origins a browser may present, e.g. `https://kanade.example.com`.
    pub rp_origins: Vec<String>,
    /// Display name shown by authenticators. Default `Kanade`.
    pub rp_name: Option<String>,
}

/// What one `POST /api/query` may use (`[server] query_budget_secs`,
/// `query_memory_mib`).
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub budget: std::time::Duration,
    pub memory_bytes: usize,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerSection {
    /// Address the HTTP server listens on. Default `127.0.0.1:8080`.
    pub bind: String,
    /// Seconds a filtered scan (results or audit with regexes) may run
    /// before it answers 503 asking to narrow it. Default 10.
    pub scan_budget_secs: u64,
    /// Seconds a `POST /api/query` may run before it is stopped (408).
    /// Default 15, as the reference.
    pub query_budget_secs: u64,
    /// MiB the joins, sorts and aggregates of one `POST /api/query` may
    /// hold (sorts and aggregates spill past it; the rest answer 413).
    /// Default 256.
    pub query_memory_mib: u64,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` names the
    /// client, for login throttling and the audit log. Default: none, so
    /// the header is ignored and the peer address counts.
    pub trusted_proxies: Vec<String>,
    /// The URL operators reach the dashboard at (links in mail and
    /// password set-up). Default: none.
    pub public_url: Option<String>,
    /// `[server.webauthn]`.
    pub webauthn: WebauthnSection,
}

impl ServerSection {
    /// What one `POST /api/query` may use; an unusable value stops the
    /// start naming its key.
    pub fn query_limits(&self) -> Result<QueryLimits> {
        if self.query_budget_secs == 0 {
            anyhow::bail!("server.query_budget_secs must be at least 1");
        }
        let memory_bytes = usize::try_from(self.query_memory_mib)
            .ok()
            .filter(|m| *m > 0)
            .and_then(|m| m.checked_mul(1 << 20))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "server.query_memory_mib must be at least 1 and fit this machine's memory ({})",
                    self.query_memory_mib
                )
            })?;
        Ok(QueryLimits {
            budget: std::time::Duration::from_secs(self.query_budget_secs),
            memory_bytes,
        })
    }

    /// `trusted_proxies` parsed (a bare address is a one-address range).
    pub fn proxies(&self) -> Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "server.trusted_proxies: {s:?} is not an address or a CIDR range"
                        )
                    })
            })
            .collect()
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            scan_budget_secs: 10,
            query_budget_secs: 15,
            query_memory_mib: 256,
            trusted_proxies: Vec::new(),
            public_url: None,
            webauthn: WebauthnSection::default(),
        }
    }
}

/// `[nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NatsSection {
    /// Broker URL. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// The broker's HTTP monitoring endpoint. Default: port 8222 on the
    /// host of `url`, as upstream derives it.
    pub monitor_url: Option<String>,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            monitor_url: None,
        }
    }
}

/// `[db]`: the reference backend's SQLite file. We do not write it; its
/// folder is the data directory when `[storage] data_dir` is absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DbSection {
    pub sqlite_path: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSection {
    /// Log file: written besides stderr, rotated daily as
    /// `<stem>.<YYYY-MM-DD>.<ext>` in its folder (as the reference).
    /// Unset: stderr only.
    pub path: Option<String>,
    /// `tracing` filter, e.g. `info` or `kanade_backend=debug`. Default `info`.
    pub level: String,
    /// Daily files kept; 0 turns the file off. Default 14.
    pub keep_days: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            path: None,
            level: "info".into(),
            keep_days: 14,
        }
    }
}

impl Config {
    /// Where the stores live: `[storage] data_dir`, else the folder of
    /// `[db] sqlite_path`, else `./data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.storage_data_dir {
            return dir.clone();
        }
        if let Some(sqlite) = &self.db.sqlite_path {
            if let Some(parent) = Path::new(sqlite).parent() {
                if !parent.as_os_str().is_empty() {
                    return parent.to_path_buf();
                }
            }
        }
        PathBuf::from("data")
    }

    /// Reads, renders (teravars) and validates a config file.
    pub fn try_load(path: &Path) -> Result<Self> {
        let mut engine = teravars::Engine::new();
        let ctx = teravars::system_context();
        let merged = teravars::load_merged([path], &mut engine, &ctx)
            .with_context(|| format!("read config {}", path.display()))?;
        Self::try_from_table(merged.config).with_context(|| format!("config {}", path.display()))
    }

    /// Validates an already parsed TOML table.
    pub fn try_from_table(mut table: toml::Table) -> Result<Self> {
        // teravars `[vars]` have been rendered into the other sections by
        // the time the table gets here; the table itself is input to
        // templating, not configuration.
        table.remove("vars");
        let data_dir = match table.get_mut("storage") {
            Some(toml::Value::Table(storage)) => storage.remove("data_dir"),
            _ => None,
        };
        let data_dir = match data_dir {
            None => None,
            Some(toml::Value::String(s)) => Some(PathBuf::from(s)),
            Some(other) => bail!(
                "storage.data_dir: expected a string, found {}",
                other.type_str()
            ),
        };
        let mut unknown = Vec::new();
        let value = toml::Value::Table(table);
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut record);
        let mut config: Config = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.path(), e.inner()))?;
        if !unknown.is_empty() {
            bail!("unknown config key(s): {}", unknown.join(", "));
        }
        config.storage_data_dir = data_dir;
        if config.mail.is_some() {
            tracing::warn!("[mail] in the config file is ignored: mail settings live in the server settings (PUT /api/server-settings)");
        }
        config.server.proxies()?;
        config.storage.validate()?;
        config.housekeeping.validate()?;
        config.scheduler.validate()?;
        config.capture.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_limits_default_to_the_reference_and_refuse_nonsense() {
        let limits = ServerSection::default().query_limits().unwrap();
        assert_eq!(
            (limits.budget.as_secs(), limits.memory_bytes),
            (15, 256 << 20)
        );
        for (budget, mib, key) in [
            (0, 256, "query_budget_secs"),
            (15, 0, "query_memory_mib"),
            (15, u64::MAX, "query_memory_mib"),
        ] {
            let server = ServerSection {
                query_budget_secs: budget,
                query_memory_mib: mib,
                ..ServerSection::default()
            };
            let e = server.query_limits().unwrap_err().to_string();
            assert!(e.contains(key), "{budget} {mib}: {e}");
        }
    }

    fn parse(s: &str) -> Result<Config> {
        Config::try_from_table(s.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn reference_file_starts_unchanged() {
        let cfg = parse(
            r#"
            [server]
            bind = "0.0.0.0:8080"
            [nats]
            url = "nats://broker:4222"
            [db]
            sqlite_path = "/var/lib/kanade/backend.db"
            [log]
            path = "/var/log/kanade/backend.log"
            level = "info"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.server.bind, "0.0.0.0:8080");
        assert_eq!(cfg.data_dir(), PathBuf::from("/var/lib/kanade"));
        assert_eq!(cfg.storage, TimeSeriesConfig::default());
    }

    /// Upstream 0.101's `configs/backend.toml`, `[vars]` and all, loaded
    /// through teravars as the binary loads it.
    #[test]
    fn upstream_0_101_file_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backend.toml");
        std::fs::write(&path, UPSTREAM_0_101).unwrap();
        let cfg = Config::try_load(&path).unwrap();
        assert_eq!(cfg.server.bind, "0.0.0.0:8080");
        assert_eq!(cfg.data_dir(), PathBuf::from("/var/lib/kanade"));
        assert_eq!(cfg.log.path.as_deref(), Some("/var/log/kanade/backend.log"));
        assert_eq!(
            cfg.server.public_url.as_deref(),
            Some("https://kanade.example.com")
        );
        assert_eq!(cfg.server.webauthn.rp_id, "kanade.example.com");
        assert_eq!(
            cfg.nats.monitor_url.as_deref(),
            Some("http://127.0.0.1:8222")
        );
        // A key neither version knows still stops start-up, naming it.
        let typo = UPSTREAM_0_101.replace("level = 'info'", "levle = 'info'");
        std::fs::write(&path, typo).unwrap();
        let err = format!("{:#}", Config::try_load(&path).unwrap_err());
        assert!(err.contains("log.levle"), "{err}");
    }

    const UPSTREAM_0_101: &str = r#"# Backend config. [vars] may reference each other.
[vars]
base    = '''{% if is_windows() %}{{ env(name="ProgramData") }}\Kanade\data{% else %}/var/lib/kanade{% endif %}'''
log_dir = '''{% if is_windows() %}{{ env(name="ProgramData") }}\Kanade\logs{% else %}/var/log/kanade{% endif %}'''

[server]
bind = '0.0.0.0:8080'
public_url = 'https://kanade.example.com'

[server.webauthn]
rp_id = 'kanade.example.com'
rp_origins = ['https://kanade.example.com']
rp_name = 'Kanade'

[nats]
url = 'nats://127.0.0.1:4222'
monitor_url = 'http://127.0.0.1:8222'

[db]
sqlite_path = '{{ vars.base }}/backend.db'

[log]
path  = '{{ vars.log_dir }}/backend.log'
level = 'info'

# [mail]
# host = 'smtp.example.com'
# port = 587
# encryption = 'starttls'
# from = 'kanade@example.com'
# username = '{{ vars.missing }}'
"#;

    #[test]
    fn storage_section_overrides() {
        let cfg = parse(
            "[storage]\ndata_dir = \"/srv/k\"\nhost_perf_retention_days = 60\nprocess_perf_retention_days = 3\n",
        )
        .unwrap();
        assert_eq!(cfg.data_dir(), PathBuf::from("/srv/k"));
        assert_eq!(cfg.storage.host_perf_retention_days, 60);
        assert_eq!(cfg.storage.process_perf_retention_days, 3);
    }

    #[test]
    fn empty_file_is_the_local_default() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.server.bind, "127.0.0.1:8080");
        assert_eq!(cfg.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(cfg.data_dir(), PathBuf::from("data"));
    }

    #[test]
    fn bad_files_name_the_key() {
        let cases = [
            ("[server]\nbnd = \"x\"\n", "server.bnd"),
            (
                "[storage]\nhost_perf_retention_dys = 3\n",
                "storage.host_perf_retention_dys",
            ),
            ("[storgae]\ndata_dir = \"x\"\n", "storgae"),
            (
                "[storage]\nhost_perf_retention_days = \"thirty\"\n",
                "storage.host_perf_retention_days",
            ),
            ("[server]\nbind = 8080\n", "server.bind"),
            ("[storage]\ndata_dir = 5\n", "storage.data_dir"),
            (
                "[storage]\nprocess_perf_retention_days = 0\n",
                "storage.process_perf_retention_days",
            ),
            (
                "[housekeeping]\ninterval_sec = 1\n",
                "housekeeping.interval_sec",
            ),
            (
                "[housekeeping]\naudit_retention_days = 0\n",
                "housekeeping.audit_retention_days",
            ),
            ("[scheduler]\nenable = false\n", "scheduler.enable"),
            (
                "[scheduler]\nlease_ttl_secs = 1\n",
                "scheduler.lease_ttl_secs",
            ),
            (
                "[scheduler]\nreconcile_interval_secs = 0\n",
                "scheduler.reconcile_interval_secs",
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
                "server.trusted_proxies",
            ),
        ];
        for (file, key) in cases {
            let err = format!("{:#}", parse(file).unwrap_err());
            assert!(err.contains(key), "{file:?}: {err}");
        }
    }
}
