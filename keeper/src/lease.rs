//! Several keepers on one PostgreSQL store: each market is driven by the holder of its lease (active/passive).
//!
//! A lease is a row renewed in the background on the database's clock (`now()` in SQL, never a host's clock) with
//! an epoch that grows by one at every change of term: Kleppmann's fencing token. A keeper keeps sending only while
//! it renewed its term recently enough on its own monotonic clock (`valid_until`, a margin before the database could
//! let anyone else take over), and the database refuses the rows it writes for the market once the term is over. A
//! keeper that loses its lease stops sending at once, steps down to standby and says so (log, `/health`, an alert).
//!
//! With SQLite the store is one keeper's: the lease is always held and nothing is written for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kronos_common::signals::SignalKind;
use kronos_common::Bus;
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{MarketLabel, Metrics};
use crate::store::{FenceToken, LeaseRow, Store};

/// Lease timing (`keeper.lease_ttl_ms`, `keeper.lease_refresh_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a term lasts on the database's clock after its last renewal.
    pub ttl: Duration,
    /// How often the holder renews (and a standby tries to take over).
    pub refresh: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming { ttl: Duration::from_secs(10), refresh: Duration::from_secs(1) }
    }
}

impl LeaseTiming {
    /// Until when a term renewed by a statement sent at `sent` may be used to send: a quarter of the TTL before the
    /// database can expire it (the database stamps the renewal at or after `sent`), for the time between the last
    /// check and a broadcast reaching the node.
    pub fn valid_until(&self, sent: Instant) -> Instant {
        sent + self.ttl - self.ttl / 4
    }
}

/// `keeper.lease_ttl_ms`, `keeper.lease_refresh_ms`, `keeper.shared_signer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseSettings {
    pub timing: LeaseTiming,
    /// Keepers share one signer key: nonces come from the store's nonce authority (PostgreSQL only).
    pub shared_signer: bool,
}

impl LeaseSettings {
    /// Validates the settings; errors name the field.
    pub fn parse(
        ttl_ms: Option<u64>,
        refresh_ms: Option<u64>,
        shared_signer: bool,
        store: &str,
    ) -> Result<LeaseSettings, (String, String)> {
        let d = LeaseTiming::default();
        let ttl = ttl_ms.map(Duration::from_millis).unwrap_or(d.ttl);
        let refresh = refresh_ms.map(Duration::from_millis).unwrap_or(d.refresh);
        if refresh < Duration::from_millis(100) {
            return Err(("keeper.lease_refresh_ms".into(), format!("{} is below 100", refresh.as_millis())));
        }
        if ttl < refresh * 3 {
            return Err((
                "keeper.lease_ttl_ms".into(),
                format!(
                    "{} must be at least 3 × lease_refresh_ms ({}), so that a missed renewal does not end a term",
                    ttl.as_millis(),
                    refresh.as_millis()
                ),
            ));
        }
        if shared_signer && !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
            return Err((
                "keeper.shared_signer".into(),
                "a signer shared by several keepers needs a PostgreSQL store (its nonce authority)".into(),
            ));
        }
        Ok(LeaseSettings { timing: LeaseTiming { ttl, refresh }, shared_signer })
    }
}

/// What a keeper knows of one market's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseView {
    /// SQLite: the only keeper; always leads, never fenced.
    Single,
    /// Another keeper leads (or nobody yet).
    Standby { leader: Option<String>, epoch: i64, since_ms: i64 },
    /// This keeper leads under `epoch`; it may send until `valid_until`.
    Leading { epoch: i64, since_ms: i64, valid_until: Instant },
}

/// A change of a keeper's role on a market, to be logged, counted and alerted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// This keeper began a term; `from` is the previous holder when it was another keeper (a takeover).
    Acquired { epoch: i64, from: Option<String> },
    /// This keeper's term ended: another keeper took it, or it could not renew it in time.
    Lost { epoch: i64, why: String },
}

/// Whether a keeper may send (and write) under term `epoch` at `now`.
pub fn may_send(view: &LeaseView, epoch: i64, now: Instant) -> bool {
    match view {
        LeaseView::Single => true,
        LeaseView::Leading { epoch: e, valid_until, .. } => *e == epoch && now < *valid_until,
        LeaseView::Standby { .. } => false,
    }
}

/// Until when a term renewed (or taken) by a statement sent at `sent` may be used to send, from the database's own
/// answer: the time it still had left on its clock (`expires_ms − db_now_ms`) less a quarter of the TTL, and never
/// later than [`LeaseTiming::valid_until`].
pub fn valid_until_from(row: &LeaseRow, sent: Instant, timing: &LeaseTiming) -> Instant {
    let left = Duration::from_millis((row.expires_ms - row.db_now_ms).max(0) as u64);
    let by_db = (sent + left).checked_sub(timing.ttl / 4).unwrap_or(sent).max(sent);
    by_db.min(timing.valid_until(sent))
}

