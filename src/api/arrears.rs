//! Arrears: unsettled deferred debits the person owes. They block payments until repaid;
//! a reminder goes to the person's topic once a (tenant-local) day until then. At the
//! tenant's month-end cut-off (the first local midnight of a month) a tenant whose
//! `arrears_at_month_end` is `write_off` writes off what became owed before it (SPEC §7).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use onecard_actors::wallet::{Op, Policy};
use onecard_actors::wire::PaymentView;
use onecard_schema::ids::UserId;
use onecard_schema::model::{ArrearsPolicy, PageReq};
use onecard_schema::money::Money;
use onecard_schema::money_store::PaymentFilter;
use onecard_schema::wallet::PaymentStatus;
use serde::Serialize;
use utoipa::ToSchema;

use super::money::{idem, respond};
use crate::auth::{Admin, Auth, Cardholder};
use crate::extract::{path_id, required_idempotency_key, HashedJson};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// How often the reminder loop looks for wallets in arrears.
pub const REMINDER_SCAN_S: u64 = 60;

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
    caller: Auth<Admin>,
    id: web::Path<String>,
) -> Result<web::Json<Arrears>, ApiError> {
    let (tenant, user): (_, UserId) = (caller.tenant()?, path_id(&id)?);
    let policy = state.policy(tenant).await?;
    let outcome = state
        .wallets
        .call(tenant, user, Op::Get, policy, None)
        .await?;
    let onecard_actors::wallet::Outcome::Decided {
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
    let policy = state.policy(tenant).await?;
    let outcome = state
        .wallets
        .call(
            tenant,
            user,
            Op::Repay,
            policy,
            Some(idem(&caller, key, hash)),
        )
        .await?;
    respond(outcome, StatusCode::OK)
}

/// The month-end cut-off that has passed last: the first instant of the current local
/// month.
fn month_start(now: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Result<jiff::Timestamp, ApiError> {
    let first = now.to_zoned(tz.clone()).date().first_of_month();
    first
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("the start of the month: {e}")))
}

/// For every tenant that writes arrears off at month end, writes off what became owed
/// before the current month began. Answers how many wallets had arrears written off.
pub async fn write_off_arrears(state: &AppState) -> Result<usize, ApiError> {
    let mut written = 0;
    for (tenant, user) in state.store.wallets_in_arrears().await? {
        if state.tenant(tenant).await?.settings.arrears_at_month_end != ArrearsPolicy::WriteOff {
            continue;
        }
        let policy: Policy = state.policy(tenant).await?;
        let before = month_start(state.clock.now(), &policy.tz)?;
        match state
            .wallets
            .call(tenant, user, Op::WriteOff { before }, policy, None)
            .await
        {
            Ok(onecard_actors::wallet::Outcome::Decided {
                answer: onecard_actors::wallet::Answer::Wallet,
                ..
            }) => written += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "arrears write-off failed"),
        }
    }
    if written > 0 {
        tracing::info!(wallets = written, "arrears written off at month end");
    }
    Ok(written)
}

/// Sends today's reminder to every wallet in arrears that has not had one today.
pub async fn remind_arrears(state: &AppState) -> Result<usize, ApiError> {
    let mut sent = 0;
    for (tenant, user) in state.store.wallets_in_arrears().await? {
        let policy: Policy = state.policy(tenant).await?;
        let today = state
            .clock
            .now()
            .to_zoned(policy.tz.clone())
            .date()
            .to_string();
        match state
            .wallets
            .call(tenant, user, Op::Remind { today }, policy, None)
            .await
        {
            Ok(onecard_actors::wallet::Outcome::Decided {
                answer: onecard_actors::wallet::Answer::Wallet,
                ..
            }) => sent += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "arrears reminder failed"),
        }
    }
    Ok(sent)
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
