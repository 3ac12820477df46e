//! `garrison-control run`: the effects around [`Cluster`].
//!
//! - this file: [`Control`] (the cluster behind one lock, the store, the agent
//!   streams, the event bus, the DNS view) and [`run`].
//! - [`marathon_api`]: `/v2/apps`, `/v2/tasks`, `/v2/deployments`, `/v2/info`,
//!   `/v2/events`.
//! - [`agents`]: the agents' WebSocket stream (`/v1/agents/stream`) and
//!   `/v1/agents`, `/v1/vips`.
//! - [`mesos_dns`]: Mesos-DNS's HTTP API (`/v1/version`, `/v1/hosts/{host}`,
//!   `/v1/services/{service}`) and the DNS server on UDP and TCP.
//!
//! - [`acs`]: DC/OS IAM's login and accounts (`/acs/api/v1/…`), join tokens.
//! - [`guard`]: the token check of every non-public route (401 `oauthjwt`).
//! - [`routes`]: the route table (method, path, access) the router is built from.
//! - [`listener`]: TCP with TLS handshakes off the accept path.
//!
//! Every route needs a session token except `/ping`, the login and the
//! agents' stream (which takes a join token or the agent's own credential).
//! The Marathon and Mesos-DNS APIs are also served under Admin Router's
//! prefixes `/marathon` and `/mesos_dns`.
//!
//! Locks, in the order they may be taken: `cluster`, then `links`; the
//! `authority` and the [`Auth`] locks are taken alone. None is held across
//! an `.await`. A poisoned `cluster` lock stops the process (a decision
//! panicked half-way; the store has the last committed state); the others
//! are taken over.
//!
//! Every change goes through [`Control::mutate`]: the cluster decides, orders
//! go to the agents' streams and events to `/v2/events` subscribers, then the
//! store commits (fsync) the changed records before the API answers; all under
//! the cluster lock (never held across an `.await`).
pub mod acs;
pub mod agents;
pub mod guard;
pub mod listener;
pub mod marathon_api;
pub mod mesos_dns;
pub mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use garrison_proto::ControlMessage;
use tokio::sync::{broadcast, mpsc};

use crate::auth::Auth;
use crate::cluster::{Cluster, Outgoing};
use crate::dns::answer::{Authority, Zone};
use crate::dns::records::GeneratorConfig;
use crate::store::{Store, StoreError};

/// An agent's open stream: its connection number and its queue of
/// messages, already encoded (cheap to clone: shared bytes).
struct AgentLink {
    conn: u64,
    tx: mpsc::UnboundedSender<axum::extract::ws::Utf8Bytes>,
}

fn encode(m: &ControlMessage) -> axum::extract::ws::Utf8Bytes {
    serde_json::to_string(m).expect("serialisable").into()
}

/// Settings of a running control.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address agents and clients reach the control at (leader.mesos).
    pub advertise: SocketAddr,
    /// Whether the API is served over TLS (cookies get `Secure`).
    pub tls: bool,
    /// The Mesos-DNS zone (`mesos`).
    pub domain: String,
    /// The periodic pass (timeouts, deployments).
    pub tick: Duration,
    /// Upstream DNS server for names outside our zones (`None`: REFUSED).
    pub dns_forward: Option<SocketAddr>,
}

/// The running control.
pub struct Control {
    cluster: Mutex<Cluster>,
    store: Arc<Store>,
    auth: Arc<Auth>,
    links: Mutex<HashMap<String, AgentLink>>,
    events: broadcast::Sender<serde_json::Value>,
    authority: RwLock<Arc<Authority>>,
    config: ServerConfig,
    started: Instant,
    next_conn: std::sync::atomic::AtomicU64,
    /// Flips to true at shutdown: long-lived responses (`/v2/events`) end.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The cluster's DNS epoch the records were last built at.
    dns_epoch: std::sync::atomic::AtomicU64,
}

