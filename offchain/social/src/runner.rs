//! Running the monitor: the shared [`Monitor`] (pipeline, store, fan-outs, health, metrics), one task per source
//! ([`spawn_source`], generic over [`Source`]), the HTTP server, the fixture server for the offline demo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::config::{Config, SourceConfig, SourceKind};
use crate::fanout::{Bus, Fanout};
use crate::metrics::{ErrorLabel, Metrics, SkipLabel, SourceLabel};
use crate::pipeline::{Origin, Outcome, Pipeline, Rules};
use crate::source::{Backoff, Health, Source, SourceError, State};
use crate::store::{Committed, Store, StoredItem, Writes};

/// How far back the pipeline's state is refilled from the store at start.
fn warm_since(rules: &Rules, now_ms: u64) -> u64 {
    let span = rules
        .dedup_window_ms
        .max(rules.spam.window_ms)
        .max(rules.score.bucket_ms * (rules.score.baseline_buckets as u64 + 1));
    now_ms.saturating_sub(span)
}

/// What every source task shares.
pub struct Monitor {
    pub store: Store,
    /// Held across the pipeline and the store's commit, so the pipeline's memory never runs ahead of the store.
    pipeline: tokio::sync::Mutex<Pipeline>,
    pub bus: Bus,
    fanouts: Vec<Arc<dyn Fanout>>,
    health: parking_lot::RwLock<BTreeMap<String, Health>>,
    pub metrics: Metrics,
    rules: Rules,
}

