//! Merchant actors: one per merchant (per node), keeping today's running totals (the
//! tenant's local day) from committed payment events, never on a payment's path.
//!
//! An actor starts by loading its day from the store (`merchant_day`: every sale and
//! refund so far, one by one), then follows the `merchant:<id>` events the hub taps off for
//! it. It remembers which payments and refunds it has counted, so an event it already
//! loaded, or one delivered twice, counts once. Every few minutes it reloads, which also
//! heals an event it never received (a node overloaded enough to drop live events). A new
//! local day starts from the store again.
//!
//! `MerchantDirectory` routes tapped events to the actors and answers totals; roll-ups up
//! the tree are sums of the actors' own totals (the edge knows the tree).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use onecard_schema::ids::{MerchantId, PaymentId, TenantId};
use onecard_schema::money::Money;
use onecard_schema::wallet::{Breakdown, Totals};
use onecard_schema::Store;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::clock::{local_day, Clock};
use crate::realtime::hub::Deliver;

/// How often an actor reloads its day from the store.
const RELOAD_EVERY: Duration = Duration::from_secs(300);

/// A committed fact about a merchant's money.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    Sale {
        payment: PaymentId,
        at: Timestamp,
        amount: Money,
        breakdown: Breakdown,
    },
    Refund {
        tx: uuid::Uuid,
        at: Timestamp,
        amount: Money,
    },
}

#[derive(Deserialize)]
struct PaymentData {
    id: PaymentId,
    status: String,
    amount: i64,
    breakdown: BreakdownData,
    created_at: Timestamp,
    refund: Option<RefundData>,
}

#[derive(Deserialize)]
struct BreakdownData {
    coupon: i64,
    subsidy: i64,
    balance: i64,
    deferred: i64,
}

#[derive(Deserialize)]
struct RefundData {
    id: uuid::Uuid,
    amount: i64,
    at: Timestamp,
}