/// This process as a lease holder: its keeper id and its random instance id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me<'a> {
    pub id: &'a str,
    pub instance: &'a str,
}

impl Me<'_> {
    fn is(&self, r: &LeaseRow) -> bool {
        r.holder == self.id && r.instance == self.instance
    }
}

/// A live lease held under this keeper's id by another process (another instance id): two keepers were given one
/// `keeper_id`. The other instance's id, to be reported as an error.
pub fn duplicate_of<'r>(row: &'r LeaseRow, me: &Me) -> Option<&'r str> {
    (row.holder == me.id && row.instance != me.instance && row.expires_ms > row.db_now_ms)
        .then_some(row.instance.as_str())
}

/// How long a send under term `epoch` may still take at `now` (`None`: no limit).
pub fn send_window(view: &LeaseView, epoch: i64, now: Instant) -> Option<Duration> {
    match view {
        LeaseView::Single => None,
        LeaseView::Leading { epoch: e, valid_until, .. } if *e == epoch => {
            Some(valid_until.saturating_duration_since(now))
        }
        _ => Some(Duration::ZERO),
    }
}

/// The view after a renewal statement sent at `sent` answered `row` (`None`: it failed), at `now`. A keeper leads
/// only when the statement wrote the row (`row.wrote`): a row that merely names its keeper id may be another
/// process's under the same id, or a term of its own that it already gave up locally.
pub fn after_renewal(
    view: &LeaseView,
    row: Option<&LeaseRow>,
    me: &Me,
    sent: Instant,
    now: Instant,
    timing: &LeaseTiming,
) -> (LeaseView, Option<Transition>) {
    match (view, row) {
        (LeaseView::Single, _) => (LeaseView::Single, None),
        (LeaseView::Leading { epoch, since_ms, valid_until }, Some(r)) if r.wrote && me.is(r) && r.epoch == *epoch => (
            LeaseView::Leading {
                epoch: *epoch,
                since_ms: *since_ms,
                valid_until: valid_until_from(r, sent, timing).max(*valid_until),
            },
            None,
        ),
        (LeaseView::Leading { epoch, .. }, Some(r)) => (
            LeaseView::Standby { leader: Some(r.holder.clone()), epoch: r.epoch, since_ms: r.since_ms },
            Some(Transition::Lost {
                epoch: *epoch,
                why: if me.is(r) {
                    format!("the term expired and a new one ({}) began", r.epoch)
                } else if r.holder == me.id {
                    format!(
                        "another process with the same keeper id {} (instance {}) holds it under epoch {}",
                        r.holder, r.instance, r.epoch
                    )
                } else {
                    format!("{} holds it now under epoch {}", r.holder, r.epoch)
                },
            }),
        ),
        (LeaseView::Leading { epoch, valid_until, .. }, None) if now >= *valid_until => (
            LeaseView::Standby { leader: None, epoch: *epoch, since_ms: 0 },
            Some(Transition::Lost { epoch: *epoch, why: "the store could not renew it in time".into() }),
        ),
        (LeaseView::Leading { .. }, None) => (view.clone(), None),
        (LeaseView::Standby { leader, .. }, Some(r)) if r.wrote && me.is(r) => (
            LeaseView::Leading { epoch: r.epoch, since_ms: r.since_ms, valid_until: valid_until_from(r, sent, timing) },
            Some(Transition::Acquired { epoch: r.epoch, from: leader.clone().filter(|l| l != me.id) }),
        ),
        (LeaseView::Standby { .. }, Some(r)) => {
            (LeaseView::Standby { leader: Some(r.holder.clone()), epoch: r.epoch, since_ms: r.since_ms }, None)
        }
        (LeaseView::Standby { .. }, None) => (view.clone(), None),
    }
}

/// The view when no renewal answered: a term whose validity has run out is lost.
pub fn after_silence(view: &LeaseView, now: Instant) -> (LeaseView, Option<Transition>) {
    match view {
        LeaseView::Leading { epoch, valid_until, .. } if now >= *valid_until => (
            LeaseView::Standby { leader: None, epoch: *epoch, since_ms: 0 },
            Some(Transition::Lost { epoch: *epoch, why: "it was not renewed in time".into() }),
        ),
        _ => (view.clone(), None),
    }
}

/// This process's instance id: random, drawn once per process, so that two processes given one `keeper_id` never
/// hold a lease as one.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(new_instance_id)
}