impl Monitor {
    /// Registers each fan-out's own metrics (the Redis publisher's counters).
    pub fn register_fanout_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        for f in &self.fanouts {
            f.register_metrics(registry);
        }
    }

    /// A monitor over `store`, its pipeline state refilled from the store. Accepted items go to the returned
    /// monitor's [`Bus`] and to `fanouts`.
    pub async fn new(store: Store, rules: Rules, fanouts: Vec<Arc<dyn Fanout>>) -> Result<Arc<Monitor>> {
        let pipeline = Self::warmed(&store, &rules).await?;
        Ok(Arc::new(Monitor {
            store,
            pipeline: tokio::sync::Mutex::new(pipeline),
            bus: Bus::new(),
            fanouts,
            health: Default::default(),
            metrics: Metrics::default(),
            rules,
        }))
    }

    async fn warmed(store: &Store, rules: &Rules) -> Result<Pipeline> {
        let since = warm_since(rules, crate::now_ms());
        let mut p = Pipeline::new(rules.clone());
        p.warm(&store.fingerprints(since).await?, &store.authors(since).await?, &store.mentions(since).await?);
        Ok(p)
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// An asset's current volume z-score.
    pub async fn current_z(&self, asset: &str, now_ms: u64) -> f64 {
        self.pipeline.lock().await.current_z(asset, now_ms)
    }

    /// Runs a batch through the pipeline, stores what it accepts with `cursor` (one transaction), fans it out.
    pub async fn ingest(
        &self,
        origin: &Origin,
        items: Vec<Result<crate::item::RawItem, crate::item::Skip>>,
        cursor: &str,
        now_ms: u64,
    ) -> Result<(Vec<StoredItem>, Outcome)> {
        self.ingest_changes(origin, items, vec![], cursor, now_ms).await.map(|(c, o)| (c.written, o))
    }

    /// [`Monitor::ingest`] with the batch's edits and deletions (applied after its items, in the same transaction):
    /// an applied edit goes out as the item's new version, a deletion as a deletion; both are counted on
    /// `/metrics` (`social_items_edited_total`, `social_items_deleted_total`).
    pub async fn ingest_changes(
        &self,
        origin: &Origin,
        items: Vec<Result<crate::item::RawItem, crate::item::Skip>>,
        changes: Vec<crate::item::Change>,
        cursor: &str,
        now_ms: u64,
    ) -> Result<(Committed, Outcome)> {
        let started = std::time::Instant::now();
        let mut pipeline = self.pipeline.lock().await;
        let mut out = pipeline.process(origin, items, now_ms);
        pipeline.process_changes(origin, changes, now_ms, &mut out);
        let writes = Writes {
            items: std::mem::take(&mut out.accepted),
            edits: std::mem::take(&mut out.edits),
            deletes: std::mem::take(&mut out.deletes),
        };
        let n = writes.items.len();
        let committed = match self.store.commit_changes(&origin.name, writes, &out.skips(), cursor, now_ms).await {
            Ok(w) => w,
            Err(e) => {
                // The pipeline remembered items the store does not have: rebuild its memory from the store.
                match Self::warmed(&self.store, &self.rules).await {
                    Ok(p) => *pipeline = p,
                    Err(e2) => tracing::error!(error = %e2, "refilling the pipeline from the store failed"),
                }
                return Err(e);
            }
        };
        drop(pipeline);
        let written = &committed.written;
        // Ids already stored (accepted before the de-duplication window) are duplicates.
        let dups = (n - written.len()) as u64;
        if dups > 0 {
            *out.skipped.entry(crate::item::Skip::Duplicate).or_default() += dups;
        }
        let fanouts = || std::iter::once(&self.bus as &dyn Fanout).chain(self.fanouts.iter().map(|f| f.as_ref()));
        for w in written {
            let item = Arc::new(w.item.clone());
            fanouts().for_each(|f| f.publish(&item));
        }
        for w in &committed.edited {
            let item = Arc::new(w.item.clone());
            fanouts().for_each(|f| f.edit(&item));
        }
        for w in &committed.deleted {
            let item = Arc::new(w.item.clone());
            fanouts().for_each(|f| f.delete(&item));
        }
        let label = SourceLabel { source: origin.name.clone() };
        self.metrics.accepted.get_or_create(&label).inc_by(written.len() as u64);
        self.metrics.edited.get_or_create(&label).inc_by(committed.edited.len() as u64);
        self.metrics.deleted.get_or_create(&label).inc_by(committed.deleted.len() as u64);
        for (k, v) in &out.skipped {
            self.metrics
                .skipped
                .get_or_create(&SkipLabel { source: origin.name.clone(), reason: k.as_str().into() })
                .inc_by(*v);
        }
        self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        self.update(&origin.name, |h| {
            h.accepted += written.len() as u64;
            h.skipped += out.skipped_total();
        });
        Ok((committed, out))
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Health)) {
        let mut map = self.health.write();
        if let Some(h) = map.get_mut(name) {
            f(h);
        }
    }

    /// Every source's health, by name.
    pub fn health(&self) -> Vec<Health> {
        self.health.read().values().cloned().collect()
    }

    fn register(&self, name: &str, kind: &str) {
        self.health.write().insert(name.to_string(), Health::new(name, kind));
    }

    fn record(&self, name: &str, state: State, error: Option<&SourceError>, failures: u32) {
        let up = matches!(state, State::Ok);
        self.metrics.up.get_or_create(&SourceLabel { source: name.into() }).set(up as i64);
        if let Some(e) = error {
            let kind = match e {
                SourceError::Transient(_) => "transient",
                SourceError::RateLimited { .. } => "rate_limited",
                SourceError::Fatal(_) => "fatal",
            };
            self.metrics.errors.get_or_create(&ErrorLabel { source: name.into(), kind: kind.into() }).inc();
        }
        self.update(name, |h| {
            h.state = state;
            h.consecutive_failures = failures;
            if up {
                h.last_ok_ms = Some(crate::now_ms());
            }
            if let Some(e) = error {
                h.last_error = Some(e.to_string());
            }
        });
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Drives `src` until `shutdown` turns true or it fails fatally: reads the saved cursor, then asks for batch after
/// batch, ingesting each with its cursor; waits as the batch says, or the backoff after a failure.
pub fn spawn_source<S: Source>(
    m: Arc<Monitor>,
    mut src: S,
    origin: Origin,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    m.register(&origin.name, src.kind());
    tokio::spawn(async move {
        let name = origin.name.clone();
        let mut cursor: S::Cursor = loop {
            match m.store.cursor(&name).await {
                Ok(Some(json)) => match serde_json::from_str(&json) {
                    Ok(c) => break c,
                    Err(e) => {
                        // Items already stored are still refused by their id, so nothing is stored twice.
                        tracing::warn!(source = %name, error = %e, "the saved cursor does not read; starting afresh");
                        break S::Cursor::default();
                    }
                },
                Ok(None) => break S::Cursor::default(),
                Err(e) => {
                    tracing::warn!(source = %name, error = %e, "reading the cursor failed; retrying");
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = stopped(&mut shutdown) => return }
                }
            }
        };
        let mut backoff = Backoff::default();
        loop {
            let r = tokio::select! {
                r = src.next(&cursor) => r,
                _ = stopped(&mut shutdown) => return,
            };
            let wait = match r {
                Ok(batch) => {
                    let json = serde_json::to_string(&batch.cursor).unwrap_or_else(|_| "null".into());
                    match m.ingest_changes(&origin, batch.items, batch.changes, &json, crate::now_ms()).await {
                        Ok(_) => {
                            cursor = batch.cursor;
                            backoff.succeed();
                            m.record(&name, State::Ok, None, 0);
                            batch.wait
                        }
                        Err(e) => {
                            tracing::error!(source = %name, error = %format!("{e:#}"), "storing a batch failed; it is fetched again");
                            let err = SourceError::Transient(format!("store: {e}"));
                            let w = backoff.fail(&err);
                            m.record(&name, State::Retrying, Some(&err), backoff.failures());
                            w
                        }
                    }
                }
                Err(e) => {
                    let w = backoff.fail(&e);
                    let state = match &e {
                        SourceError::Fatal(_) => State::Stopped,
                        SourceError::RateLimited { .. } => State::RateLimited,
                        SourceError::Transient(_) => State::Retrying,
                    };
                    m.record(&name, state, Some(&e), backoff.failures());
                    if state == State::Stopped {
                        tracing::error!(source = %name, error = %e, "source stopped");
                        return;
                    }
                    tracing::warn!(source = %name, error = %e, wait_ms = w.as_millis() as u64, "source call failed; backing off");
                    w
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(&mut shutdown) => return,
                }
            }
        }
    })
}