/// The facts in one payment event: a sale unless declined, and the refund it reports.
pub fn facts(kind: &str, data: &str) -> Vec<Fact> {
    if !kind.starts_with("payment.") {
        return Vec::new();
    }
    let Ok(p) = serde_json::from_str::<PaymentData>(data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if p.status != "declined" {
        out.push(Fact::Sale {
            payment: p.id,
            at: p.created_at,
            amount: Money(p.amount),
            breakdown: Breakdown {
                coupon: Money(p.breakdown.coupon),
                subsidy: Money(p.breakdown.subsidy),
                balance: Money(p.breakdown.balance),
                deferred: Money(p.breakdown.deferred),
            },
        });
    }
    if let Some(r) = p.refund {
        out.push(Fact::Refund {
            tx: r.id,
            at: r.at,
            amount: Money(r.amount),
        });
    }
    out
}

/// One local day of one merchant, with what it has counted.
#[derive(Clone, Debug, Default)]
struct Day {
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    totals: Totals,
    sales: HashSet<PaymentId>,
    refunds: HashSet<uuid::Uuid>,
}

impl Day {
    fn covers(&self, at: Timestamp) -> bool {
        matches!((self.from, self.to), (Some(f), Some(t)) if f <= at && at < t)
    }

    fn apply(&mut self, fact: &Fact) {
        match fact {
            Fact::Sale {
                payment,
                at,
                amount,
                breakdown,
            } if self.covers(*at) && self.sales.insert(*payment) => {
                let t = &mut self.totals;
                t.count += 1;
                t.gross = Money(t.gross.0 + amount.0);
                let s = &mut t.by_source;
                s.coupon = Money(s.coupon.0 + breakdown.coupon.0);
                s.subsidy = Money(s.subsidy.0 + breakdown.subsidy.0);
                s.balance = Money(s.balance.0 + breakdown.balance.0);
                s.deferred = Money(s.deferred.0 + breakdown.deferred.0);
            }
            Fact::Refund { tx, at, amount } if self.covers(*at) && self.refunds.insert(*tx) => {
                self.totals.refunds = Money(self.totals.refunds.0 + amount.0);
            }
            _ => {}
        }
    }
}

pub struct MerchantActor {
    tenant: TenantId,
    merchant: MerchantId,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    day: Option<Day>,
    loaded_at: Option<Instant>,
    loading: bool,
    /// Facts that arrived while loading, applied after.
    buffered: Vec<Fact>,
    waiters: Vec<oneshot::Sender<Result<Totals, String>>>,
}

impl MerchantActor {
    fn load(&mut self, ctx: &mut Context<Self>) {
        if self.loading {
            return;
        }
        self.loading = true;
        // Facts that arrived before this load are committed, so the load reads them from
        // the store; only those arriving while it runs need the buffer.
        self.buffered.clear();
        let (store, tenant, merchant, now) = (
            self.store.clone(),
            self.tenant,
            self.merchant,
            self.clock.now(),
        );
        let fut = async move {
            let t = store.get_tenant(tenant).await.map_err(|e| e.to_string())?;
            let tz = TimeZone::get(&t.timezone).unwrap_or(TimeZone::UTC);
            let (from, to) = local_day(now.to_zoned(tz.clone()).date(), &tz);
            let loaded = store
                .merchant_day(tenant, merchant, from, to)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((from, to, loaded))
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.loading = false;
            match result {
                Ok((from, to, loaded)) => {
                    let mut day = Day {
                        from: Some(from),
                        to: Some(to),
                        ..Day::default()
                    };
                    for (payment, amount, breakdown) in loaded.sales {
                        day.apply(&Fact::Sale {
                            payment,
                            at: from,
                            amount,
                            breakdown,
                        });
                    }
                    for (tx, amount) in loaded.refunds {
                        day.apply(&Fact::Refund {
                            tx,
                            at: from,
                            amount,
                        });
                    }
                    for fact in std::mem::take(&mut act.buffered) {
                        day.apply(&fact);
                    }
                    let totals = day.totals;
                    act.day = Some(day);
                    act.loaded_at = Some(Instant::now());
                    for w in act.waiters.drain(..) {
                        let _ = w.send(Ok(totals));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "merchant totals could not load");
                    for w in act.waiters.drain(..) {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        }));
    }

    fn current(&self) -> Option<&Day> {
        let day = self.day.as_ref()?;
        let fresh = self.loaded_at.is_some_and(|at| at.elapsed() < RELOAD_EVERY);
        (fresh && day.covers(self.clock.now())).then_some(day)
    }
}

impl Actor for MerchantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.load(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Observe(Vec<Fact>);

impl Handler<Observe> for MerchantActor {
    type Result = ();

    fn handle(&mut self, msg: Observe, ctx: &mut Self::Context) {
        if self.loading {
            self.buffered.extend(msg.0);
            return;
        }
        let stale = self.current().is_none();
        match self.day.as_mut() {
            Some(day) if !stale => msg.0.iter().for_each(|f| day.apply(f)),
            _ => {
                // A new day (or time to reload): these facts are committed, so the load
                // reads them from the store.
                self.load(ctx);
            }
        }
    }
}

/// Today's own totals of this merchant (not its subtree).
#[derive(Message)]
#[rtype(result = "Result<Totals, String>")]
struct Today;

impl Handler<Today> for MerchantActor {
    type Result = ResponseFuture<Result<Totals, String>>;

    fn handle(&mut self, _: Today, ctx: &mut Self::Context) -> Self::Result {
        if let Some(day) = self.current() {
            let totals = day.totals;
            return Box::pin(async move { Ok(totals) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.load(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("merchant actor stopped".into()))
        })
    }
}

/// Routes tapped `merchant:` events to merchant actors, starting them on first use.
pub struct MerchantDirectory {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    actors: HashMap<(TenantId, MerchantId), Addr<MerchantActor>>,
}

impl MerchantDirectory {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        MerchantDirectory {
            store,
            clock,
            actors: HashMap::new(),
        }
    }

    fn actor(&mut self, tenant: TenantId, merchant: MerchantId) -> Addr<MerchantActor> {
        let (store, clock) = (self.store.clone(), self.clock.clone());
        self.actors
            .entry((tenant, merchant))
            .or_insert_with(|| {
                MerchantActor {
                    tenant,
                    merchant,
                    store,
                    clock,
                    day: None,
                    loaded_at: None,
                    loading: false,
                    buffered: Vec::new(),
                    waiters: Vec::new(),
                }
                .start()
            })
            .clone()
    }
}

impl Actor for MerchantDirectory {
    type Context = Context<Self>;
}

/// Events tapped off the hub (only `merchant:` topics).
impl Handler<Deliver> for MerchantDirectory {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        for e in msg.0.iter() {
            let Some(id) = e.key.topic.strip_prefix("merchant:") else {
                continue;
            };
            let Ok(merchant) = id.parse().map(MerchantId) else {
                continue;
            };
            let facts = facts(&e.kind, &e.data);
            if !facts.is_empty() {
                self.actor(e.key.tenant, merchant).do_send(Observe(facts));
            }
        }
    }
}

/// Today's own totals of each merchant asked for.
#[derive(Message)]
#[rtype(result = "Result<Vec<Totals>, String>")]
pub struct TodayOf {
    pub tenant: TenantId,
    pub merchants: Vec<MerchantId>,
}

impl Handler<TodayOf> for MerchantDirectory {
    type Result = ResponseFuture<Result<Vec<Totals>, String>>;

    fn handle(&mut self, msg: TodayOf, _: &mut Self::Context) -> Self::Result {
        let actors: Vec<_> = msg
            .merchants
            .iter()
            .map(|m| self.actor(msg.tenant, *m))
            .collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(actors.len());
            for a in actors {
                out.push(a.send(Today).await.map_err(|e| e.to_string())??);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(id: PaymentId, at: Timestamp, amount: i64) -> Fact {
        Fact::Sale {
            payment: id,
            at,
            amount: Money(amount),
            breakdown: Breakdown {
                balance: Money(amount),
                ..Breakdown::default()
            },
        }
    }

    #[test]
    fn a_day_counts_each_sale_and_refund_once_and_only_its_own() {
        let from: Timestamp = "2026-11-25T16:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-11-26T16:00:00Z".parse().unwrap();
        let mut day = Day {
            from: Some(from),
            to: Some(to),
            ..Day::default()
        };
        let p = PaymentId::new();
        let at: Timestamp = "2026-11-26T01:00:00Z".parse().unwrap();
        day.apply(&sale(p, at, 300));
        day.apply(&sale(p, at, 300)); // accepted, then succeeded: one sale
        day.apply(&sale(PaymentId::new(), to, 999)); // tomorrow's
        let tx = uuid::Uuid::now_v7();
        let refund = Fact::Refund {
            tx,
            at,
            amount: Money(100),
        };
        day.apply(&refund);
        day.apply(&refund);
        assert_eq!(day.totals.count, 1);
        assert_eq!(day.totals.gross, Money(300));
        assert_eq!(day.totals.by_source.balance, Money(300));
        assert_eq!(day.totals.refunds, Money(100));
    }

    #[test]
    fn events_become_facts() {
        let data = r#"{"amount":300,"breakdown":{"balance":200,"coupon":0,"deferred":0,"subsidy":100},"created_at":"2026-11-26T01:00:00Z","id":"01a21511-44c4-70a5-9733-48e189db6390","merchant_id":"01a21511-44b4-7469-a39b-66c50fc18594","refunded":50,"status":"partially_refunded","terminal_id":"01a21511-44b5-733c-9260-6231e3a20cd0","refund":{"id":"01a21511-44c4-70a5-9733-48e189db6391","amount":50,"at":"2026-11-26T02:00:00Z"}}"#;
        let f = facts("payment.refunded", data);
        assert_eq!(f.len(), 2);
        assert!(matches!(
            &f[0],
            Fact::Sale {
                amount: Money(300),
                ..
            }
        ));
        assert!(matches!(
            &f[1],
            Fact::Refund {
                amount: Money(50),
                ..
            }
        ));
        let declined = data.replace("partially_refunded", "declined");
        assert_eq!(
            facts("payment.declined", &declined).len(),
            1,
            "only the refund part"
        );
        assert!(facts("wallet.frozen", data).is_empty());
    }
}
