//! The agent's run loop: sources → merged [`VipTable`] → data plane, and the
//! API over the shared state. `run(listener, shared, config, shutdown)` takes
//! its listener and shutdown signal from the caller (tests inject both).
//!
//! Sources: the VIP file (polled, SIGHUP forces a re-read; a bad file is
//! reported and the last good one kept) and Mesos state URLs (each polled by
//! its own task; a failing one keeps its last good table for the grace period).
//! Nothing is programmed until every source has reported once, so a restarted
//! agent keeps the re-adopted table instead of programming a partial one.
//! VIPs whose address may not be a VIP here are refused at every rebuild
//! against the host's addresses, read again at each rebuild and every few
//! seconds (a change rebuilds); refusals are logged once each, counted in
//! /metrics and listed at `GET /v1/vips/refused`.
//!
//! The API is served on the TCP listener and, when given, on a Unix socket:
//! the same router, every route behind [`api::auth::guard`].
use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    api::{self, views::Snapshot},
    config::SourcesConfig,
    dataplane::{Dataplane, DataplaneError},
    health::{Detector, HealthConfig, HealthEvent},
    metrics::AgentMetrics,
    sources::{
        SourceTable, fetch,
        file::{FilePoll, FileSource, as_source_table},
        host::host_addresses,
        merge::{Built, Merger, RefusedVip, SourceEvent, build_table},
        mesos,
    },
    vip::{
        VipTable,
        named::{Ipv4Range, NamedVipAllocator},
        sanity::HostAddrs,
    },
};

/// State shared by the loop and the API.
pub struct Shared {
    table: RwLock<VipTable>,
    dataplane: Mutex<Box<dyn Dataplane + Send>>,
    metrics: Mutex<AgentMetrics>,
    detector: Mutex<Detector>,
    /// The kernel's connect-failure total at the last health observation.
    failures_seen: Mutex<Option<u64>>,
}

impl Shared {
    /// `table` is what the data plane holds now (e.g. re-adopted from pins).
    pub fn new(dataplane: Box<dyn Dataplane + Send>, table: VipTable) -> Self {
        Self::with_health(dataplane, table, HealthConfig::default())
    }

    /// Like [`Shared::new`] with the failure detector's settings.
    pub fn with_health(
        dataplane: Box<dyn Dataplane + Send>,
        table: VipTable,
        health: HealthConfig,
    ) -> Self {
        Shared {
            table: RwLock::new(table),
            dataplane: Mutex::new(dataplane),
            metrics: Mutex::new(AgentMetrics::default()),
            detector: Mutex::new(Detector::new(health)),
            failures_seen: Mutex::new(None),
        }
    }

    /// Feeds the failure detector the kernel's counters; returns its
    /// transitions (a non-empty list means selection must change).
    ///
    /// Cheap when nothing fails: it reads one kernel counter (failures of all
    /// backends), the in-flight connects and the counters of the few backends
    /// already failing; every backend's counters only when a failure happened.
    pub fn observe_health(&self, now: Instant) -> Result<(Vec<HealthEvent>, bool), DataplaneError> {
        let mut dp = self.dataplane.lock().expect("dataplane lock");
        let mut detector = self.detector.lock().expect("detector lock");
        let failures = dp.events()?.get("connect_failed").copied().unwrap_or(0);
        let pending = dp.pending(detector.config().timeout)?;
        let overdue = pending.values().any(|p| p.overdue > 0);
        let mut seen = self.failures_seen.lock().expect("failures lock");
        let full = *seen != Some(failures) || overdue;
        *seen = Some(failures);
        // Watched backends, and every backend with an overdue connect (its
        // kernel `failed` counter may be 0: unanswered is not refused).
        let mut watched = detector.watched();
        watched.extend(
            pending
                .iter()
                .filter(|(_, p)| p.overdue > 0)
                .map(|(k, _)| *k),
        );
        let counters = if full {
            dp.counters_failing(&watched)?
        } else {
            dp.counters_for(&watched)?
        };
        Ok((detector.observe(now, &counters, &pending, full), full))
    }

    /// `table` with the failure detector's verdicts applied.
    pub fn with_detector(&self, table: &VipTable) -> VipTable {
        self.detector.lock().expect("detector lock").overlay(table)
    }

    /// The programmed table.
    pub fn table(&self) -> VipTable {
        self.table.read().expect("table lock").clone()
    }

