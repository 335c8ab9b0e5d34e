//! Withdrawals (docs/OPERATIONS.md "Withdrawals"): the finance office pays a cardholder's
//! cash balance out to them, one person or a whole class at once, and keeps a register of
//! every payout (who, how much, how it was paid, by whom) to reconcile its transfers with.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::validate::Checks;
use onecard_actors::wallet::{Op, Outcome, WalletError};
use onecard_actors::wire::WithdrawalView;
use onecard_schema::ids::{TenantId, UserId};
use onecard_schema::model::UserStatus;
use onecard_schema::wallet::{Holder, RegisterKind, RegisterLine, SubsidyTargets};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::checked;
use super::money::{batch_calls, idem, item_idem, wallet_call};
use super::register::{
    check_reference, register_export, register_page, RegisterExportParams, RegisterParams,
};
use super::subsidies::check_targets;
use super::wallets::amount;
use super::Paged;
use crate::auth::{Auth, PaymentsManager, PaymentsViewer};
use crate::extract::{path_id, required_idempotency_key, HashedJson, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWithdrawal {
    /// Fen to pay out; the whole cash balance when absent.
    #[schema(minimum = 1)]
    pub amount: Option<i64>,
    /// How the office paid it (a bank transfer's reference, a receipt's number), 1–64
    /// characters; kept in the withdrawal register.
    #[schema(min_length = 1, max_length = 64)]
    pub reference: Option<String>,
}

/// Pay out a cardholder's cash balance, or part of it (Idempotency-Key required): the
/// finance office hands the money over outside the platform, when a person leaves, say.
/// Subsidies and coupons are never paid out; nothing is while arrears are owed (409
/// `in_arrears`); more than the balance holds is 409 `insufficient_balance`. Whatever the
/// person's status: one who has left is paid out too.
#[utoipa::path(tag = "wallets", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = NewWithdrawal, security(("bearer" = [])), responses((status = 201, body = WithdrawalView), Problems))]
#[post("/users/{id}/wallet/withdrawals")]
pub async fn create_withdrawal(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    req: HttpRequest,
    id: web::Path<String>,
    HashedJson(body, hash): HashedJson<NewWithdrawal>,
) -> Result<HttpResponse, ApiError> {
    let key = required_idempotency_key(&req)?;
    let (tenant, user): (TenantId, UserId) = (caller.tenant()?, path_id(&id)?);
    let mut c = Checks::new();
    let amount = body.amount.map(|a| amount(&mut c, "amount", a));
    check_reference(&mut c, &body.reference);
    checked(c)?;
    let op = Op::Withdraw {
        amount,
        reference: body.reference.clone(),
        paid_by: caller.actor().as_string(),
    };
    let idem = Some(idem(&caller, key, hash));
    let res = wallet_call(&state, tenant, user, op, idem, StatusCode::CREATED).await?;
    let audit = caller.audit(
        &state,
        "wallet.withdraw",
        "user",
        user,
        serde_json::json!({ "amount": amount.map(|m| m.0), "reference": body.reference }),
    );
    state.record_audit(audit).await;
    Ok(res)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchWithdrawal {
    /// Whose balances: users, departments (with everything under them), tags or
    /// identities; at most 10,000 people.
    pub targets: SubsidyTargets,
    /// Only the people of this status (`left`, for a class that has gone); people of
    /// every status when absent.
    pub status: Option<UserStatus>,
    /// As for one withdrawal; kept in the register with each person's payout.
    #[schema(min_length = 1, max_length = 64)]
    pub reference: Option<String>,
}

/// A person of a batch, as the office finds them in its own records.
#[derive(Debug, Serialize, ToSchema)]
pub struct Person {
    pub user_id: UserId,
    pub name: String,
    pub number: String,
}

impl From<Holder> for Person {
    fn from(h: Holder) -> Self {
        Person {
            user_id: h.id,
            name: h.name,
            number: h.number,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaidOut {
    #[serde(flatten)]
    pub person: Person,
    /// Fen paid out.
    pub amount: i64,
    /// The payout's id in the register (null only for a payout made before the register
    /// and answered again from its record).
    pub withdrawal_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchWithdrawalResult {
    /// People the targets name (of the status asked for).
    pub people: u64,
    /// Each person paid out, and how much, by number: the office's transfer list.
    pub paid: Vec<PaidOut>,
    /// Fen paid out in all.
    pub total: i64,
    /// People not paid out because they owe arrears (each repays, or a month-end cut-off
    /// writes it off, first), by number.
    pub in_arrears: Vec<Person>,
    /// People whose cash balance was empty.
    pub empty: u64,
}

/// People a batch withdrawal pays out at most.
pub const BATCH_WITHDRAWAL_MAX: usize = 10_000;

/// Pay out the whole cash balance of everyone the targets name (a graduating class, say;
/// Idempotency-Key required), of any status or of the one asked for. Each person's payout
/// goes through their wallet actor under a key made from the batch's, so a batch cut short
/// (a 503, a lost answer) is sent again with the same key: those already paid are answered
/// as they were, never paid twice.
#[utoipa::path(tag = "wallets", params(("Idempotency-Key" = String, Header)),
    request_body = BatchWithdrawal, security(("bearer" = [])),
    responses((status = 200, body = BatchWithdrawalResult), Problems))]
#[post("/wallets/withdrawals")]
pub async fn create_batch_withdrawal(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    req: HttpRequest,
    HashedJson(body, hash): HashedJson<BatchWithdrawal>,
) -> Result<web::Json<BatchWithdrawalResult>, ApiError> {
    let key = required_idempotency_key(&req)?;
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    check_targets(&mut c, &body.targets);
    check_reference(&mut c, &body.reference);
    checked(c)?;
    let people = state
        .store
        .target_holders(tenant, body.targets.clone(), body.status)
        .await?;
    if people.len() > BATCH_WITHDRAWAL_MAX {
        return Err(ApiError::invalid_field(
            "targets",
            "max_people",
            format!(
                "the targets name {} people; at most {BATCH_WITHDRAWAL_MAX} a batch",
                people.len()
            ),
        ));
    }
    let policy = state.policy(tenant).await?;
    let paid_by = caller.actor().as_string();
    let calls = people
        .iter()
        .map(|person| {
            let op = Op::Withdraw {
                amount: None,
                reference: body.reference.clone(),
                paid_by: paid_by.clone(),
            };
            let idem = item_idem(&caller, &key, hash, person.id, person.id.0.as_bytes());
            (person.id, op, idem)
        })
        .collect();
    let outcomes = batch_calls(&state, tenant, policy, calls).await;
    let mut result = BatchWithdrawalResult {
        people: people.len() as u64,
        paid: Vec::new(),
        total: 0,
        in_arrears: Vec::new(),
        empty: 0,
    };
    let mut failed = None;
    for (person, outcome) in people.into_iter().zip(outcomes) {
        match outcome {
            Ok(Outcome::Decided { body, .. }) | Ok(Outcome::Replay { body, .. }) => {
                #[derive(Deserialize)]
                struct Withdrawn {
                    id: Option<Uuid>,
                    withdrawn: i64,
                }
                // The wallet's own answer, which a replay keeps as it was.
                let w: Withdrawn = serde_json::from_slice(&body).map_err(ApiError::internal)?;
                result.total += w.withdrawn;
                result.paid.push(PaidOut {
                    person: person.into(),
                    amount: w.withdrawn,
                    withdrawal_id: w.id,
                });
            }
            Err(WalletError::Refused(r)) if r.code == "in_arrears" => {
                result.in_arrears.push(person.into())
            }
            Err(WalletError::Refused(r)) if r.code == "insufficient_balance" => result.empty += 1,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    // Whoever was paid stays paid; the batch sent again with its key finishes the rest.
    if let Some(e) = failed {
        return Err(e.into());
    }
    result
        .paid
        .sort_by(|a, b| a.person.number.cmp(&b.person.number));
    result.in_arrears.sort_by(|a, b| a.number.cmp(&b.number));
    let audit = caller.audit(
        &state,
        "wallet.withdraw_batch",
        "tenant",
        tenant,
        serde_json::json!({
            "people": result.people, "paid": result.paid.len(), "total": result.total,
            "status": body.status.map(|s| s.as_str()), "reference": body.reference,
        }),
    );
    state.record_audit(audit).await;
    Ok(web::Json(result))
}

/// A payout in the register.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalLine {
    /// Its id (UUIDv7), also its ledger transaction's: the register is in its order.
    pub id: Uuid,
    pub user_id: UserId,
    /// The person's name and number now.
    pub name: String,
    pub number: String,
    /// Fen paid out.
    pub amount: i64,
    /// How the office paid it, as given.
    pub reference: Option<String>,
    /// Who paid it out (`admin:<id>`, `app:<id>`, ...); null for a payout made before
    /// the register.
    pub paid_by: Option<String>,
    pub at: Timestamp,
}

impl From<RegisterLine> for WithdrawalLine {
    fn from(w: RegisterLine) -> Self {
        WithdrawalLine {
            id: w.id,
            user_id: w.user_id,
            name: w.name,
            number: w.number,
            amount: w.amount.0,
            reference: w.reference,
            paid_by: w.by,
            at: w.at,
        }
    }
}

/// The withdrawal register, oldest first, by person, time and reference (admins who may
/// read payments).
#[utoipa::path(tag = "wallets", params(RegisterParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<WithdrawalLine>), Problems))]
#[get("/wallets/withdrawals")]
pub async fn list_withdrawals(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<RegisterParams>,
) -> Result<web::Json<Paged<WithdrawalLine>>, ApiError> {
    let kind = RegisterKind::Withdrawal;
    let page = register_page(&state, caller.tenant()?, kind, params, WithdrawalLine::from);
    Ok(web::Json(page.await?))
}

/// The register of a window of at most 31 days as CSV or XLSX, times in the tenant's
/// zone: what the office reconciles its transfers with. 422 `too_many_rows` past 200,000
/// payouts: narrow it.
#[utoipa::path(tag = "wallets", params(RegisterExportParams), security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String), Problems))]
#[get("/wallets/withdrawals/export")]
pub async fn export_withdrawals(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    Query(params): Query<RegisterExportParams>,
) -> Result<HttpResponse, ApiError> {
    register_export(&state, caller.tenant()?, RegisterKind::Withdrawal, params).await
}
