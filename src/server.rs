//! Start-up and shutdown, as a list of named steps.
//!
//! Start: open the time-series tables (WAL replay, leftovers removed),
//! drop expired partitions, bind HTTP, connect to NATS in the background
//! (the HTTP side serves stored data while the broker is away), start the
//! projectors and the background jobs (`jobs::Runner`).
//! Stop (SIGINT/SIGTERM or the `shutdown` future): stop intake and commit
//! what the projectors buffered, stop HTTP, persist the head to Parquet.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use kanade_queries::inventory::{ExplodeIndex, HistoryQueries};
use kanade_queries::PerfQueries;
use kanade_storage::RelationalStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::state::AppState;
use crate::auth::AuthConfig;
use crate::config::Config;
use crate::ingest::{
    self, AuditProjection, HeartbeatProjection, HostPerfProjection, NotificationAcksProjection,
    ObsEventsProjection, ProcessPerfProjection, ResultsProjection, StartedProjection,
};
use crate::tables::Tables;
use crate::tasks::Runner;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (a signal).
    Stopped,
    /// Asked to restart (`POST /api/server/restart`): the caller exits
    /// non-zero so the supervisor starts it again.
    Restart,
}

/// Runs the backend until `shutdown` resolves or a restart is asked for;
/// returns once the head is persisted.
pub async fn run(
    config: Config,
    auth: AuthConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit> {
    let data_dir = config.data_dir();
    tracing::info!(data_dir = %data_dir.display(), bind = %config.server.bind, nats = %config.nats.url, "starting kanade-backend");
    if auth.disabled {
        tracing::error!(
            "AUTHENTICATION IS OFF (KANADE_AUTH_DISABLE): every /api endpoint is open, as an \
             admin, to anyone who can reach {}",
            config.server.bind
        );
    }
    let client = connect_nats(&config.nats.url).await?;
    let state = open_state(&config, auth, client.clone()).await?;
    let listener = TcpListener::bind(&config.server.bind)
        .await
        .with_context(|| format!("bind {}", config.server.bind))?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let AppState {
        tables,
        store,
        inventory,
        control,
        restart,
        sql,
        group_members,
        ..
    } = state.clone();
    let projectors = spawn_projectors(&client, &config, &state, &stop_rx);
    let mut jobs = Runner::new();
    crate::tasks::maintenance::register(&mut jobs, &tables, &config.storage);
    crate::tasks::inventory::register(&mut jobs, &inventory);
    crate::tasks::housekeeping::register(&mut jobs, &store, &config.housekeeping);
    crate::tasks::waves::register(&mut jobs, &control);
    crate::tasks::groups::register(&mut jobs, &control, &sql, &group_members);
    crate::tasks::agents::register(
        &mut jobs,
        &control,
        std::time::Duration::from_secs(config.housekeeping.interval_secs),
    );
    crate::tasks::scheduler::register(&mut jobs, &control, &config.scheduler);

    let app = crate::api::app(state);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        })
        .await
    });

    let exit = tokio::select! {
        () = shutdown => Exit::Stopped,
        () = restart.notified() => Exit::Restart,
    };
    tracing::info!(?exit, "shutdown requested: stopping intake");
    let _ = stop_tx.send(true);
    for p in projectors {
        if let Err(e) = p.await? {
            tracing::error!(error = %e, "projector ended with an error");
        }
    }
    // The broker may be gone: shutdown must not wait on it.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await;
    jobs.stop().await;
    http.await??;
    tokio::task::spawn_blocking(move || tables.persist()).await??;
    tracing::info!("head persisted; bye");
    Ok(exit)
}

/// Opens the stores under the configured data directory (WAL replay,
/// leftovers removed, the bootstrap admin seeded) and assembles what the
/// HTTP side serves from: the whole of start-up but the listener, the
/// projectors and the background tasks. `run` builds its router from it;
/// tests drive the same router in-process.
pub async fn open_state(
    config: &Config,
    auth: AuthConfig,
    client: async_nats::Client,
) -> Result<AppState> {
    let data_dir = config.data_dir();
    let tables = {
        let (dir, ts) = (data_dir.clone(), config.storage.clone());
        tokio::task::spawn_blocking(move || Tables::try_open(&dir, &ts)).await??
    };
    let store = {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || RelationalStore::open(&dir)).await??
    };
    crate::api::seed_bootstrap_admin(&store).await?;
    let queries = PerfQueries::new(
        Arc::clone(&tables.host),
        Arc::clone(&tables.process),
        store.clone(),
    )?;
    let explode = {
        let (dir, store) = (data_dir.clone(), store.clone());
        Arc::new(tokio::task::spawn_blocking(move || ExplodeIndex::open(&dir, store)).await??)
    };
    let inventory = crate::api::state::Inventory {
        manifests: crate::control::manifests::Manifests::new(client.clone()),
        explode,
        history: HistoryQueries::new(Arc::clone(&tables.history))?,
    };
    let signer = Arc::new(crate::control::signing::CommandSigner::try_from_env()?);
    let control = crate::control::Control::new(client.clone(), store.clone(), signer);
    let sql = crate::sql::SqlRunner::new(
        queries.clone(),
        control.clone(),
        config.server.query_limits()?,
        inventory.clone(),
    );
    Ok(AppState {
        sql,
        group_members: crate::sql::GroupMembers::default(),
        view_answers: crate::sql::ViewAnswers::default(),
        queries,
        tables,
        store,
        nats: client,
        auth,
        control,
        scan_budget: std::time::Duration::from_secs(config.server.scan_budget_secs.max(1)),
        trusted_proxies: config.server.proxies()?.into(),
        inventory,
        nats_url: config.nats.url.clone(),
        public_url: config
            .server
            .public_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty()),
        passkeys: crate::auth::passkey::Passkeys::from_config(&config.server.webauthn)
            .map_err(anyhow::Error::msg)?
            .map(Arc::new),
        restart: Arc::new(tokio::sync::Notify::new()),
    })
}