    /// Whether `table` is what is programmed (no copy).
    pub fn is_programmed(&self, table: &VipTable) -> bool {
        *self.table.read().expect("table lock") == *table
    }

    /// Programs `table`; on success it becomes the served table, on error the
    /// previous one stays programmed and served.
    pub fn apply(&self, table: VipTable) -> Result<(), DataplaneError> {
        let mut dp = self.dataplane.lock().expect("dataplane lock");
        dp.apply(&table)?;
        *self.table.write().expect("table lock") = table;
        Ok(())
    }

    /// Table and kernel counters, read together.
    pub fn snapshot(&self) -> Result<Snapshot, DataplaneError> {
        let dp = self.dataplane.lock().expect("dataplane lock");
        let counters = dp.counters()?;
        let events = dp.events()?;
        let table = self.table();
        let mut detector = self.detector.lock().expect("detector lock");
        detector.sample(Instant::now(), &counters);
        let health = table
            .iter()
            .flat_map(|(k, bs)| bs.iter().map(move |b| (*k, b.addr)))
            .map(|(k, a)| ((k, a), detector.view(&k, a)))
            .collect();
        Ok(Snapshot {
            table,
            counters,
            events,
            health,
        })
    }

    /// Connections steered per VIP so far (the sum of its backends'
    /// `selected` counters), keyed as [`garrison_proto::vip_key`].
    pub fn vip_connections(&self) -> Result<BTreeMap<String, u64>, DataplaneError> {
        let counters = self.dataplane.lock().expect("dataplane lock").counters()?;
        let mut out = BTreeMap::new();
        for ((vip, _), c) in counters {
            let key = garrison_proto::vip_key(vip.addr.ip(), vip.addr.port(), vip.protocol.into());
            *out.entry(key).or_insert(0) += c.selected;
        }
        Ok(out)
    }

    /// Cheap liveness probe of the data plane: the event counters (a handful
    /// of map reads, unlike [`Shared::snapshot`]) and the number of VIPs.
    pub fn health(&self) -> Result<usize, DataplaneError> {
        self.dataplane.lock().expect("dataplane lock").events()?;
        Ok(self.table.read().expect("table lock").len())
    }

    /// A copy of the agent's own metrics.
    pub fn metrics(&self) -> AgentMetrics {
        self.metrics.lock().expect("metrics lock").clone()
    }

    fn with_metrics(&self, f: impl FnOnce(&mut AgentMetrics)) {
        f(&mut self.metrics.lock().expect("metrics lock"));
    }
}

/// Named VIP settings.
#[derive(Debug, Clone)]
pub struct NamedVips {
    pub range: Ipv4Range,
    /// DNS zone, `l4lb.thisdcos.directory` by default.
    pub zone: String,
    /// Where allocations persist (`None`: memory only).
    pub state_file: Option<PathBuf>,
}

/// A VIP table from the control; `programmed` learns whether the data plane
/// holds it once the loop has applied it (the agent then acknowledges the
/// revision).
#[derive(Debug)]
pub struct ControlTable {
    pub table: SourceTable,
    pub programmed: tokio::sync::oneshot::Sender<bool>,
}

/// The source name of the control's tables.
pub const CONTROL_SOURCE: &str = "control";

/// What the loop watches.
#[derive(Debug)]
pub struct RunConfig {
    pub sources: SourcesConfig,
    pub named: NamedVips,
    /// The task endpoints (`None`: not served).
    pub tasks: Option<api::tasks::TasksApi>,
    /// Tables from the control link (`None`: not following a control). The
    /// control's table never expires: while the control is away the agent
    /// keeps serving the last one.
    pub control: Option<mpsc::Receiver<ControlTable>>,
    /// Who may mutate through the API.
    pub access: Arc<api::auth::ApiAccess>,
    /// The API's Unix socket, bound (`None`: TCP only).
    pub unix: Option<tokio::net::UnixListener>,
}

/// One poll result from a source task.
struct Update {
    source: String,
    result: Result<SourceTable, String>,
    warnings: Vec<String>,
    seen: Instant,
}

