//! Wires the proxy together: config, listeners, stacks, the admin API,
//! hot reload (file watch, SIGHUP, `POST /config/reload`) and drain.
//!
//! A reload validates the file, binds any new listener, then swaps the
//! route table and settings whole; listeners that did not change keep
//! running and no connection is touched. A reload that fails at any step
//! changes nothing, is logged, counted, and shown on `GET /config`.
//!
//! Drain (SIGTERM / SIGINT): `/ready` turns 503 at once; after
//! `drain.delay` listeners stop accepting and HTTP connections shut down
//! gracefully; in-flight work gets `drain.deadline`; then the access log
//! writer flushes what is left, the span exporter sends what is queued,
//! and the process exits.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use mesh_api::admin::{ClusterInfo, ConfigStatus, ListenerInfo};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use crate::config::{self, Settings};
use crate::listen::{self, ListenerSpec, Running, Shared};
use crate::route::RouteTable;
use crate::stack::Runtime;
use crate::telemetry::Metrics;
use crate::tls::IdentityStore;
use crate::{lock, BoxError};

/// The running proxy.
pub struct App {
    path: PathBuf,
    shared: Shared,
    listeners: tokio::sync::Mutex<Vec<Running>>,
    status: Mutex<ReloadStatus>,
    ready: AtomicBool,
    /// The admin API's listener (bound once; `admin.listen` changes need a restart).
    admin: ListenerInfo,
}

struct ReloadStatus {
    generation: u64,
    last_error: Vec<String>,
}

