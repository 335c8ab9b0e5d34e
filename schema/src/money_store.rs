//! The money half of the store: merchants, terminals, wallets and their group commits,
//! payments, subsidy rules, the ledger check. `Store` requires it, so `Arc<dyn Store>`
//! reaches both halves.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::StoreResult;
use crate::ids::*;
use crate::model::{Audit, NewToken, Page, PageReq, UserStatus};
use crate::money::Money;
use crate::statement::{statement_page, StatementLine, StatementSources};
use crate::wallet::*;

#[derive(Clone, Debug, Default)]
pub struct PaymentFilter {
    pub user_id: Option<UserId>,
    pub merchant_id: Option<MerchantId>,
    pub status: Option<PaymentStatus>,
}

#[async_trait]
pub trait MoneyStore: Send + Sync + 'static {
    // --- merchants and terminals -----------------------------------------------------
    /// Refused when the number is taken (409) or the parent is not the tenant's (422).
    async fn create_merchant(
        &self,
        tenant: TenantId,
        merchant: Merchant,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn list_merchants(&self, tenant: TenantId) -> StoreResult<Vec<Merchant>>;
    async fn update_merchant(
        &self,
        tenant: TenantId,
        id: MerchantId,
        name: Option<String>,
        single_limit: Option<Money>,
        audit: Audit,
    ) -> StoreResult<Merchant>;
    async fn create_terminal(
        &self,
        tenant: TenantId,
        terminal: Terminal,
        token: NewToken,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn get_terminal(&self, tenant: TenantId, id: TerminalId) -> StoreResult<Terminal>;
    /// Revokes every token of the tenant's terminal and stores `token` as its only one
    /// (a till lost or replaced); `NotFound` unless the terminal is the tenant's, `Gone`
    /// once it is retired.
    async fn replace_terminal_token(
        &self,
        tenant: TenantId,
        id: TerminalId,
        token: NewToken,
        audit: Audit,
    ) -> StoreResult<()>;
    /// Retires the tenant's terminal at `at` (once: a second time keeps the first time)
    /// and revokes its tokens; answers it as it now is.
    async fn retire_terminal(
        &self,
        tenant: TenantId,
        id: TerminalId,
        at: Timestamp,
        audit: Audit,
    ) -> StoreResult<Terminal>;

    // --- wallets ------------------------------------------------------------------------
    /// The wallet (an empty one at version 0 if never written), its subsidy accounts,
    /// unused coupons, last-24-h risk events and open payments.
    async fn load_wallet(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Timestamp,
    ) -> StoreResult<WalletSnapshot>;
    /// The wallet's version as stored (0 if it was never written): a live wallet actor
    /// compares it with its own before answering from memory, since another node, or a
    /// subsidy rule's approval, may have moved the wallet on.
    async fn wallet_version(&self, user: UserId) -> StoreResult<i64>;
    /// Applies each commit atomically and fenced; one result per commit, in order. Many
    /// commits share one transaction and one sync (group commit).
    async fn commit_wallets(&self, commits: Vec<WalletCommit>) -> Vec<Result<(), CommitError>>;
    async fn find_money_request(
        &self,
        scope: String,
        key: String,
    ) -> StoreResult<Option<MoneyRequest>>;
    /// Payments still `accepted` (their deferred debit not yet answered by the provider)
    /// made before `before`, oldest first, at most `limit`: the ones to ask again.
    async fn stale_deferred(&self, before: Timestamp, limit: usize) -> StoreResult<Vec<Payment>>;
    /// Wallets with arrears, for reminders and month-end write-offs.
    async fn wallets_in_arrears(&self) -> StoreResult<Vec<InArrears>>;
    /// Frozen wallets (at `now`) and wallets in arrears, for the dashboard.
    async fn wallet_stats(&self, tenant: TenantId, now: Timestamp) -> StoreResult<WalletStats>;

    /// Forgets up to `limit` used payment codes recorded before `before`, oldest first,
    /// and answers how many went. Only codes that can no longer be accepted may go: a
    /// code is refused as expired soon after it was issued, so its used nonce guards
    /// nothing after that.
    async fn purge_used_codes(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
    /// Forgets up to `limit` money-path idempotency records created before `before`,
    /// oldest first, and answers how many went (`Store::purge_idempotency` for the
    /// records of every other POST).
    async fn purge_money_requests(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;

    // --- outbox -----------------------------------------------------------------------
    /// Events not yet relayed, oldest page first, whole pages (`OutboxPage`), at most
    /// `limit` pages; only pages written before `before` when given (the relay's sweep
    /// leaves fresh ones to the node that wrote them).
    async fn pending_outbox(
        &self,
        before: Option<Timestamp>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEvent>>;
    /// Forgets relayed pages, by their keys (`PendingEvent::outbox_key`): their events'
    /// history now lives on the bus.
    async fn delete_outbox(&self, keys: Vec<EventId>) -> StoreResult<()>;
    /// How long the relay gathers relayed page keys before it deletes them in one statement.
    /// Zero: at once, with whatever is waiting.
    fn outbox_delete_gather(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    // --- payments -----------------------------------------------------------------------
    /// A declined attempt that no wallet owns (its code did not verify).
    async fn insert_orphan_payment(
        &self,
        payment: Payment,
        outbox: Vec<OutboxEvent>,
        request: MoneyRequest,
    ) -> StoreResult<()>;
    async fn get_payment(&self, tenant: TenantId, id: PaymentId) -> StoreResult<Payment>;
    async fn list_payments(
        &self,
        tenant: TenantId,
        filter: PaymentFilter,
        page: PageReq<PaymentId>,
    ) -> StoreResult<Page<Payment, PaymentId>>;
    /// The payments made at `merchants` at or after `from` and before `to` that moved
    /// money (every status but `declined`), oldest first (by time, then id), at most
    /// `limit`, read through the merchants' index.
    async fn payments_in_window(
        &self,
        tenant: TenantId,
        merchants: Vec<MerchantId>,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<PaymentLine>>;
    /// What one page of a cardholder's statement is made of (`StatementSources`), read
    /// at one moment: lines before `before` (a line's id), at most `limit` payments and
    /// `limit + 1` of each other kind of movement, through indexes no payment writes.
    async fn statement_sources(
        &self,
        tenant: TenantId,
        user: UserId,
        before: Option<uuid::Uuid>,
        limit: u32,
    ) -> StoreResult<StatementSources>;
    /// One page of a cardholder's statement, newest first (`statement`).
    async fn statement(
        &self,
        tenant: TenantId,
        user: UserId,
        page: PageReq<uuid::Uuid>,
    ) -> StoreResult<Page<StatementLine, uuid::Uuid>> {
        let sources = self
            .statement_sources(tenant, user, page.after, page.limit)
            .await?;
        let (items, next) = statement_page(sources, page.limit);
        Ok(Page { items, next })
    }
    /// Per funding source, what the merchant sold and refunded between the two times
    /// (computed from payments, the record of truth).
    async fn merchant_totals(
        &self,
        tenant: TenantId,
        merchant: MerchantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Totals>;

    /// The sums the financial reports are made of, between two times: from the roll-ups
    /// for the quarter hours they hold, and for the rest from payments (through the
    /// merchants' index), refunds (through the merchant refunds' index) and the other
    /// movements (through an index of their own): never a scan of the ledger.
    /// Per cardholder, their payments not declined made between the two times (through the
    /// merchants' index, as the reports' live sums): how many, what they came to, and how
    /// much of them has been refunded up to now.
    async fn spending_by_user(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UserSpending>>;
    async fn report_facts(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<ReportFacts>;
    /// Adds the sums of each tenant's quarter hours that ended `lag` before `now` to the
    /// report roll-ups (on PostgreSQL, also before any writing transaction open longer),
    /// at most `step` quarter hours a tenant a call (`report_facts` then reads them instead
    /// of the payments). Answers how many quarter hours it added in all; 0 once every
    /// tenant is rolled up.
    async fn roll_up_reports(
        &self,
        now: Timestamp,
        lag: jiff::SignedDuration,
        step: i64,
    ) -> StoreResult<u64>;
    /// Where the least rolled-up tenant's roll-ups end (a tenant never rolled up counts
    /// from its creation); `None` without tenants. For the operators' lag gauge.
    async fn report_rollups_end(&self) -> StoreResult<Option<Timestamp>>;

    /// The sales and refunds behind `merchant_totals`, one by one (merchant actors load
    /// this, then follow events, skipping what they already counted).
    async fn merchant_day(
        &self,
        tenant: TenantId,
        merchant: MerchantId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<MerchantDay>;

    // --- subsidy rules ----------------------------------------------------------------
    async fn create_subsidy_rule(
        &self,
        tenant: TenantId,
        rule: SubsidyRule,
        audit: Audit,
    ) -> StoreResult<()>;
    async fn get_subsidy_rule(
        &self,
        tenant: TenantId,
        id: SubsidyRuleId,
    ) -> StoreResult<SubsidyRule>;
    /// The tenant's rules, newest first, of one state or all.
    async fn list_subsidy_rules(
        &self,
        tenant: TenantId,
        state: Option<RuleState>,
        page: PageReq<SubsidyRuleId>,
    ) -> StoreResult<Page<SubsidyRule, SubsidyRuleId>>;
    /// Rejects a pending rule (or its maker withdraws it), with the reason its maker reads;
    /// 409 `not_pending` unless it is pending.
    async fn reject_subsidy_rule(
        &self,
        tenant: TenantId,
        id: SubsidyRuleId,
        by: AdminId,
        reason: String,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<SubsidyRule>;
    /// Active users matched by the targets (departments include their sub-departments).
    async fn resolve_targets(
        &self,
        tenant: TenantId,
        targets: SubsidyTargets,
    ) -> StoreResult<Vec<UserId>> {
        let holders = self
            .target_holders(tenant, targets, Some(UserStatus::Active))
            .await?;
        Ok(holders.into_iter().map(|h| h.id).collect())
    }
    /// The users the targets name (departments include their sub-departments) whose
    /// status is `status`, or of any status when `None`, in id order, with their names
    /// and numbers.
    async fn target_holders(
        &self,
        tenant: TenantId,
        targets: SubsidyTargets,
        status: Option<UserStatus>,
    ) -> StoreResult<Vec<Holder>>;
    /// One page of a register (withdrawals or top-ups), oldest first.
    async fn list_register(
        &self,
        tenant: TenantId,
        kind: RegisterKind,
        filter: RegisterFilter,
        page: PageReq<uuid::Uuid>,
    ) -> StoreResult<Page<RegisterLine, uuid::Uuid>>;
    /// What the registers say of the ledger transactions `ids`, in any order: a top-up's
    /// or withdrawal's reference (those with one), and each top-up reversal's top-up.
    /// What a statement shows beside those lines.
    async fn register_notes(
        &self,
        tenant: TenantId,
        ids: Vec<uuid::Uuid>,
    ) -> StoreResult<Vec<RegisterNote>>;
    /// One top-up of the register (`NotFound` if the tenant has no such top-up).
    async fn get_topup(&self, tenant: TenantId, id: uuid::Uuid) -> StoreResult<RegisterLine>;
    /// The top-ups of the tenant that stand (not reversed) and carry one of `references`,
    /// in any order.
    async fn topups_by_reference(
        &self,
        tenant: TenantId,
        references: Vec<String>,
    ) -> StoreResult<Vec<RegisterLine>>;
    /// Marks the rule effective and credits every user in one transaction: a subsidy
    /// account and its entries each, and a wallet version bump (so any cached wallet
    /// reloads). Refused (409 `not_pending`) unless the rule is pending.
    async fn approve_subsidy_rule(
        &self,
        tenant: TenantId,
        id: SubsidyRuleId,
        approver: AdminId,
        users: Vec<UserId>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<u64>;

    // --- checks -------------------------------------------------------------------------
    /// The ledger check from the seal (`seal_ledger`): the sealed sums, and every entry
    /// after them. Its time grows with the entries since the last seal, not with all.
    async fn ledger_check(&self, tenant: TenantId) -> StoreResult<LedgerCheck>;
    /// The ledger check from every entry, ignoring the seal.
    async fn ledger_check_full(&self, tenant: TenantId) -> StoreResult<LedgerCheck>;
    /// Adds every entry written since the seal to it, for all tenants, and answers how
    /// many. 0 also when another node is sealing, or (PostgreSQL) when the writers of
    /// entries did not pause within a short wait: the next round seals them.
    async fn seal_ledger(&self, now: Timestamp) -> StoreResult<u64>;
}
