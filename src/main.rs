//! The `kanade-backend` binary.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use kanade_backend::auth::AuthConfig;
use kanade_backend::config::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "kanade-backend",
    version,
    about = "kanade backend: redb projections, Parquet perf history, DataFusion queries"
)]
struct Cli {
    /// Path of backend.toml (else $KANADE_BACKEND_CONFIG, else the local
    /// default: ./data, 127.0.0.1:8080, nats://127.0.0.1:4222).
    #[arg(long, global = true, env = "KANADE_BACKEND_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Verb>,
}

#[derive(clap::Subcommand, Debug)]
enum Verb {
    /// Publish a fake fleet's heartbeats and perf samples to the broker of
    /// the config (for demos and load tests).
    Simulate(kanade_backend::cli::simulate::SimulateArgs),
    /// Migrate a reference kanade-backend SQLite database into this
    /// store's data directory (stop both backends first). Safe to re-run.
    ImportSqlite(kanade_backend::cli::import::ImportArgs),
    /// Download perf history as a Parquet file from the running backend.
    Export(kanade_backend::cli::export::ExportArgs),
    /// Have the running backend take an online backup into a directory:
    /// the data directory and the broker's KV buckets and object stores.
    Backup(kanade_backend::cli::backup::BackupArgs),
    /// Check a backup directory (no backend needed).
    Verify(kanade_backend::cli::backup::VerifyArgs),
    /// Put a backup back: its KV buckets and object stores into the
    /// broker of the config (which must hold none of them), its data into
    /// the data directory (which must be empty). Stop the backend first.
    Restore(kanade_backend::cli::backup::RestoreArgs),
    /// Make a command-signing key: prints the environment lines that give
    /// it to the backend and the keyring entry agents need.
    CommandKeyGenerate(CommandKeyArgs),
}

#[derive(clap::Args, Debug)]
struct CommandKeyArgs {
    /// Key id agents look the key up by. Default `backend-YYYYMMDD` (UTC).
    #[arg(long)]
    kid: Option<String>,
    /// Accepted for upstream's command line: a new key never overwrites
    /// the configured one here (the environment holds it), so rotating is
    /// always making a new pair under a new kid.
    #[arg(long)]
    rotate: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => Config::try_load(path)?,
        None => Config::default(),
    };
    // Kept to the end: dropping it flushes the file writer.
    let _log_file = init_tracing(&config.log)?;
    log_panics();
    if cli.config.is_none() {
        tracing::info!("no config file given: running on the local default");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("build tokio runtime")?;
    match &cli.command {
        Some(Verb::Simulate(args)) => {
            return runtime.block_on(kanade_backend::cli::simulate::run(&config.nats.url, args));
        }
        Some(Verb::ImportSqlite(args)) => {
            let summary = kanade_backend::cli::import::run(&config, args)?;
            let skipped: u64 = summary.tables.iter().map(|t| t.skipped).sum();
            eprintln!(
                "import finished: {} rows added{}",
                summary.tables.iter().map(|t| t.added).sum::<u64>(),
                if skipped > 0 {
                    format!(", {skipped} rows skipped (see above)")
                } else {
                    String::new()
                }
            );
            return Ok(());
        }
        Some(Verb::Export(args)) => {
            runtime.block_on(kanade_backend::cli::export::run(&config, args))?;
            return Ok(());
        }
        Some(Verb::Backup(args)) => {
            return runtime.block_on(kanade_backend::cli::backup::backup(&config, args));
        }
        Some(Verb::Verify(args)) => return kanade_backend::cli::backup::verify(args),
        Some(Verb::Restore(args)) => {
            return runtime.block_on(kanade_backend::cli::backup::restore(&config, args));
        }
        Some(Verb::CommandKeyGenerate(args)) => {
            let kid = args
                .kid
                .clone()
                .unwrap_or_else(|| format!("backend-{}", chrono::Utc::now().format("%Y%m%d")));
            let current = std::env::var(kanade_backend::control::signing::ENV_KID).ok();
            if current.as_deref() == Some(kid.as_str()) {
                anyhow::bail!(
                    "--kid {kid} is the key id already configured: a new key needs a new kid"
                );
            }
            let _ = args.rotate;
            print!("{}", kanade_backend::control::signing::generate(&kid)?);
            return Ok(());
        }
        None => {}
    }
    let exit = runtime.block_on(kanade_backend::server::run(
        config,
        AuthConfig::from_env().map_err(anyhow::Error::msg)?,
        shutdown_signal(),
    ))?;
    if exit == kanade_backend::server::Exit::Restart {
        // Everything is persisted; a non-zero status is what a supervisor
        // (systemd `Restart=on-failure`, the Windows SCM's recovery
        // actions) starts again on.
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        drop(_log_file);
        std::process::exit(1);
    }
    Ok(())
}

/// Logs to stderr and, with `[log] path`, to a daily-rotated file.
fn init_tracing(
    log: &kanade_backend::config::LogSection,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let (file, guard) = match log.path.as_deref() {
        Some(path) if log.keep_days > 0 => {
            let path = std::path::Path::new(path);
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            std::fs::create_dir_all(dir)
                .with_context(|| format!("[log] path: create {}", dir.display()))?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("backend");
            let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("log");
            let appender = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix(stem)
                .filename_suffix(ext)
                .max_log_files(log.keep_days)
                .build(dir)
                .with_context(|| format!("[log] path: open a log file in {}", dir.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false);
            (Some(layer), Some(guard))
        }
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .init();
    Ok(guard)
}

/// Panics go to the log with their backtrace (a service's stderr may go
/// nowhere); a handler's panic is then answered as a JSON 500.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(panic = %info, %backtrace, "panicked");
    }));
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
