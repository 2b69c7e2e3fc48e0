//! `kanade-backend backup <dir>`: asks the running backend of the config
//! for an online backup into `dir` (on its host); `kanade-backend verify
//! <dir>`: checks a backup here, without a backend; `kanade-backend
//! restore <dir>`: puts one back (broker and data directory).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Where the backup goes (on the backend's host); must not exist or
    /// be empty.
    pub dir: PathBuf,
    /// Backend base URL (default: from `[server] bind` of the config).
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token of an admin (the service token or a login JWT).
    #[arg(long, env = "KANADE_AUTH_STATIC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A backup directory.
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// A backup directory.
    pub dir: PathBuf,
    /// Restore the broker's buckets and stores only (the data directory
    /// is left as it is, e.g. already copied into place).
    #[arg(long)]
    pub broker_only: bool,
}

/// Runs the backup; prints what it holds.
pub async fn backup(config: &Config, args: &BackupArgs) -> Result<()> {
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("resolve {}", args.dir.display()))?;
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| super::export::base_url(config));
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/admin/backup"))
        .header(crate::audit::SOURCE_HEADER, "cli")
        .json(&serde_json::json!({ "dir": dir }));
    if let Some(t) = &args.token {
        request = request.bearer_auth(t);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the backend at {base} (is it running?)"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "backup refused ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    eprintln!("backup written to {}", dir.display());
    Ok(())
}

/// Checks a backup; an error says what is wrong with it.
pub fn verify(args: &VerifyArgs) -> Result<()> {
    let verified = crate::backup::verify(&args.dir)?;
    println!("{}", serde_json::to_string_pretty(&verified)?);
    eprintln!("backup {} is sound", args.dir.display());
    Ok(())
}

/// Restores a backup: checked whole first, then the broker's half into
/// the broker of the config, then the data into the data directory.
pub async fn restore(config: &Config, args: &RestoreArgs) -> Result<()> {
    let verified = crate::backup::verify(&args.dir)
        .with_context(|| format!("{} is not a sound backup", args.dir.display()))?;
    let manifest = crate::backup::manifest(&args.dir)?;
    let data = config.data_dir();
    if !args.broker_only {
        crate::backup::check_empty(&data).map_err(|e| {
            anyhow::anyhow!(
                "data directory {e}; stop the backend and move it away, or pass --broker-only"
            )
        })?;
    }
    let restored = match &manifest.broker {
        Some(broker) => {
            let client = crate::server::connect_nats(&config.nats.url)
                .await
                .with_context(|| format!("connect to the broker at {}", config.nats.url))?;
            let js = async_nats::jetstream::new(client.clone());
            let counts = crate::backup::broker::restore(&js, &args.dir, broker).await?;
            client.flush().await?;
            Some(counts)
        }
        None => {
            eprintln!("this backup holds no broker export (taken by an older backend): data only");
            None
        }
    };
    if !args.broker_only {
        copy_data(&args.dir, &data)?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "broker": restored,
            "data_dir": (!args.broker_only).then(|| data.display().to_string()),
            "perf_rows": verified.perf_rows,
            "relational_rows": verified.relational_rows,
        }))?
    );
    eprintln!("backup {} restored", args.dir.display());
    Ok(())
}

/// Copies a backup's data (not its broker half nor its manifest) into
/// `to`.
fn copy_data(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    fn walk(from: &std::path::Path, to: &std::path::Path, top: bool) -> Result<()> {
        std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
        for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            if top && (name == crate::backup::broker::DIR || name == crate::backup::MANIFEST) {
                continue;
            }
            let (src, dst) = (entry.path(), to.join(&name));
            if entry.file_type()?.is_dir() {
                walk(&src, &dst, false)?;
            } else {
                std::fs::copy(&src, &dst)
                    .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
            }
        }
        Ok(())
    }
    walk(from, to, true)
}
