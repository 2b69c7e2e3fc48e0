//! `kanade-backend backup <dir>`: asks the running backend of the config
//! for an online backup into `dir` (on its host); `kanade-backend verify
//! <dir>`: checks a backup here, without a backend.

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