/// A fresh random instance id (8 hex digits, never a `/`).
pub fn new_instance_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A market's role as `/health`, `/api/markets` and `kronos status` show it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LeaseStatus {
    /// `single` (SQLite), `leader` or `standby`.
    pub role: String,
    pub epoch: i64,
    /// The holder as last seen (this keeper when leading).
    pub leader: Option<String>,
    /// Start of the leader's term on the database's clock (ms).
    pub since_ms: i64,
    /// The last time this keeper lost the lease, and why.
    pub last_loss: Option<String>,
}

/// A lease row in words for `kronos status`: who leads the market and since when, on the database's clock.
pub fn describe(l: &LeaseRow) -> String {
    let at = |ms: i64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
    };
    let secs = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
    if l.expires_ms > l.db_now_ms {
        format!(
            "{} market {}: led by {} since {} (epoch {}), renewed {} ago, expires in {}",
            l.chain,
            l.market_id,
            l.holder,
            at(l.since_ms),
            l.epoch,
            secs(l.db_now_ms - l.renewed_ms),
            secs(l.expires_ms - l.db_now_ms)
        )
    } else {
        format!(
            "{} market {}: no leader: the lease expired {} ago (last held by {} since {}, epoch {})",
            l.chain,
            l.market_id,
            secs(l.db_now_ms - l.expires_ms),
            l.holder,
            at(l.since_ms),
            l.epoch
        )
    }
}

/// One market's lease, as held (or not) by this keeper.
pub struct Lease {
    pub chain: String,
    pub market: u64,
    /// This keeper's id (`keeper.keeper_id`).
    pub holder: String,
    /// This process's random instance id: the lease is held as `<holder>/<instance>`.
    pub instance: String,
    /// The instance id of another process last seen holding this market under this keeper's id (reported once).
    duplicate: Mutex<Option<String>>,
    store: Option<Store>,
    timing: LeaseTiming,
    view: Mutex<LeaseView>,
    last_loss: Mutex<Option<String>>,
    changed: tokio::sync::Notify,
    bus: Bus,
    metrics: Arc<Metrics>,
}

/// Which lease and who asks for it: `market` on `chain`, for keeper `holder` in process `instance`.
#[derive(Debug, Clone, Copy)]
pub struct LeaseKey<'a> {
    pub chain: &'a str,
    pub market: u64,
    pub holder: &'a str,
    pub instance: &'a str,
}

impl Lease {
    /// The lease of `key.market` on `key.chain` for keeper `key.holder` in process `key.instance` (see
    /// [`instance_id`]): kept in `store` when it is PostgreSQL, always held with SQLite.
    pub fn new(key: LeaseKey<'_>, store: &Store, timing: LeaseTiming, bus: Bus, metrics: Arc<Metrics>) -> Arc<Lease> {
        let LeaseKey { chain, market, holder, instance } = key;
        let shared = store.backend == crate::store::Backend::Postgres;
        Arc::new(Lease {
            chain: chain.to_string(),
            market,
            holder: holder.to_string(),
            instance: instance.to_string(),
            duplicate: Mutex::new(None),
            store: shared.then(|| store.clone()),
            timing,
            view: Mutex::new(if shared {
                LeaseView::Standby { leader: None, epoch: 0, since_ms: 0 }
            } else {
                LeaseView::Single
            }),
            last_loss: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            bus,
            metrics,
        })
    }

    /// The lease timing.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// The current view.
    pub fn view(&self) -> LeaseView {
        self.view.lock().clone()
    }

    /// The term `epoch` of this lease as a fencing token (`None` with SQLite: nothing to fence).
    pub fn token(&self, epoch: i64) -> Option<FenceToken> {
        self.store.as_ref().map(|_| FenceToken {
            chain: self.chain.clone(),
            market_id: self.market as i64,
            holder: self.stored_holder(),
            epoch,
        })
    }

    /// The holder as stored in the lease row: `<keeper_id>/<instance>`.
    pub fn stored_holder(&self) -> String {
        format!("{}/{}", self.holder, self.instance)
    }

