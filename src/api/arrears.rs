//! Arrears: unsettled deferred debits the person owes. They block payments until repaid;
//! a reminder goes to the person's topic once a (tenant-local) day until then. At the
//! tenant's month-end cut-off (the first local midnight of a month) a tenant whose
//! `arrears_at_month_end` is `write_off` writes off what became owed before it (SPEC §7).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use onecard_actors::wallet::{Answer, Op, Outcome, Policy};
use onecard_actors::wire::PaymentView;
use onecard_schema::ids::UserId;
use onecard_schema::model::{ArrearsPolicy, PageReq, Tenant};
use onecard_schema::money::Money;
use onecard_schema::money_store::PaymentFilter;
use onecard_schema::wallet::{InArrears, PaymentStatus};
use serde::Serialize;
use utoipa::ToSchema;

use super::money::{idem, wallet_call};
use crate::auth::{Auth, Cardholder, PaymentsViewer};
use crate::extract::{path_id, required_idempotency_key, HashedJson};
use crate::problem::{ApiError, Problems};
use crate::state::{policy_of, AppState};

/// How often the reminder loop looks for wallets in arrears.
pub const REMINDER_SCAN_S: u64 = 60;

/// Wallets this node has written arrears off for (exported as a metric).
pub static WRITTEN_OFF: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Serialize, ToSchema)]
pub struct Arrears {
    /// Fen owed.
    #[schema(value_type = i64)]
    pub arrears: Money,
    /// The unsettled payments behind it.
    pub payments: Vec<PaymentView>,
}

/// What a cardholder owes.
#[utoipa::path(tag = "wallets", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Arrears), Problems))]
#[get("/users/{id}/arrears")]
pub async fn get_arrears(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
) -> Result<web::Json<Arrears>, ApiError> {
    let (tenant, user): (_, UserId) = (caller.tenant()?, path_id(&id)?);
    let policy = state.policy(tenant).await?;
    let outcome = state
        .wallets
        .call(tenant, user, Op::Get, policy, None)
        .await?;
    let Outcome::Decided {
        state: snapshot, ..
    } = outcome
    else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "unexpected wallet answer"
        )));
    };
    let filter = PaymentFilter {
        user_id: Some(user),
        merchant_id: None,
        status: Some(PaymentStatus::Unsettled),
    };
    let page = state
        .store
        .list_payments(
            tenant,
            filter,
            PageReq {
                limit: 500,
                after: None,
            },
        )
        .await?;
    Ok(web::Json(Arrears {
        arrears: snapshot.wallet.arrears,
        payments: page.items.iter().map(PaymentView::from).collect(),
    }))
}

/// Repay everything owed; the block on payments lifts (Idempotency-Key required).
#[utoipa::path(tag = "me", params(("Idempotency-Key" = String, Header)), security(("bearer" = [])),
    responses((status = 200, body = onecard_actors::wire::WalletView), Problems))]
#[post("/me/arrears/repay")]
pub async fn repay_arrears(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
    req: HttpRequest,
    HashedJson(_body, hash): HashedJson<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let (tenant, user) = (caller.tenant()?, UserId(caller.subject()?));
    let idem = Some(idem(&caller, key, hash));
    wallet_call(&state, tenant, user, Op::Repay, idem, StatusCode::OK).await
}

/// The month-end cut-off that has passed last: the first instant of the current local
/// month.
fn month_start(now: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Option<jiff::Timestamp> {
    let first = now.to_zoned(tz.clone()).date().first_of_month();
    first.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

/// Sends each wallet in arrears what `op` makes of it and its tenant (nothing for `None`,
/// so a wallet with nothing to do is not woken); answers how many wallets it changed.
/// `what` names the work in the log.
async fn each_wallet_in_arrears(
    state: &AppState,
    what: &'static str,
    op: impl Fn(&InArrears, &Tenant, &Policy) -> Option<Op>,
) -> Result<usize, ApiError> {
    let mut changed = 0;
    for wallet in state.store.wallets_in_arrears().await? {
        let (tenant, user) = (wallet.tenant, wallet.user);
        let t = state.tenant(tenant).await?;
        let policy = policy_of(&t);
        let Some(op) = op(&wallet, &t, &policy) else {
            continue;
        };
        match state.wallets.call(tenant, user, op, policy, None).await {
            Ok(Outcome::Decided {
                answer: Answer::Wallet,
                ..
            }) => changed += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, task = what, "a wallet in arrears failed"),
        }
    }
    Ok(changed)
}

/// For every tenant that writes arrears off at month end, writes off what became owed
/// before the current month began, once a cut-off has passed since the policy took
/// effect. Answers how many wallets had arrears written off.
pub async fn write_off_arrears(state: &AppState) -> Result<usize, ApiError> {
    let now = state.clock.now();
    let written = each_wallet_in_arrears(state, "arrears write-off", |wallet, tenant, policy| {
        let s = &tenant.settings;
        if s.arrears_at_month_end != ArrearsPolicy::WriteOff {
            return None;
        }
        let before = month_start(now, &policy.tz)?;
        // Only a cut-off passed under the policy: switching it on mid-month writes
        // nothing off before the next one.
        let in_force = s.arrears_write_off_since.is_none_or(|since| since < before);
        let due = wallet.owed_since.is_some_and(|t| t < before);
        (in_force && due).then_some(Op::WriteOff { before })
    })
    .await?;
    if written > 0 {
        WRITTEN_OFF.fetch_add(written as u64, Ordering::Relaxed);
        tracing::info!(wallets = written, "arrears written off at month end");
    }
    Ok(written)
}

/// Sends today's reminder to every wallet in arrears that has not had one today.
pub async fn remind_arrears(state: &AppState) -> Result<usize, ApiError> {
    let now = state.clock.now();
    each_wallet_in_arrears(state, "arrears reminder", |wallet, _, policy| {
        let today = now.to_zoned(policy.tz.clone()).date().to_string();
        (wallet.reminded_on.as_deref() != Some(today.as_str())).then_some(Op::Remind { today })
    })
    .await
}

/// The arrears loop (every `REMINDER_SCAN_S`): month-end write-offs first, so nobody is
/// reminded of what was just written off, then the day's reminders (each wallet once a
/// day).
pub fn spawn_reminders(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(REMINDER_SCAN_S),
        "arrears reminders",
        |state| async move {
            if let Err(e) = write_off_arrears(&state).await {
                tracing::warn!(error = %e, "arrears write-off failed");
            }
            remind_arrears(&state).await.map(|_| ())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::month_start;

    #[test]
    fn the_month_end_cut_off_is_the_first_local_midnight_of_the_month() {
        let shanghai = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        // 00:30 on 1 February in Shanghai is still 31 January in UTC.
        assert_eq!(
            month_start(at("2027-01-31T16:30:00Z"), &shanghai),
            Some(at("2027-01-31T16:00:00Z"))
        );
        // 23:30 on 31 January in Shanghai: January's cut-off.
        assert_eq!(
            month_start(at("2027-01-31T15:30:00Z"), &shanghai),
            Some(at("2026-12-31T16:00:00Z"))
        );
        // A zone with summer time: Berlin's 1 April starts at 22:00 UTC the day before.
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            month_start(at("2027-04-15T12:00:00Z"), &berlin),
            Some(at("2027-03-31T22:00:00Z"))
        );
    }
}
