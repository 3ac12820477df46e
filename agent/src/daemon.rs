//! The agent's run loop: sources → [`VipTable`] → data plane, and the API over
//! the shared state. `run(listener, shared, config, shutdown)` takes its
//! listener and shutdown signal from the caller (tests inject both).
use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    api::{self, views::Snapshot},
    dataplane::{Dataplane, EbpfError},
    sources::file::{FilePoll, FileSource},
    vip::VipTable,
};

/// State shared by the reload loop and the API.
pub struct Shared {
    table: RwLock<VipTable>,
    dataplane: Mutex<Box<dyn Dataplane + Send>>,
}

impl Shared {
    /// `table` is what the data plane holds now (e.g. re-adopted from pins).
    pub fn new(dataplane: Box<dyn Dataplane + Send>, table: VipTable) -> Self {
        Shared {
            table: RwLock::new(table),
            dataplane: Mutex::new(dataplane),
        }
    }

    /// The programmed table.
    pub fn table(&self) -> VipTable {
        self.table.read().expect("table lock").clone()
    }

    /// Programs `table`; on success it becomes the served table, on error the
    /// previous one stays programmed and served.
    pub fn apply(&self, table: VipTable) -> Result<(), EbpfError> {
        let mut dp = self.dataplane.lock().expect("dataplane lock");
        dp.apply(&table)?;
        *self.table.write().expect("table lock") = table;
        Ok(())
    }

    /// Table and kernel counters, read together.
    pub fn snapshot(&self) -> Result<Snapshot, EbpfError> {
        let dp = self.dataplane.lock().expect("dataplane lock");
        let counters = dp.counters()?;
        Ok(Snapshot {
            table: self.table(),
            counters,
        })
    }
}

/// What the loop watches.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The static VIP file, if any.
    pub vips: Option<PathBuf>,
    /// How often the file is checked for changes.
    pub poll_interval: Duration,
}

fn reload(shared: &Shared, source: &mut FileSource, force: bool) {
    match source.poll(force) {
        FilePoll::Unchanged => {}
        FilePoll::Rejected(e) => {
            tracing::error!(error = %e, "VIP file rejected; keeping the programmed table");
        }
        FilePoll::Changed(table) => {
            let n = table.len();
            let started = std::time::Instant::now();
            match shared.apply(table) {
                Ok(()) => tracing::info!(
                    file = %source.path().display(),
                    vips = n,
                    micros = started.elapsed().as_micros() as u64,
                    "VIP table programmed"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "programming the VIP table failed; previous table kept")
                }
            }
        }
    }
}

/// Serves the API on `listener` and keeps the data plane in step with the
/// sources until `shutdown` completes. SIGHUP forces a re-read of the file.
pub async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server =
        axum::serve(listener, api::router(shared.clone())).with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|s| *s).await;
        });
    let server = tokio::spawn(async move { server.await });

    let mut source = config.vips.map(FileSource::new);
    if let Some(src) = source.as_mut() {
        reload(&shared, src, true);
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(config.poll_interval);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading sources");
                if let Some(src) = source.as_mut() { reload(&shared, src, true); }
            }
            _ = tick.tick() => {
                if let Some(src) = source.as_mut() { reload(&shared, src, false); }
            }
            _ = stop_rx.changed() => break,
        }
    }
    let _ = stop_tx.send(true);
    match server.await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    }
}