async fn poll_mesos(url: String, poll: Duration, timeout: Duration, tx: mpsc::Sender<Update>) {
    let source = format!("mesos {url}");
    loop {
        let fetched = fetch::fetch(&url, timeout).await;
        let seen = Instant::now();
        let (result, warnings) = match fetched {
            Err(e) => (Err(e.to_string()), Vec::new()),
            Ok(text) => match mesos::parse_state(&text) {
                Ok(parsed) => (Ok(parsed.vips), parsed.warnings),
                Err(e) => (Err(format!("{url}: {e}")), Vec::new()),
            },
        };
        let update = Update {
            source: source.clone(),
            result,
            warnings,
            seen,
        };
        if tx.send(update).await.is_err() {
            return;
        }
        tokio::time::sleep(poll).await;
    }
}

fn load_allocator(named: &NamedVips) -> NamedVipAllocator {
    let Some(path) = &named.state_file else {
        return NamedVipAllocator::new(named.range);
    };
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NamedVipAllocator::new(named.range),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read named VIP allocations; starting empty");
            NamedVipAllocator::new(named.range)
        }
        Ok(text) => match NamedVipAllocator::from_json(named.range, &text) {
            Ok((alloc, dropped)) => {
                for d in dropped {
                    tracing::warn!(allocation = %d, range = %named.range, "named VIP allocation outside the range dropped");
                }
                alloc
            }
            Err(e) => {
                let aside = path.with_extension("corrupt");
                let _ = std::fs::rename(path, &aside);
                tracing::error!(file = %path.display(), moved_to = %aside.display(), error = %e, "named VIP allocations unreadable; kept aside, starting empty");
                NamedVipAllocator::new(named.range)
            }
        },
    }
}

fn save_allocator(path: &PathBuf, alloc: &NamedVipAllocator) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, alloc.to_json())?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::error!(file = %path.display(), error = %e, "cannot persist named VIP allocations");
    }
}

/// The loop's own state.
struct Reconciler {
    shared: Arc<Shared>,
    merger: Merger,
    allocator: NamedVipAllocator,
    named: NamedVips,
    last_warnings: BTreeMap<String, Vec<String>>,
    last_vip_errors: Vec<String>,
    /// This host's addresses as last read (no VIP may take one).
    host: HostAddrs,
    trim_pending: bool,
    /// The sources' table before the failure detector's overlay.
    merged: Option<VipTable>,
    /// Whether the last programming attempt succeeded.
    last_apply_ok: bool,
}

impl Reconciler {
    fn log_events(&self, events: Vec<SourceEvent>) {
        for e in events {
            match e {
                SourceEvent::Failing {
                    source,
                    error,
                    kept_vips,
                    grace,
                } => tracing::warn!(
                    %source, %error, kept_vips, grace_secs = grace.as_secs(),
                    "source failing; keeping its last good table for the grace period"
                ),
                SourceEvent::StillFailing { source, error } => {
                    tracing::warn!(%source, %error, "source still failing")
                }
                SourceEvent::Recovered { source } => tracing::info!(%source, "source recovered"),
                SourceEvent::Withdrawn {
                    source,
                    error,
                    after,
                } => tracing::error!(
                    %source, %error, after_secs = after.as_secs(),
                    "source failed for the whole grace period; its VIPs are withdrawn"
                ),
            }
        }
    }

    fn record_source(&self, source: &str, result: &Result<SourceTable, String>) {
        self.shared.with_metrics(|m| {
            let h = m.sources.entry(source.to_string()).or_default();
            match result {
                Ok(t) => {
                    h.up = true;
                    h.vips = t.len();
                    h.last_error = None;
                }
                Err(e) => {
                    h.up = false;
                    h.errors_total += 1;
                    h.last_error = Some(e.clone());
                }
            }
        });
    }

    fn on_update(&mut self, u: Update) {
        if self.last_warnings.get(&u.source) != Some(&u.warnings) {
            for w in &u.warnings {
                tracing::warn!(source = %u.source, "skipped: {w}");
            }
            self.last_warnings.insert(u.source.clone(), u.warnings);
        }
        self.record_source(&u.source, &u.result);
        let (events, changed) = self.merger.update(&u.source, u.result, u.seen);
        self.log_events(events);
        if changed {
            self.rebuild(u.seen);
        }
    }