    fn me(&self) -> Me<'_> {
        Me { id: &self.holder, instance: &self.instance }
    }

    /// Whether this keeper may still send under term `epoch` (checked before every broadcast).
    pub fn may_send(&self, epoch: i64) -> bool {
        let now = Instant::now();
        let seen = self.view();
        let (v, t) = after_silence(&seen, now);
        if t.is_some() {
            // Only over the view just read: a renewal that landed meanwhile is not overwritten.
            self.apply_over(Some(&seen), v, t);
        }
        may_send(&self.view.lock(), epoch, now)
    }

    /// How long a send under term `epoch` may still take (`None`: no limit, SQLite): the time left until the term's
    /// validity runs out, zero once it has.
    pub fn send_window(&self, epoch: i64) -> Option<Duration> {
        send_window(&self.view(), epoch, Instant::now())
    }

    /// Waits until the view may have changed (or `max` passed).
    pub async fn changed(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.changed.notified()).await;
    }

    /// The market's role for `/health` and `/api/markets`.
    pub fn status(&self) -> LeaseStatus {
        let last_loss = self.last_loss.lock().clone();
        match self.view() {
            LeaseView::Single => LeaseStatus { role: "single".into(), last_loss, ..Default::default() },
            LeaseView::Standby { leader, epoch, since_ms } => {
                LeaseStatus { role: "standby".into(), epoch, leader, since_ms, last_loss }
            }
            LeaseView::Leading { epoch, since_ms, .. } => {
                LeaseStatus { role: "leader".into(), epoch, leader: Some(self.holder.clone()), since_ms, last_loss }
            }
        }
    }

    fn label(&self) -> MarketLabel {
        MarketLabel { chain: self.chain.clone(), market: self.market.to_string() }
    }

    /// Sets the view and reports a transition: log, metrics, an alert signal.
    fn apply(&self, next: LeaseView, t: Option<Transition>) {
        self.apply_over(None, next, t)
    }

    /// [`apply`](Self::apply), only while the view is still `expected` (when given): a compare-and-set, so that a
    /// decision made from an older view does not overwrite a newer one.
    fn apply_over(&self, expected: Option<&LeaseView>, next: LeaseView, t: Option<Transition>) {
        {
            let mut v = self.view.lock();
            // A concurrent caller may have applied the same transition already.
            if *v == next || expected.is_some_and(|e| *v != *e) {
                return;
            }
            *v = next.clone();
        }
        let leading = matches!(next, LeaseView::Leading { .. } | LeaseView::Single);
        self.metrics.lease_leader.get_or_create(&self.label()).set(leading as i64);
        if let LeaseView::Leading { epoch, .. } | LeaseView::Standby { epoch, .. } = next {
            self.metrics.lease_epoch.get_or_create(&self.label()).set(epoch);
        }
        match t {
            Some(Transition::Acquired { epoch, from: Some(prev) }) => {
                // A takeover is news (a keeper stopped renewing); a first lease at start-up is not.
                self.metrics.lease_takeovers.get_or_create(&self.label()).inc();
                tracing::warn!(chain = %self.chain, market = self.market, epoch, from = %prev, holder = %self.holder, "took over the market's lease: this keeper leads it now");
                self.bus.publish(
                    "keeper",
                    SignalKind::KeeperHealth {
                        chain: self.chain.clone(),
                        healthy: true,
                        head_block: 0,
                        lag_s: 0,
                        detail: format!(
                            "{} took over market {} from {prev} (lease epoch {epoch})",
                            self.holder, self.market
                        ),
                    },
                );
            }
            Some(Transition::Acquired { epoch, from: None }) => {
                tracing::info!(chain = %self.chain, market = self.market, epoch, holder = %self.holder, "acquired the market's lease: this keeper leads it")
            }
            Some(Transition::Lost { epoch, why }) => {
                self.metrics.lease_losses.get_or_create(&self.label()).inc();
                let detail = format!(
                    "{} lost the lease of market {} (epoch {epoch}): {why}; stopped sending, standing by",
                    self.holder, self.market
                );
                tracing::error!(chain = %self.chain, market = self.market, epoch, holder = %self.holder, %why, "lost the market's lease: stopped sending and stepped down");
                *self.last_loss.lock() = Some(detail.clone());
                self.bus.publish(
                    "keeper",
                    SignalKind::KeeperHealth {
                        chain: self.chain.clone(),
                        healthy: false,
                        head_block: 0,
                        lag_s: 0,
                        detail,
                    },
                );
            }
            None => {}
        }
        self.changed.notify_waiters();
    }

    /// One renewal (or takeover attempt).
    pub async fn refresh(&self) {
        let Some(store) = &self.store else { return };
        let held = match self.view() {
            LeaseView::Leading { epoch, .. } => Some(epoch),
            _ => None,
        };
        let sent = Instant::now();
        let ttl_ms = self.timing.ttl.as_millis() as i64;
        let row = match store.acquire_lease(&self.chain, self.market as i64, &self.stored_holder(), held, ttl_ms).await
        {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(chain = %self.chain, market = self.market, error = %format!("{e:#}"), "lease renewal failed");
                None
            }
        };
        if let Some(other) = row.as_ref().and_then(|r| duplicate_of(r, &self.me())) {
            let mut seen = self.duplicate.lock();
            if seen.as_deref() != Some(other) {
                *seen = Some(other.to_string());
                tracing::error!(
                    chain = %self.chain, market = self.market, keeper_id = %self.holder, instance = %self.instance,
                    other_instance = %other,
                    "another process runs with this keeper_id and holds this market's lease: give every keeper its own \
                     keeper_id; this one does not lead the market while that lease lives"
                );
            }
        }
        let (next, t) = after_renewal(&self.view(), row.as_ref(), &self.me(), sent, Instant::now(), &self.timing);
        self.apply(next, t);
    }

    /// Renews in the background until cancelled, then gives a held term up so that a standby takes over at once.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.store.is_none() {
            self.metrics.lease_leader.get_or_create(&self.label()).set(1);
            return;
        }
        loop {
            self.refresh().await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.timing.refresh) => {}
            }
        }
        if let (LeaseView::Leading { epoch, .. }, Some(store)) = (self.view(), &self.store) {
            // Stand down locally first: nothing is sent under the term once another keeper may take it.
            self.apply(LeaseView::Standby { leader: None, epoch, since_ms: 0 }, None);
            let token = self.token(epoch).expect("a PostgreSQL lease has a token");
            match store.release_lease(&token).await {
                Ok(()) => tracing::info!(chain = %self.chain, market = self.market, epoch, "lease given up"),
                Err(e) => {
                    tracing::warn!(chain = %self.chain, market = self.market, error = %e, "could not give the lease up; it expires by itself")
                }
            }
        }
    }
}

