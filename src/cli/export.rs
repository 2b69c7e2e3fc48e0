//! `kanade-backend export <table> --from --to [--pc-id] -o file.parquet`:
//! downloads `GET /api/export/{table}` from the running backend of the
//! config, so the files are read by the one process that owns them and
//! the rules (time parameters, 400s) are the API's. The file is written
//! under a temporary name and renamed when complete: an interrupted or
//! refused export leaves no partial file behind.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// `host_perf` or `process_perf`.
    pub table: String,
    /// Start (RFC 3339); the API's default when left out.
    #[arg(long)]
    pub from: Option<String>,
    /// End (RFC 3339); now when left out.
    #[arg(long)]
    pub to: Option<String>,
    /// Only this PC.
    #[arg(long = "pc-id")]
    pub pc_id: Option<String>,
    /// Where to write the Parquet file.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Backend base URL (default: from `[server] bind` of the config).
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token (the service token or a login JWT).
    #[arg(long, env = "KANADE_AUTH_STATIC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The URL the backend of `config` answers on.
pub(crate) fn base_url(config: &Config) -> String {
    let bind = &config.server.bind;
    let (host, port) = bind.rsplit_once(':').unwrap_or((bind.as_str(), "8080"));
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    format!("http://{host}:{port}")
}

fn temp_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// Runs the export; returns the bytes written.
pub async fn run(config: &Config, args: &ExportArgs) -> Result<u64> {
    let base = args.url.clone().unwrap_or_else(|| base_url(config));
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(f) = &args.from {
        query.push(("from", f));
    }
    if let Some(t) = &args.to {
        query.push(("to", t));
    }
    if let Some(p) = &args.pc_id {
        query.push(("pc_id", p));
    }
    let mut request = reqwest::Client::new()
        .get(format!("{base}/api/export/{}", args.table))
        .query(&query)
        .header(crate::audit::SOURCE_HEADER, "cli");
    if let Some(t) = &args.token {
        request = request.bearer_auth(t);
    }
    let mut response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the backend at {base} (is it running?)"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("export refused ({status}): {message}");
    }

    let partial = temp_path(&args.output);
    let mut file =
        std::fs::File::create(&partial).with_context(|| format!("create {}", partial.display()))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} {binary_bytes} written, {binary_bytes_per_sec}, {elapsed}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(args.table.clone());
        bar
    });
    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut written: u64 = 0;
    let outcome: Result<()> = async {
        while let Some(chunk) = response.chunk().await.context("download interrupted")? {
            file.write_all(&chunk)
                .with_context(|| format!("write {}", partial.display()))?;
            written += chunk.len() as u64;
            match &bar {
                Some(bar) => bar.set_position(written),
                None if last_line.elapsed() >= Duration::from_secs(5) => {
                    last_line = Instant::now();
                    eprintln!("{}: {written} bytes written", args.table);
                }
                None => {}
            }
        }
        file.sync_all().context("fsync the export")?;
        Ok(())
    }
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &args.output)
        .with_context(|| format!("rename to {}", args.output.display()))?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "{}: {written} bytes in {secs:.1} s ({:.1} MB/s) -> {}",
        args.table,
        written as f64 / secs / 1e6,
        args.output.display()
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_follows_the_bind_address() {
        let mut c = Config::default();
        c.server.bind = "0.0.0.0:9000".into();
        assert_eq!(base_url(&c), "http://127.0.0.1:9000");
        c.server.bind = "10.1.2.3:8080".into();
        assert_eq!(base_url(&c), "http://10.1.2.3:8080");
    }
}