pub async fn connect_nats(url: &str) -> Result<async_nats::Client> {
    use kanade_shared::nats_client::{connect_with_event_callback, NatsRole};
    // The backend role: user/password from `KANADE_NATS_USER` /
    // `KANADE_NATS_PASSWORD`, else the token `KANADE_NATS_TOKEN`, as upstream.
    connect_with_event_callback(NatsRole::Backend, url, None, |event| async move {
        match event {
            async_nats::Event::Connected => {
                tracing::info!("connected to NATS");
                crate::metrics::get().nats_reconnects.inc();
            }
            async_nats::Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
            other => tracing::debug!(event = %other, "NATS event"),
        }
    })
    .await
}

fn spawn_projectors(
    client: &async_nats::Client,
    config: &Config,
    state: &AppState,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<()>>> {
    let AppState {
        tables,
        store,
        inventory,
        control,
        ..
    } = state;
    fn spawn<P: ingest::Projection>(
        client: &async_nats::Client,
        projection: P,
        stop: &watch::Receiver<bool>,
    ) -> JoinHandle<Result<()>> {
        tokio::spawn(ingest::run(
            client.clone(),
            Arc::new(projection),
            stop.clone(),
        ))
    }
    fn spawn_stream<P: ingest::stream::StreamProjection>(
        client: &async_nats::Client,
        store: &RelationalStore,
        projection: P,
        stop: &watch::Receiver<bool>,
    ) -> JoinHandle<Result<()>> {
        tokio::spawn(ingest::stream::run(
            async_nats::jetstream::new(client.clone()),
            store.clone(),
            Arc::new(projection),
            stop.clone(),
        ))
    }
    vec![
        tokio::spawn(ingest::capture::run(
            client.clone(),
            store.clone(),
            HostPerfProjection(Arc::clone(&tables.host)),
            ProcessPerfProjection(Arc::clone(&tables.process)),
            config.capture.clone(),
            stop.clone(),
        )),
        spawn(client, HeartbeatProjection(store.clone()), stop),
        tokio::spawn(ensure_jetstream(client.clone(), stop.clone())),
        spawn_stream(
            client,
            store,
            ResultsProjection::new(
                client.clone(),
                Arc::clone(&inventory.manifests),
                Arc::clone(&tables.history),
                Arc::clone(&inventory.explode),
                control.clone(),
            ),
            stop,
        ),
        spawn_stream(client, store, StartedProjection, stop),
        spawn_stream(client, store, AuditProjection, stop),
        spawn_stream(client, store, ObsEventsProjection, stop),
        spawn_stream(client, store, NotificationAcksProjection, stop),
    ]
}

/// The buckets upstream creates on first use (`views`, `group_defs`)
/// and their YAML mirrors, which upstream never creates (its mirror
/// writes then fail and `…/yaml` answers a re-serialisation): made at
/// start so a 0.101 CLI or agent finds them and the YAML is kept as sent.
async fn ensure_declared_buckets(js: &async_nats::jetstream::Context) -> anyhow::Result<()> {
    use kanade_shared::kv::{
        BUCKET_GROUP_DEFS, BUCKET_GROUP_DEFS_YAML, BUCKET_VIEWS, BUCKET_VIEWS_YAML,
    };
    for bucket in [
        BUCKET_GROUP_DEFS,
        BUCKET_GROUP_DEFS_YAML,
        BUCKET_VIEWS,
        BUCKET_VIEWS_YAML,
    ] {
        if js.get_key_value(bucket).await.is_ok() {
            continue;
        }
        js.create_key_value(async_nats::jetstream::kv::Config {
            bucket: bucket.to_string(),
            history: 5,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create KV bucket {bucket}: {e}"))?;
    }
    Ok(())
}

/// Creates the streams, KV buckets and object stores kanade needs, once
/// (idempotent; an error when the broker does not answer).
pub async fn bootstrap_jetstream(js: &async_nats::jetstream::Context) -> Result<()> {
    kanade_shared::bootstrap::ensure_jetstream_resources(js).await?;
    ensure_declared_buckets(js).await?;
    crate::api::apply_stored_store_limits(js).await;
    Ok(())
}

/// [`bootstrap_jetstream`], retrying until the broker answers.
async fn ensure_jetstream(
    client: async_nats::Client,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let js = async_nats::jetstream::new(client);
    loop {
        match bootstrap_jetstream(&js).await {
            Ok(()) => {
                tracing::info!("JetStream resources ready");
                return Ok(());
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "JetStream bootstrap failed; retrying"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}