/// A market driver's term, carried to the transaction manager: checked before every broadcast.
#[derive(Clone)]
pub struct Fence {
    pub lease: Arc<Lease>,
    pub epoch: i64,
}

impl Fence {
    /// Whether the term still holds the lease.
    pub fn may_send(&self) -> bool {
        self.lease.may_send(self.epoch)
    }

    /// How long a send under the term may still take (`None`: no limit).
    pub fn send_window(&self) -> Option<Duration> {
        self.lease.send_window(self.epoch)
    }

    /// The term as a fencing token for store writes.
    pub fn token(&self) -> Option<FenceToken> {
        self.lease.token(self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A row written by the statement for keeper `holder` (instance `i1`), 10 s left on the database's clock.
    fn row(holder: &str, epoch: i64) -> LeaseRow {
        LeaseRow {
            chain: "base".into(),
            market_id: 1,
            holder: holder.into(),
            instance: "i1".into(),
            epoch,
            since_ms: 1000 * epoch,
            renewed_ms: 0,
            expires_ms: 10_000,
            db_now_ms: 0,
            wrote: true,
        }
    }

    fn me(id: &str) -> Me<'_> {
        Me { id, instance: "i1" }
    }

    fn timing() -> LeaseTiming {
        LeaseTiming { ttl: Duration::from_secs(10), refresh: Duration::from_secs(1) }
    }

    #[test]
    fn a_standby_leads_when_the_row_names_it_and_counts_a_takeover() {
        let t0 = Instant::now();
        let standby = LeaseView::Standby { leader: Some("a".into()), epoch: 1, since_ms: 1000 };
        let (v, t) = after_renewal(&standby, Some(&row("b", 2)), &me("b"), t0, t0, &timing());
        assert_eq!(v, LeaseView::Leading { epoch: 2, since_ms: 2000, valid_until: t0 + Duration::from_millis(7500) });
        assert_eq!(t, Some(Transition::Acquired { epoch: 2, from: Some("a".into()) }));
        // The first keeper ever: no takeover.
        let fresh = LeaseView::Standby { leader: None, epoch: 0, since_ms: 0 };
        let (_, t) = after_renewal(&fresh, Some(&row("b", 1)), &me("b"), t0, t0, &timing());
        assert_eq!(t, Some(Transition::Acquired { epoch: 1, from: None }));
        // Someone else leads: stay standby, remember who.
        let other = LeaseRow { wrote: false, ..row("a", 1) };
        let (v, t) = after_renewal(&fresh, Some(&other), &me("b"), t0, t0, &timing());
        assert_eq!((v, t), (LeaseView::Standby { leader: Some("a".into()), epoch: 1, since_ms: 1000 }, None));
    }

    #[test]
    fn a_leader_renews_under_the_same_epoch_and_steps_down_when_the_row_says_otherwise() {
        let t0 = Instant::now();
        let lead = LeaseView::Leading { epoch: 3, since_ms: 3000, valid_until: t0 + Duration::from_secs(1) };
        let t1 = t0 + Duration::from_secs(1);
        let (v, t) = after_renewal(&lead, Some(&row("a", 3)), &me("a"), t1, t1, &timing());
        assert_eq!(v, LeaseView::Leading { epoch: 3, since_ms: 3000, valid_until: t1 + Duration::from_millis(7500) });
        assert_eq!(t, None);
        // Another holder (a takeover while this keeper was paused).
        let (v, t) = after_renewal(&lead, Some(&row("b", 4)), &me("a"), t1, t1, &timing());
        assert!(matches!(v, LeaseView::Standby { epoch: 4, .. }));
        assert!(matches!(t, Some(Transition::Lost { epoch: 3, .. })));
        // Its own id under a newer epoch (another process with the same keeper id): still lost.
        let (v, t) = after_renewal(&lead, Some(&row("a", 5)), &me("a"), t1, t1, &timing());
        assert!(matches!(v, LeaseView::Standby { .. }) && matches!(t, Some(Transition::Lost { epoch: 3, .. })));
    }

    /// Audit H1: a row that names this keeper id but that the statement did not write (another process given the
    /// same keeper id, or a term this process already gave up) is no lease.
    #[test]
    fn a_keeper_leads_only_on_a_row_its_statement_wrote_for_its_own_instance() {
        let t0 = Instant::now();
        let fresh = LeaseView::Standby { leader: None, epoch: 0, since_ms: 0 };
        let theirs = LeaseRow { instance: "i2".into(), wrote: false, ..row("a", 1) };
        let (v, t) = after_renewal(&fresh, Some(&theirs), &me("a"), t0, t0, &timing());
        assert_eq!((v, t), (LeaseView::Standby { leader: Some("a".into()), epoch: 1, since_ms: 1000 }, None));
        assert_eq!(duplicate_of(&theirs, &me("a")), Some("i2"));
        assert_eq!(duplicate_of(&theirs, &me("b")), None, "another keeper id is no duplicate");
        assert_eq!(duplicate_of(&LeaseRow { expires_ms: 0, ..theirs.clone() }, &me("a")), None, "an expired lease");
        // Its own instance, unwritten: still standby.
        let mine = LeaseRow { wrote: false, ..row("a", 1) };
        assert_eq!(after_renewal(&fresh, Some(&mine), &me("a"), t0, t0, &timing()).1, None);
        // A leader whose renewal did not write (another instance took the expired term): lost, and said why.
        let lead = LeaseView::Leading { epoch: 1, since_ms: 1000, valid_until: t0 + Duration::from_secs(5) };
        let took = LeaseRow { instance: "i2".into(), ..row("a", 2) };
        let (v, t) = after_renewal(&lead, Some(&took), &me("a"), t0, t0, &timing());
        assert!(matches!(v, LeaseView::Standby { epoch: 2, .. }), "{v:?}");
        let Some(Transition::Lost { why, .. }) = t else { panic!("{t:?}") };
        assert!(why.contains("same keeper id a (instance i2)"), "{why}");
        assert_eq!(after_renewal(&lead, Some(&mine), &me("a"), t0, t0, &timing()).0.clone(), {
            LeaseView::Standby { leader: Some("a".into()), epoch: 1, since_ms: 1000 }
        });
    }

    /// Audit H1: how long a term may be used comes from the database's answer, not from the TTL asked for.
    #[test]
    fn a_term_is_valid_for_what_the_database_had_left_less_a_quarter_ttl() {
        let t0 = Instant::now();
        let tm = timing();
        let r = LeaseRow { expires_ms: 4_000, db_now_ms: 0, ..row("a", 1) };
        assert_eq!(valid_until_from(&r, t0, &tm), t0 + Duration::from_millis(1500));
        assert_eq!(valid_until_from(&LeaseRow { expires_ms: 1_000, ..r.clone() }, t0, &tm), t0, "less than the margin");
        assert_eq!(valid_until_from(&LeaseRow { expires_ms: 60_000, ..r }, t0, &tm), tm.valid_until(t0));
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_sending_before_anyone_can_take_over() {
        let t0 = Instant::now();
        let tm = timing();
        let lead = LeaseView::Leading { epoch: 3, since_ms: 0, valid_until: tm.valid_until(t0) };
        // The store does not answer: keep leading while the term is valid ...
        let (v, t) =
            after_renewal(&lead, None, &me("a"), t0 + Duration::from_secs(5), t0 + Duration::from_secs(5), &tm);
        assert_eq!((v.clone(), t), (lead.clone(), None));
        assert!(may_send(&v, 3, t0 + Duration::from_secs(7)));
        // ... and stop at a quarter of the TTL before the database could expire it.
        assert!(!may_send(&v, 3, t0 + Duration::from_millis(7500)));
        assert!(tm.valid_until(t0) < t0 + tm.ttl);
        let late = t0 + Duration::from_secs(8);
        let (v, t) = after_renewal(&lead, None, &me("a"), late, late, &tm);
        assert!(matches!(v, LeaseView::Standby { .. }) && matches!(t, Some(Transition::Lost { .. })));
        // A paused process (SIGSTOP past the TTL) finds its term over on waking, before any renewal answers.
        let (v, t) = after_silence(&lead, t0 + Duration::from_secs(60));
        assert!(!may_send(&v, 3, t0 + Duration::from_secs(60)) && t.is_some());
        assert_eq!(after_silence(&lead, t0), (lead.clone(), None));
    }

    #[test]
    fn status_says_who_leads_since_when() {
        let mut r = row("keeper-a", 3);
        (r.since_ms, r.renewed_ms, r.expires_ms, r.db_now_ms) =
            (1_796_083_200_000, 1_796_083_259_600, 1_796_083_269_600, 1_796_083_260_000);
        assert_eq!(
            describe(&r),
            "base market 1: led by keeper-a since 2026-12-01T00:00:00Z (epoch 3), renewed 0.4 s ago, expires in 9.6 s"
        );
        r.db_now_ms = r.expires_ms + 2500;
        assert_eq!(
            describe(&r),
            "base market 1: no leader: the lease expired 2.5 s ago (last held by keeper-a since 2026-12-01T00:00:00Z, epoch 3)"
        );
    }

    #[test]
    fn lease_settings_are_checked_by_field() {
        let s = LeaseSettings::parse(None, None, false, "sqlite://x").unwrap();
        assert_eq!(s.timing, LeaseTiming::default());
        assert_eq!(s.timing.ttl, Duration::from_secs(10));
        let e = LeaseSettings::parse(Some(2000), Some(1000), false, "postgres://h/db").unwrap_err();
        assert_eq!(e.0, "keeper.lease_ttl_ms");
        assert_eq!(
            LeaseSettings::parse(None, Some(50), false, "postgres://h/db").unwrap_err().0,
            "keeper.lease_refresh_ms"
        );
        assert_eq!(LeaseSettings::parse(None, None, true, "sqlite://x").unwrap_err().0, "keeper.shared_signer");
        assert!(LeaseSettings::parse(Some(3000), Some(500), true, "postgres://h/db").unwrap().shared_signer);
    }

    /// Audit L1: a broadcast is cut off when the term's validity runs out, not after the RPC timeout.
    #[test]
    fn a_send_may_take_only_what_is_left_of_the_term() {
        let t0 = Instant::now();
        let lead = LeaseView::Leading { epoch: 3, since_ms: 0, valid_until: t0 + Duration::from_secs(5) };
        assert_eq!(send_window(&lead, 3, t0 + Duration::from_secs(1)), Some(Duration::from_secs(4)));
        assert_eq!(send_window(&lead, 3, t0 + Duration::from_secs(9)), Some(Duration::ZERO));
        assert_eq!(send_window(&lead, 2, t0), Some(Duration::ZERO), "an older term");
        assert_eq!(
            send_window(&LeaseView::Standby { leader: None, epoch: 3, since_ms: 0 }, 3, t0),
            Some(Duration::ZERO)
        );
        assert_eq!(send_window(&LeaseView::Single, 0, t0), None);
    }

    #[test]
    fn only_the_term_held_may_send() {
        let t0 = Instant::now();
        let lead = LeaseView::Leading { epoch: 3, since_ms: 0, valid_until: t0 + Duration::from_secs(5) };
        assert!(may_send(&lead, 3, t0));
        assert!(!may_send(&lead, 2, t0), "an older term of the same keeper");
        assert!(!may_send(&LeaseView::Standby { leader: None, epoch: 3, since_ms: 0 }, 3, t0));
        assert!(may_send(&LeaseView::Single, 0, t0 + Duration::from_secs(1_000_000)));
        // SQLite: a single keeper never changes role.
        let (v, t) = after_renewal(&LeaseView::Single, Some(&row("x", 9)), &me("a"), t0, t0, &timing());
        assert_eq!((v, t), (LeaseView::Single, None));
    }

    /// Audit H1: two processes given one `keeper_id` (copied configurations, pid 1 in containers) against one
    /// PostgreSQL: only one leads, the other says so and stays standby until the lease is given up, then takes the
    /// next epoch while the first steps down.
    #[tokio::test]
    async fn two_processes_with_one_keeper_id_never_both_lead() {
        let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
        let store = Store::connect(&pg.url()).await.unwrap();
        let tm = LeaseTiming { ttl: Duration::from_secs(30), refresh: Duration::from_secs(1) };
        let lease = |inst: &str| {
            let key = LeaseKey { chain: "base", market: 1, holder: "keeper-1", instance: inst };
            Lease::new(key, &store, tm, Bus::new(16), Arc::new(Metrics::default()))
        };
        let (a, b) = (lease("ia"), lease("ib"));
        let leading = |l: &Lease| matches!(l.view(), LeaseView::Leading { .. });
        a.refresh().await;
        for _ in 0..3 {
            b.refresh().await;
            a.refresh().await;
            assert!(leading(&a) && !leading(&b), "a: {:?}, b: {:?}", a.view(), b.view());
        }
        assert_eq!(
            b.view(),
            LeaseView::Standby { leader: Some("keeper-1".into()), epoch: 1, since_ms: b.status().since_ms }
        );
        assert_eq!(b.duplicate.lock().as_deref(), Some("ia"), "the duplicate keeper id was not noticed");
        assert!(a.may_send(1) && !b.may_send(1));
        let row = store.lease("base", 1).await.unwrap().unwrap();
        assert_eq!((row.holder.as_str(), row.instance.as_str()), ("keeper-1", "ia"));
        // The fencing token names the instance: b's writes under a's epoch are refused.
        let (fenced, slot) = store.fenced();
        *slot.lock() = b.token(1);
        let t = crate::store::TxRow {
            id: 0,
            chain: "base".into(),
            signer: "0xs".into(),
            action: "execute:1:1".into(),
            nonce: 1,
            tx_hash: "0x1".into(),
            status: crate::store::TxStatus::Signed,
            max_fee_wei: "1".into(),
            priority_fee_wei: "1".into(),
            gas_limit: 1,
            sent_at: 1,
            mined_block: None,
            gas_used: None,
            error: None,
        };
        let e = fenced.insert_tx(&t, b.token(1).as_ref()).await.unwrap_err();
        assert!(e.downcast_ref::<crate::store::Fenced>().is_some(), "{e:#}");
        assert!(fenced.insert_tx(&t, a.token(1).as_ref()).await.unwrap() > 0);
        // a gives the term up: b takes the next epoch, a (renewing epoch 1) steps down.
        store.release_lease(&a.token(1).unwrap()).await.unwrap();
        b.refresh().await;
        a.refresh().await;
        assert!(matches!(b.view(), LeaseView::Leading { epoch: 2, .. }), "{:?}", b.view());
        assert!(!leading(&a) && !a.may_send(1), "{:?}", a.view());
    }

    /// Two holders racing on PostgreSQL: the leader stops renewing (paused), the other keeper takes the next epoch.
    /// At every instant at most one of them may send, each only under its own epoch; the paused one, resumed, steps
    /// down, and giving its old term up does not end the new one. Mutation tried: `may_send` without its epoch
    /// comparison (a leader may send under any epoch) fails it.
    #[tokio::test]
    async fn of_two_holders_racing_only_the_epoch_holder_may_send() {
        let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
        let store = Store::connect(&pg.url()).await.unwrap();
        let tm = LeaseTiming { ttl: Duration::from_millis(1200), refresh: Duration::from_millis(200) };
        let lease = |holder: &'static str| {
            let key = LeaseKey { chain: "base", market: 1, holder, instance: "i1" };
            Lease::new(key, &store, tm, Bus::new(16), Arc::new(Metrics::default()))
        };
        let (a, b) = (lease("keeper-a"), lease("keeper-b"));
        a.refresh().await;
        b.refresh().await;
        assert!(a.may_send(1) && !b.may_send(1), "a: {:?}, b: {:?}", a.view(), b.view());
        // keeper-a is paused: it renews no more. keeper-b renews in the background and takes over after the TTL.
        let cancel = CancellationToken::new();
        let runner = tokio::spawn(b.clone().run(cancel.clone()));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut both = Vec::new();
        let mut a_sent_after_takeover = false;
        loop {
            // Checked in either order, many times: never both.
            let (sa, sb) = (a.may_send(1), b.may_send(2));
            let (sb2, sa2) = (b.may_send(2), a.may_send(1));
            if (sa && sb) || (sa2 && sb2) {
                both.push(Instant::now());
            }
            assert!(!a.may_send(2) && !b.may_send(1), "a term of the other keeper");
            if matches!(b.view(), LeaseView::Leading { epoch: 2, .. }) {
                a_sent_after_takeover |= a.may_send(1);
                break;
            }
            assert!(Instant::now() < deadline, "keeper-b never took over: {:?}", b.view());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(both.is_empty(), "both keepers could send at {} instants", both.len());
        assert!(!a_sent_after_takeover, "the paused leader may still send after the takeover: {:?}", a.view());
        assert!(b.may_send(2));
        // keeper-a giving its old term up does not end keeper-b's.
        let e = store.release_lease(&a.token(1).unwrap()).await;
        let row = store.lease("base", 1).await.unwrap().unwrap();
        assert_eq!((row.holder.as_str(), row.epoch), ("keeper-b", 2), "the old term released the new one: {e:?}");
        assert!(row.expires_ms > row.db_now_ms, "{row:?}");
        // Resumed, keeper-a learns it lost and steps down.
        a.refresh().await;
        assert!(matches!(a.view(), LeaseView::Standby { epoch: 2, .. }), "{:?}", a.view());
        assert!(!a.may_send(1));
        cancel.cancel();
        runner.await.unwrap();
    }
}