    /// Runs the failure detector; re-programs when it took a backend out or
    /// let one back in.
    fn on_health_tick(&mut self) {
        let now = Instant::now();
        match self.shared.observe_health(now) {
            Err(e) => tracing::warn!(error = %e, "reading connect outcomes failed"),
            Ok((events, full)) if events.is_empty() => {
                // A pass over every backend leaves garbage worth returning.
                self.trim_pending |= full;
            }
            Ok((events, _)) => {
                for e in &events {
                    match e {
                        HealthEvent::Down {
                            vip,
                            backend,
                            failures,
                        } => {
                            tracing::warn!(%vip, %backend, failures, "backend failing: taken out of selection")
                        }
                        HealthEvent::Retry { vip, backend } => {
                            tracing::info!(%vip, %backend, "backend retried after backoff")
                        }
                    }
                }
                let base = match &self.merged {
                    Some(m) => m.clone(),
                    // Before the sources answered: overlay what is programmed.
                    None => self.shared.table(),
                };
                let table = self.shared.with_detector(&base);
                if !self.shared.is_programmed(&table) {
                    match self.shared.apply(table) {
                        Ok(()) => tracing::info!("VIP table programmed after a health change"),
                        Err(e) => tracing::error!(error = %e, "programming a health change failed"),
                    }
                }
            }
        }
    }

    fn on_tick(&mut self) {
        if std::mem::take(&mut self.trim_pending) {
            // Give the allocator's free pages back after a table change (a
            // large table is parsed, merged and planned in transient copies).
            // SAFETY: malloc_trim has no preconditions.
            #[cfg(target_env = "gnu")]
            unsafe {
                libc::malloc_trim(0);
            }
            tracing::debug!("returned free heap pages to the OS");
        }
        let (events, changed) = self.merger.expire(Instant::now());
        self.log_events(events);
        if changed {
            self.rebuild(Instant::now());
        }
    }

    fn on_file(&mut self, source: &mut FileSource, force: bool) {
        let seen = Instant::now();
        match source.poll(force) {
            FilePoll::Unchanged => {}
            FilePoll::Rejected(e) => {
                // A bad file is an operator mistake, not an outage: keep the
                // last good file table however long it takes to fix.
                tracing::error!(error = %e, "VIP file rejected; keeping the programmed table");
                self.shared.with_metrics(|m| {
                    let h = m.sources.entry("file".into()).or_default();
                    h.up = false;
                    h.errors_total += 1;
                    h.last_error = Some(e.to_string());
                });
            }
            FilePoll::Changed(table) => {
                self.on_update(Update {
                    source: "file".into(),
                    result: Ok(as_source_table(&table, source.path())),
                    warnings: Vec::new(),
                    seen,
                });
            }
        }
    }

    /// A table from the control: merged like any source; answers whether
    /// the data plane holds the result.
    fn on_control(&mut self, t: ControlTable) {
        let seen = Instant::now();
        self.record_source(CONTROL_SOURCE, &Ok(t.table.clone()));
        let (events, changed) = self.merger.update(CONTROL_SOURCE, Ok(t.table), seen);
        self.log_events(events);
        let programmed = if changed {
            self.rebuild(seen)
        } else {
            self.last_apply_ok
        };
        let _ = t.programmed.send(programmed);
    }

