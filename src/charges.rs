//! Online top-ups (docs/OPERATIONS.md "Online top-ups"): a cardholder pays the payment
//! provider from their phone, and their wallet is credited once the provider says it was
//! paid. This module settles a charge: it asks the provider where the order stands (never
//! trusting a notice's body), credits a paid one through the wallet actor as a top-up
//! whose bank reference is the provider's transaction, and closes one that expired
//! unpaid. The top-up register's unique reference makes the credit happen once however
//! many nodes, notices and phones ask at the same moment; the charge's id is the wallet
//! call's idempotency key as well.
//!
//! Every node also looks for charges left pending every `CHARGE_SCAN_S` (the provider's
//! notice lost, the phone closed before it asked, the order expired) and settles them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use onecard_actors::provider::ChargeState;
use onecard_actors::wallet::{IdemKey, Op, WalletError};
use onecard_schema::charge_store::{Charge, ChargeEnd, ChargeStatus};
use onecard_schema::model::PageReq;
use onecard_schema::wallet::{RegisterFilter, RegisterKind};
use sha2::{Digest, Sha256};

use crate::limits::{CHARGE_ASK_AFTER, CHARGE_SCAN_BATCH, CHARGE_SCAN_S};
use crate::problem::ApiError;
use crate::state::AppState;

/// Online top-ups this node credited, and closed unpaid (`/metrics`).
pub static CREDITED: AtomicU64 = AtomicU64::new(0);
pub static CLOSED: AtomicU64 = AtomicU64::new(0);

/// How long past its expiry a charge may stay pending before the sweep counts it stuck
/// (`online_topups_stuck`): the provider unreachable, or a credit refused.
const STUCK_AFTER_EXPIRY: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

fn unavailable(e: onecard_actors::provider::ProviderUnavailable) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// Where `charge` stands once the provider has been asked: paid (and credited), closed, or
/// still pending. A charge already ended is answered as it is, without asking.
pub async fn settle(state: &AppState, charge: Charge) -> Result<Charge, ApiError> {
    if charge.status != ChargeStatus::Pending {
        return Ok(charge);
    }
    let now = state.clock.now();
    let mut at_provider = state
        .provider
        .charge_state(charge.id)
        .await
        .map_err(unavailable)?;
    if at_provider == ChargeState::Pending && now >= charge.expires_at {
        // Closed at the provider first, so that it cannot be paid after we call it closed;
        // paid in the meantime, it is credited after all.
        at_provider = state
            .provider
            .close_charge(charge.id)
            .await
            .map_err(unavailable)?;
    }
    let end = match at_provider {
        ChargeState::Pending => return Ok(charge),
        ChargeState::Closed => ChargeEnd::Closed { at: now },
        ChargeState::Paid { transaction } => {
            let topup_id = credit(state, &charge, &transaction).await?;
            ChargeEnd::Paid {
                transaction,
                topup_id,
                at: now,
            }
        }
    };
    let ended = state
        .store
        .end_charge(charge.tenant_id, charge.id, end)
        .await?;
    // Counted by the call that ended it (another may have, a moment before).
    if ended.settled_at == Some(now) {
        match ended.status {
            ChargeStatus::Paid => {
                CREDITED.fetch_add(1, Ordering::Relaxed);
                tracing::info!(charge = %ended.id, tenant = %ended.tenant_id,
                    amount = ended.amount.0, "online top-up credited");
            }
            ChargeStatus::Closed => {
                CLOSED.fetch_add(1, Ordering::Relaxed);
            }
            ChargeStatus::Pending => {}
        }
    }
    Ok(ended)
}

/// Credits a paid charge to its wallet, once: answers the top-up register's line.
async fn credit(
    state: &AppState,
    charge: &Charge,
    transaction: &str,
) -> Result<uuid::Uuid, ApiError> {
    let op = Op::TopUp {
        amount: charge.amount,
        reference: Some(transaction.to_string()),
        credited_by: format!("provider:{}", charge.provider),
    };
    let idem = IdemKey {
        scope: format!("charge:{}", charge.tenant_id),
        key: charge.id.to_string(),
        hash: Sha256::digest(transaction.as_bytes()).into(),
    };
    let policy = state.policy(charge.tenant_id).await?;
    match state
        .wallets
        .call(charge.tenant_id, charge.user_id, op, policy, Some(idem))
        .await
    {
        // Credited now, or before under the charge's own key.
        Ok(_) => {}
        // Credited before by another node, or an earlier round whose key has gone.
        Err(WalletError::Refused(r)) if r.code == "reference_used" => {}
        Err(e) => return Err(e.into()),
    }
    let filter = RegisterFilter {
        user: Some(charge.user_id),
        reference: Some(transaction.to_string()),
        ..Default::default()
    };
    let page = state
        .store
        .list_register(
            charge.tenant_id,
            RegisterKind::TopUp,
            filter,
            PageReq {
                limit: 1,
                after: None,
            },
        )
        .await?;
    match page.items.first() {
        Some(line) if line.amount == charge.amount => Ok(line.id),
        // The transaction's reference stands on someone else's top-up, or on another
        // amount (typed in by hand as a bank reference): this charge is not credited.
        // It stays pending, and every round says so, until an operator sorts it out.
        _ => {
            tracing::error!(charge = %charge.id, tenant = %charge.tenant_id, transaction,
                "an online top-up's transaction is the reference of another top-up: not credited");
            Err(ApiError::conflict(
                "reference_used",
                "the provider's transaction is already the reference of another top-up",
            ))
        }
    }
}

/// What a sweep round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Charges it ended (paid or closed).
    pub ended: usize,
    /// Charges still pending `STUCK_AFTER_EXPIRY` past their expiry.
    pub stuck: usize,
}

/// Settles the charges pending for longer than `CHARGE_ASK_AFTER`, oldest first.
pub async fn settle_pending(state: &AppState) -> Result<Swept, ApiError> {
    let now = state.clock.now();
    let mut swept = Swept::default();
    for charge in state
        .store
        .pending_charges(now - CHARGE_ASK_AFTER, CHARGE_SCAN_BATCH)
        .await?
    {
        let (id, overdue) = (charge.id, charge.expires_at + STUCK_AFTER_EXPIRY < now);
        match settle(state, charge).await {
            Ok(c) if c.status != ChargeStatus::Pending => swept.ended += 1,
            Ok(_) => swept.stuck += usize::from(overdue),
            Err(e) => {
                swept.stuck += usize::from(overdue);
                tracing::warn!(error = %e, charge = %id, "an online top-up could not be settled");
            }
        }
    }
    Ok(swept)
}

/// The sweep, every `CHARGE_SCAN_S` on each node.
pub fn spawn_sweep(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(CHARGE_SCAN_S),
        "online top-up sweep",
        |state| async move {
            let swept = settle_pending(&state).await?;
            metrics::gauge!("online_topups_stuck").set(swept.stuck as f64);
            if swept.ended > 0 {
                tracing::info!(ended = swept.ended, "online top-ups settled by the sweep");
            }
            if swept.stuck > 0 {
                tracing::error!(
                    stuck = swept.stuck,
                    "online top-ups pending long past their expiry"
                );
            }
            Ok(())
        },
    );
}