/// An API or store failure, mapped to an HTTP status by the handlers.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Control {
    /// Restores the cluster from `store` and serves from now on.
    pub fn new(
        store: Arc<Store>,
        auth: Arc<Auth>,
        cluster_config: crate::cluster::ClusterConfig,
        config: ServerConfig,
    ) -> Result<Arc<Control>, StoreError> {
        let (apps, tasks, meta) = store.load()?;
        tracing::info!(
            apps = apps.len(),
            tasks = tasks.len(),
            "restored from the store"
        );
        let nonce = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u32)
            ^ std::process::id().rotate_left(16);
        let cluster = Cluster::restore(cluster_config, apps, tasks, meta, nonce, 0);
        let (events, _) = broadcast::channel(1024);
        let control = Arc::new(Control {
            cluster: Mutex::new(cluster),
            store,
            auth,
            links: Mutex::new(HashMap::new()),
            events,
            authority: RwLock::new(Arc::new(Authority::default())),
            config,
            started: Instant::now(),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            stopping: tokio::sync::watch::channel(false).0,
            dns_epoch: std::sync::atomic::AtomicU64::new(0),
        });
        {
            let cluster = control.cluster.lock().expect("cluster");
            control.refresh_authority(&cluster);
            control
                .dns_epoch
                .store(cluster.dns_epoch(), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(control)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `f` on the cluster, then the periodic pass, commits, and sends
    /// what the cluster produced. A failed commit is returned (the change
    /// stays in memory and is retried with the next commit).
    pub fn mutate<R>(&self, f: impl FnOnce(&mut Cluster, u64) -> R) -> Result<R, ControlError> {
        self.mutate_with(true, f)
    }

    /// Like [`Control::mutate`] without the periodic pass, for messages that
    /// change no decision input (heartbeats, counters, acks): at a thousand
    /// agents a full pass per heartbeat would be a thousand passes a second.
    /// The timer's pass picks up what they changed.
    pub fn note<R>(&self, f: impl FnOnce(&mut Cluster, u64) -> R) -> Result<R, ControlError> {
        self.mutate_with(false, f)
    }

    fn mutate_with<R>(
        &self,
        pass: bool,
        f: impl FnOnce(&mut Cluster, u64) -> R,
    ) -> Result<R, ControlError> {
        let now = self.now_ms();
        let mut cluster = self.cluster.lock().expect("cluster");
        let result = f(&mut cluster, now);
        if pass {
            cluster.tick(now);
        }
        // Orders and tables go out before the commit: they are safe to lose
        // or to outlive a crash (a restarted control reconciles with what the
        // agents report: unknown tasks are killed, missing ones lost), and a
        // drain must not wait for an fsync. The caller's answer waits for it.
        let out = cluster.drain();
        self.dispatch(out);
        let epoch = cluster.dns_epoch();
        if self
            .dns_epoch
            .swap(epoch, std::sync::atomic::Ordering::Relaxed)
            != epoch
        {
            self.refresh_authority(&cluster);
        }
        let dirty = cluster.take_dirty();
        let committed = self.store.commit(&cluster, &dirty);
        if committed.is_err() {
            // Keep the records dirty for the next commit.
            cluster.restore_dirty(dirty);
        }
        committed?;
        Ok(result)
    }

    /// Reads the cluster.
    pub fn read<R>(&self, f: impl FnOnce(&Cluster, u64) -> R) -> R {
        let now = self.now_ms();
        f(&self.cluster.lock().expect("cluster"), now)
    }

    fn dispatch(&self, out: Vec<Outgoing>) {
        let links = self.links.lock().expect("links");
        for o in out {
            match o {
                Outgoing::ToAgent(agent, m) => match links.get(&agent) {
                    Some(link) => {
                        let _ = link.tx.send(encode(&m));
                    }
                    None => {
                        tracing::debug!(%agent, "agent not connected; order dropped (replayed at registration)")
                    }
                },
                Outgoing::Broadcast(m) => {
                    let text = encode(&m);
                    for link in links.values() {
                        let _ = link.tx.send(text.clone());
                    }
                }
                Outgoing::Event(e) => {
                    let _ = self.events.send(e);
                }
            }
        }
    }

    fn refresh_authority(&self, cluster: &Cluster) {
        let domain = self.config.domain.clone();
        let generator = GeneratorConfig {
            domain: domain.clone(),
            ..GeneratorConfig::default()
        };
        let records = cluster.records(self.config.advertise, &generator);
        let authority = Authority {
            zones: vec![
                Zone {
                    origin: format!("{domain}."),
                    ttl: 60,
                },
                Zone {
                    origin: format!("{}.", garrison_proto::named::L4LB_ZONE),
                    ttl: 5,
                },
            ],
            records,
        };
        *self.authority.write().expect("authority") = Arc::new(authority);
    }

    /// The records DNS answers from.
    pub fn authority(&self) -> Arc<Authority> {
        self.authority.read().expect("authority").clone()
    }

    /// Subscribes to `/v2/events`, and to the shutdown that ends it.
    pub fn subscribe(
        &self,
    ) -> (
        broadcast::Receiver<serde_json::Value>,
        tokio::sync::watch::Receiver<bool>,
    ) {
        (self.events.subscribe(), self.stopping.subscribe())
    }

    /// Accounts, tokens and agent credentials.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The same, to move into a blocking task.
    pub fn auth_handle(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Registers an agent's stream. A second live stream of the same agent
    /// is refused (`None`), unless the agent was declared lost (its old
    /// stream is then replaced and ends).
    fn attach(
        &self,
        agent: &str,
        tx: mpsc::UnboundedSender<axum::extract::ws::Utf8Bytes>,
    ) -> Option<u64> {
        // An agent not registered yet is not lost: its first stream is
        // between `attach` and its registration, and keeps its place.
        let lost = self.read(|c, _| c.agents.get(agent).is_some_and(|a| a.lost));
        let conn = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut links = self.links.lock().expect("links");
        if links.get(agent).is_some_and(|l| !l.tx.is_closed()) && !lost {
            return None;
        }
        links.insert(agent.to_string(), AgentLink { conn, tx });
        Some(conn)
    }

    /// Ends an agent's stream (revocation): its queue closes, so its serving
    /// task closes the socket.
    fn disconnect(&self, agent: &str) -> bool {
        self.links.lock().expect("links").remove(agent).is_some()
    }

    /// Every route: method, path, access (the router is built from it).
    pub fn routes(self: &Arc<Self>) -> routes::Routes {
        use axum::http::Method;
        routes::Routes::new(self)
            .route(Method::GET, "/ping", routes::Access::Public, ping)
            .merge(marathon_api::routes(self))
            .nest("/marathon", marathon_api::routes(self))
            .merge(mesos_dns::routes(self))
            .nest("/mesos_dns", mesos_dns::routes(self))
            .merge(agents::routes(self))
            .merge(acs::routes(self))
    }

    /// Forgets a stream if it is still the agent's current one.
    fn detach(&self, agent: &str, conn: u64) -> bool {
        let mut links = self.links.lock().expect("links");
        if links.get(agent).is_some_and(|l| l.conn == conn) {
            links.remove(agent);
            return true;
        }
        false
    }
}

/// Marathon's liveness answer.
async fn ping() -> &'static str {
    "pong"
}

/// Serves HTTP on `http`, DNS on `dns_udp`/`dns_tcp`, and runs the periodic
/// pass until `shutdown` completes.
pub async fn run(
    control: Arc<Control>,
    http: listener::ApiListener,
    dns_udp: tokio::net::UdpSocket,
    dns_tcp: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let app = control.routes().into_router();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let server = axum::serve(http, app).with_graceful_shutdown(async move {
        let _ = http_stop.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    let udp = tokio::spawn(mesos_dns::serve_udp(
        control.clone(),
        dns_udp,
        stop_rx.clone(),
    ));
    let tcp = tokio::spawn(mesos_dns::serve_tcp(
        control.clone(),
        dns_tcp,
        stop_rx.clone(),
    ));
    let mut tick = tokio::time::interval(control.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                if let Err(e) = control.mutate(|_, _| ()) {
                    tracing::error!(error = %e, "committing the periodic pass failed");
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    control.stopping.send_replace(true);
    udp.abort();
    tcp.abort();
    match server.await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    }
}