impl App {
    /// Whether `/ready` says 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Every metric.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.runtime.metrics
    }

    /// `GET /config`.
    pub fn config_status(&self) -> ConfigStatus {
        let settings = self.shared.runtime.settings.load();
        let status = lock(&self.status);
        ConfigStatus {
            path: self.path.display().to_string(),
            generation: status.generation,
            config: serde_json::to_value(&settings.raw).unwrap_or_default(),
            last_error: status.last_error.clone(),
        }
    }

    /// `GET /listeners`.
    pub async fn listeners(&self) -> Vec<ListenerInfo> {
        let running = self.listeners.lock().await;
        std::iter::once(self.admin.clone())
            .chain(running.iter().map(Running::info))
            .collect()
    }

    /// `GET /clusters`.
    pub fn clusters(&self) -> Vec<ClusterInfo> {
        self.shared
            .runtime
            .routes
            .load()
            .clusters()
            .iter()
            .map(|c| c.info())
            .collect()
    }

    /// Puts an endpoint of a cluster in maintenance, or takes it out.
    pub fn set_maintenance(&self, cluster: &str, endpoint: &str, on: bool) -> Result<(), String> {
        let routes = self.shared.runtime.routes.load();
        let found = routes
            .clusters()
            .into_iter()
            .find(|c| &**c.name() == cluster)
            .ok_or_else(|| format!("no cluster {cluster:?}"))?;
        let state = found
            .balancer
            .endpoints()
            .into_iter()
            .find(|e| e.addr.to_string() == endpoint)
            .ok_or_else(|| format!("cluster {cluster:?} has no endpoint {endpoint:?}"))?;
        state.set_maintenance(on);
        info!(cluster, endpoint, on, "endpoint maintenance");
        Ok(())
    }

    /// Reloads the config file; returns the new generation or every error.
    pub async fn reload(&self, trigger: &'static str) -> Result<u64, Vec<String>> {
        let outcome = match config::load_file(&self.path) {
            Ok(settings) => self.apply(settings).await,
            Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
        };
        self.metrics().reload(outcome.is_ok());
        let mut status = lock(&self.status);
        match outcome {
            Ok(()) => {
                status.generation += 1;
                status.last_error.clear();
                info!(trigger, generation = status.generation, "config reloaded");
                Ok(status.generation)
            }
            Err(errors) => {
                error!(trigger, errors = ?errors, "config reload failed; the running config stays");
                status.last_error = errors.clone();
                Err(errors)
            }
        }
    }

    /// Makes `settings` the running config. Binds new listeners first, so
    /// a port that cannot be bound fails the whole change.
    async fn apply(&self, settings: Settings) -> Result<(), Vec<String>> {
        let mut running = self.listeners.lock().await;
        let wanted = ListenerSpec::all(&settings);
        let mut fresh = Vec::new();
        let mut errors = Vec::new();
        for spec in wanted
            .iter()
            .filter(|w| !running.iter().any(|r| r.spec == **w))
        {
            match spec.bind() {
                Ok(listener) => fresh.push((listener, spec.clone())),
                Err(err) => errors.push(format!(
                    "{}: cannot listen on {}: {err}",
                    spec.path, spec.configured
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if settings.admin.to_string() != self.admin.configured {
            warn!(configured = %settings.admin, running = %self.admin.addr, "admin.listen changes take effect at the next restart");
        }
        let runtime = &self.shared.runtime;
        runtime
            .identity
            .configure(settings.identity.as_ref())
            .map_err(|e| vec![format!("identity: {e}")])?;
        let table = RouteTable::build(
            &settings,
            &runtime.routes.load(),
            &runtime.metrics,
            &runtime.identity,
        );
        runtime.routes.store(Arc::new(table));
        runtime.settings.store(Arc::new(settings));
        crate::overload::settings_changed();
        running.retain(|r| {
            let keep = wanted.contains(&r.spec);
            if !keep {
                info!(listener = %r.spec.name(), addr = %r.bound, "listener removed");
                r.stop();
            }
            keep
        });
        for (listener, spec) in fresh {
            let started =
                listen::start(listener, spec, &self.shared).map_err(|e| vec![e.to_string()])?;
            info!(listener = %started.spec.name(), addr = %started.bound, "listener started");
            running.push(started);
        }
        Ok(())
    }
}

/// Runs the proxy with already validated `settings` read from `path`,
/// until a signal ends it. Returns once drained.
pub async fn run(path: PathBuf, settings: Settings) -> Result<(), BoxError> {
    let metrics = Arc::new(Metrics::new());
    let watch = settings.watch;
    let admin_addr = settings.admin;
    let admin = listen::bind(admin_addr)
        .map_err(|e| format!("admin.listen: cannot listen on {admin_addr}: {e}"))?;
    let admin_bound = admin.local_addr()?;
    let identity = Arc::new(IdentityStore::new(metrics.cert_expiry()));
    let runtime = Arc::new(Runtime {
        routes: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
        settings: Arc::new(ArcSwap::from_pointee(settings.clone())),
        metrics,
        identity,
    });
    runtime.metrics.follow_routes(&runtime.routes);
    // Outlives the drain, so requests finishing during it are logged; ends
    // when `run` returns, whichever way.
    let access_log_stop = CancellationToken::new();
    let _access_log_guard = access_log_stop.clone().drop_guard();
    let access_log = runtime
        .metrics
        .access_log()
        .spawn_writer(runtime.settings.clone(), access_log_stop.clone());
    // The span exporter follows `tracing` in the running settings and stops with the access log.
    let trace_exporter = crate::telemetry::exporter::spawn(
        runtime.metrics.clone(),
        runtime.settings.clone(),
        access_log_stop.clone(),
    );
    let shared = Shared {
        runtime,
        drain: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    let app = Arc::new(App {
        path,
        shared,
        listeners: tokio::sync::Mutex::new(Vec::new()),
        status: Mutex::new(ReloadStatus {
            generation: 0,
            last_error: Vec::new(),
        }),
        ready: AtomicBool::new(false),
        admin: ListenerInfo {
            kind: "admin".into(),
            upstream: None,
            configured: admin_addr.to_string(),
            addr: admin_bound.to_string(),
        },
    });
    app.apply(settings)
        .await
        .map_err(|errors| errors.join("; "))?;
    lock(&app.status).generation = 1;
    tokio::spawn(crate::admin::serve(admin, app.clone()).instrument(tracing::info_span!("admin")));
    app.ready.store(true, Ordering::Relaxed);
    announce(&app, admin_bound).await;

    if let Some(period) = watch {
        tokio::spawn(
            watch_file(app.clone(), period).instrument(tracing::info_span!("config_watch")),
        );
    }
    tokio::spawn(reload_on_sighup(app.clone()).instrument(tracing::info_span!("sighup")));
    tokio::spawn(watch_identity(app.clone()).instrument(tracing::info_span!("identity_watch")));

    wait_for_shutdown().await?;
    let drain = app.shared.runtime.settings.load().drain;
    info!(delay = ?drain.delay, deadline = ?drain.deadline, "draining");
    app.ready.store(false, Ordering::Relaxed);
    tokio::time::sleep(drain.delay).await;
    app.shared.drain.cancel();
    app.shared.tracker.close();
    if tokio::time::timeout(drain.deadline, app.shared.tracker.wait())
        .await
        .is_err()
    {
        warn!("drain deadline passed; closing what is left");
    } else {
        info!("drained");
    }
    access_log_stop.cancel();
    if let Some(writer) = access_log {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    }
    if let Some(exporter) = trace_exporter {
        let deadline = crate::telemetry::exporter::FINAL_EXPORT + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout(deadline, exporter).await;
    }
    Ok(())
}

/// The one startup line that says where everything listens.
async fn announce(app: &App, admin: SocketAddr) {
    let listeners: Vec<String> = app
        .listeners
        .lock()
        .await
        .iter()
        .map(|r| format!("{}={}", r.spec.name(), r.bound))
        .collect();
    info!(admin = %admin, listeners = %listeners.join(" "), "listening");
}

/// Reloads when the file's content changes; ends on drain.
async fn watch_file(app: Arc<App>, period: std::time::Duration) {
    let digest = |bytes: &[u8]| {
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        hasher.finish()
    };
    let mut last = tokio::fs::read(&app.path).await.ok().map(|b| digest(&b));
    loop {
        tokio::select! {
            () = app.shared.drain.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let current = tokio::fs::read(&app.path).await.ok().map(|b| digest(&b));
        if current.is_some() && current != last {
            last = current;
            let _ = app.reload("file").await;
        }
    }
}

/// Picks up rotated identity files; ends on drain.
async fn watch_identity(app: Arc<App>) {
    loop {
        tokio::select! {
            () = app.shared.drain.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        app.shared.runtime.identity.refresh();
    }
}

/// `GET /certs`.
impl App {
    /// The workload identity, if any.
    pub fn certs(&self) -> Option<mesh_api::admin::CertInfo> {
        self.shared.runtime.identity.info()
    }

    /// Routing, settings, metrics and identity, for `/status`, `/routes`,
    /// `/explain` and `/tap`.
    pub fn runtime(&self) -> &Runtime {
        &self.shared.runtime
    }

    /// Fires when the proxy drains (open admin streams end then).
    pub fn drain_signal(&self) -> &CancellationToken {
        &self.shared.drain
    }
}

/// Reloads on SIGHUP; ends on drain.
async fn reload_on_sighup(app: Arc<App>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP");
        return;
    };
    loop {
        tokio::select! {
            () = app.shared.drain.cancelled() => return,
            received = hup.recv() => if received.is_none() { return },
        }
        let _ = app.reload("sighup").await;
    }
}

async fn wait_for_shutdown() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    Ok(())
}
