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
    if ended.status == ChargeStatus::Paid {
        tracing::info!(charge = %ended.id, tenant = %ended.tenant_id, amount = ended.amount.0,
            "online top-up credited");
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

/// Settles the charges pending for longer than `CHARGE_ASK_AFTER`, oldest first; answers
/// how many ended (paid or closed).
pub async fn settle_pending(state: &AppState) -> Result<usize, ApiError> {
    let before = state.clock.now() - CHARGE_ASK_AFTER;
    let mut ended = 0;
    for charge in state
        .store
        .pending_charges(before, CHARGE_SCAN_BATCH)
        .await?
    {
        let id = charge.id;
        match settle(state, charge).await {
            Ok(c) if c.status != ChargeStatus::Pending => ended += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, charge = %id, "an online top-up could not be settled")
            }
        }
    }
    Ok(ended)
}

/// The sweep, every `CHARGE_SCAN_S` on each node.
pub fn spawn_sweep(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(CHARGE_SCAN_S),
        "online top-up sweep",
        |state| async move {
            let ended = settle_pending(&state).await?;
            if ended > 0 {
                tracing::info!(ended, "online top-ups settled by the sweep");
            }
            Ok(())
        },
    );
}