    /// Reads the host's addresses again; true when they changed. A failed
    /// read keeps the last ones.
    fn refresh_host(&mut self) -> bool {
        match host_addresses() {
            Ok(addrs) if addrs != self.host => {
                tracing::debug!(addresses = ?addrs, "host addresses changed");
                self.host = addrs;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "reading the host's addresses (getifaddrs) failed; keeping the last ones");
                false
            }
        }
    }

    /// A host address appeared or went: VIPs are judged again.
    fn on_host_tick(&mut self) {
        if self.refresh_host() && self.merged.is_some() {
            self.rebuild(Instant::now());
        }
    }

    /// Logs each refusal once (until it goes and comes back) and publishes
    /// the list for /metrics and the API.
    fn report_refused(&mut self, refused: Vec<RefusedVip>) {
        let before = self.shared.metrics().refused;
        for r in refused.iter().filter(|r| !before.contains(r)) {
            tracing::error!(
                vip = %r.vip, source = %r.source, reason = r.reason.as_str(),
                "{r}"
            );
        }
        for r in before.iter().filter(|r| !refused.contains(r)) {
            tracing::info!(vip = %r.vip, source = %r.source, "VIP no longer refused: gone from its source or no longer unfit");
        }
        self.shared.with_metrics(|m| m.refused = refused);
    }

    /// Rebuilds and programs the table; true when the data plane holds it.
    fn rebuild(&mut self, seen: Instant) -> bool {
        if !self.merger.all_reported() {
            return false;
        }
        self.refresh_host();
        let before = self.allocator.allocations().len();
        let Built {
            table: merged,
            errors,
            refused,
        } = build_table(
            self.merger.tables(),
            &mut self.allocator,
            &self.named.zone,
            &self.host,
        );
        self.report_refused(refused);
        let table = self.shared.with_detector(&merged);
        self.merged = Some(merged);
        if self.allocator.allocations().len() != before
            && let Some(path) = &self.named.state_file
        {
            save_allocator(path, &self.allocator);
        }
        if errors != self.last_vip_errors {
            for e in &errors {
                tracing::error!("VIP left out: {e}");
            }
            self.last_vip_errors = errors.clone();
        }
        self.shared
            .with_metrics(|m| m.vip_errors = errors.len() as u64);
        if self.shared.is_programmed(&table) {
            self.last_apply_ok = true;
            return true;
        }
        let n = table.len();
        match self.shared.apply(table) {
            Ok(()) => {
                let latency = seen.elapsed();
                self.shared.with_metrics(|m| {
                    m.updates_applied += 1;
                    m.update_latency.observe(latency);
                });
                tracing::info!(
                    vips = n,
                    micros = latency.as_micros() as u64,
                    "VIP table programmed"
                );
                self.trim_pending = true;
                self.last_apply_ok = true;
            }
            Err(e) => {
                self.shared.with_metrics(|m| m.apply_errors += 1);
                tracing::error!(error = %e, "programming the VIP table failed; previous table kept");
                self.last_apply_ok = false;
            }
        }
        self.last_apply_ok
    }
}

/// Serves the API on `listener` and keeps the data plane in step with the
/// sources until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let app = api::app(shared.clone(), config.tasks.clone(), config.access.clone());
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let unix_server = config.unix.map(|unix| {
        let served = axum::serve(
            unix,
            app.clone()
                .into_make_service_with_connect_info::<api::auth::UnixPeer>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));
        tokio::spawn(async move { served.await })
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let server = tokio::spawn(async move { server.await });

    let sources = &config.sources;
    let mut merger = Merger::new(sources.grace);
    let (tx, mut rx) = mpsc::channel::<Update>(64);
    let mut pollers = Vec::new();
    for url in &sources.mesos_state {
        merger.register(&format!("mesos {url}"));
        pollers.push(tokio::spawn(poll_mesos(
            url.clone(),
            sources.mesos_poll,
            sources.mesos_timeout,
            tx.clone(),
        )));
    }
    drop(tx);
    let mut control = config.control;
    if control.is_some() {
        // Never expires: only the control's own tables replace it.
        merger.register(CONTROL_SOURCE);
    }
    let mut file = sources.vips_file.clone().map(FileSource::new);
    if file.is_some() {
        merger.register("file");
    }
    let mut rec = Reconciler {
        allocator: load_allocator(&config.named),
        shared: shared.clone(),
        merger,
        named: config.named.clone(),
        last_warnings: BTreeMap::new(),
        last_vip_errors: Vec::new(),
        host: HostAddrs::new(),
        trim_pending: false,
        merged: None,
        last_apply_ok: true,
    };
    if let Some(src) = file.as_mut() {
        rec.on_file(src, true);
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut file_tick = tokio::time::interval(sources.vips_poll);
    let mut grace_tick = tokio::time::interval(Duration::from_secs(1));
    let mut host_tick = tokio::time::interval(Duration::from_secs(5));
    host_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health_tick = tokio::time::interval(Duration::from_millis(100));
    health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = stop_rx.changed() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading sources");
                if let Some(src) = file.as_mut() { rec.on_file(src, true); }
            }
            _ = file_tick.tick() => {
                if let Some(src) = file.as_mut() { rec.on_file(src, false); }
            }
            Some(update) = rx.recv() => rec.on_update(update),
            Some(table) = async {
                match control.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            } => rec.on_control(table),
            _ = grace_tick.tick() => rec.on_tick(),
            _ = health_tick.tick() => rec.on_health_tick(),
            _ = host_tick.tick() => rec.on_host_tick(),
        }
    }
    for p in pollers {
        p.abort();
    }
    let _ = stop_tx.send(true);
    if let Some(unix) = unix_server {
        match unix.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the API's Unix socket server failed"),
            Err(e) => tracing::warn!(error = %e, "the API's Unix socket server panicked"),
        }
    }
    match server.await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    }
}