fn origin(s: &SourceConfig) -> Origin {
    Origin { name: s.name.clone(), kind: s.kind.name().into(), weight: s.weight, trusted: s.trusted }
}

/// Starts the configured sources on `m`.
pub fn spawn_sources(
    m: &Arc<Monitor>,
    sources: &[SourceConfig],
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for s in sources {
        let o = origin(s);
        let t = match &s.kind {
            SourceKind::Rss(c) => {
                spawn_source(m.clone(), crate::sources::rss::RssSource::new(&s.name, c.clone()), o, shutdown.clone())
            }
            SourceKind::HttpJson(c) => match crate::sources::json::JsonSource::new(&s.name, (**c).clone()) {
                Ok(src) => spawn_source(m.clone(), src, o, shutdown.clone()),
                Err(e) => {
                    m.register(&s.name, "http_json");
                    m.record(&s.name, State::Stopped, Some(&SourceError::Fatal(e.clone())), 0);
                    tracing::error!(source = %s.name, error = %e, "source not started");
                    continue;
                }
            },
            SourceKind::Keeper(c) => spawn_source(
                m.clone(),
                crate::sources::keeper::KeeperSource::new(&s.name, c.clone()),
                o,
                shutdown.clone(),
            ),
            SourceKind::Discord(c) => match crate::sources::discord::DiscordSource::new(&s.name, c.clone()) {
                Ok(src) => spawn_source(m.clone(), src, o, shutdown.clone()),
                Err(e) => {
                    m.register(&s.name, "discord");
                    m.record(&s.name, State::Stopped, Some(&e), 0);
                    tracing::error!(source = %s.name, error = %e, "source not started");
                    continue;
                }
            },
            SourceKind::Telegram(c) => match crate::sources::telegram::TelegramSource::new(&s.name, c.clone()) {
                Ok(src) => spawn_source(m.clone(), src, o, shutdown.clone()),
                Err(e) => {
                    m.register(&s.name, "telegram");
                    m.record(&s.name, State::Stopped, Some(&e), 0);
                    tracing::error!(source = %s.name, error = %e, "source not started");
                    continue;
                }
            },
        };
        tasks.push(t);
    }
    tasks
}

/// A running monitor.
pub struct Running {
    pub addr: SocketAddr,
    pub fixtures_addr: Option<SocketAddr>,
    pub monitor: Arc<Monitor>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the sources and the servers and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts everything `cfg` describes: the store, the fixture server (if any), the fan-outs, the sources, the HTTP
/// server. Returns once all are listening.
pub async fn start(cfg: &Config) -> Result<Running> {
    let store = Store::connect(&cfg.store).await?;
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    let fixtures_addr = match &cfg.fixtures {
        Some((dir, addr)) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the fixture server on {addr}"))?;
            let a = l.local_addr()?;
            let mut sd = shutdown.clone();
            let app = crate::server::fixtures(dir.clone());
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(l, app).with_graceful_shutdown(async move { stopped(&mut sd).await }).await;
            }));
            tracing::info!(dir = %dir.display(), url = %format!("http://{a}/"), "serving the fixture feeds");
            Some(a)
        }
        None => None,
    };
    let mut fanouts: Vec<Arc<dyn Fanout>> = Vec::new();
    if let Some(r) = &cfg.redis {
        fanouts.push(Arc::new(crate::fanout::redis::RedisFanout::start(r).context("starting the Redis fan-out")?));
    }
    let m = Monitor::new(store, cfg.rules.clone(), fanouts).await?;
    tasks.extend(spawn_sources(&m, &cfg.sources, &shutdown));
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the API on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let server = crate::server::Server::new(m.clone(), cfg.limits.clone());
    let mut sd = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.serve(listener, async move { stopped(&mut sd).await }).await {
            tracing::error!(error = %e, "the API server failed");
        }
    }));
    tracing::info!(api = %format!("http://{addr}/"), sources = cfg.sources.len(), "social monitor running");
    Ok(Running { addr, fixtures_addr, monitor: m, stop, tasks })
}
