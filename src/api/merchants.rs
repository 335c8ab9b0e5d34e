//! Merchants (a tree: root → site → stall), their terminals, and daily totals.

use actix_web::{get, patch, post, web, HttpResponse};
use jiff::civil::Date;
use onecard_actors::domain::collection;
use onecard_actors::domain::validate::Checks;
use onecard_actors::merchant::TodayOf;
use onecard_schema::ids::{MerchantId, TerminalId};
use onecard_schema::model::{Collection, CollectionMode, NewToken, TokenKind};
use onecard_schema::money::{Money, MONEY_JSON_MAX};
use onecard_schema::wallet::{Merchant, Terminal, Totals};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{checked, with_fresh_code, Paged};
use crate::auth::{hash_token, new_token, Auth, PaymentsManager, PaymentsViewer};
use crate::extract::{path_id, Json, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// Merchant names are at most 10 characters (SPEC §8: characters, not bytes).
pub const MERCHANT_NAME_CHARS_MAX: usize = 10;
/// Root, site, stall.
pub const MERCHANT_DEPTH_MAX: u8 = 3;
/// Default single-transaction limit: 50.00 CNY.
pub const SINGLE_LIMIT_DEFAULT: Money = Money(5000);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    #[schema(min_length = 1, max_length = 10)]
    pub name: String,
    pub parent_id: Option<MerchantId>,
    /// The tenant's own number; generated when absent. Unique in the tenant.
    #[schema(min_length = 1, max_length = 32, pattern = r"^[A-Za-z0-9._-]+$")]
    pub number: Option<String>,
    /// Fen; default 5000.
    #[schema(minimum = 1)]
    pub single_limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMerchant {
    #[schema(min_length = 1, max_length = 10)]
    pub name: Option<String>,
    #[schema(minimum = 1)]
    pub single_limit: Option<i64>,
}

/// A till (or POS) that scans cardholders' payment codes, or a static collection code
/// that cardholders scan with their phones (SPEC §13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TerminalKind {
    #[default]
    Till,
    Collection,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTerminal {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// Default `till`.
    #[serde(default)]
    pub kind: TerminalKind,
    /// A collection code's mode, required with it: `pay` (the person enters the amount)
    /// or `count` (a visit is counted; no money moves). Fixed once created.
    pub mode: Option<CollectionMode>,
}

/// A collection code as shown to admins: what to print.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionView {
    /// 8 characters, unique across tenants; printed under the QR code for typing.
    pub code: String,
    pub mode: CollectionMode,
    /// The address its QR code carries: the pay page with the code.
    pub pay_url: String,
}

impl CollectionView {
    pub fn of(c: &Collection, base: &str) -> Self {
        CollectionView {
            code: c.code.clone(),
            mode: c.mode,
            pay_url: collection::qr_text(base, &c.code),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TerminalView {
    pub id: TerminalId,
    pub merchant_id: MerchantId,
    pub name: String,
    pub kind: TerminalKind,
    /// Set for a collection code.
    pub collection: Option<CollectionView>,
    pub created_at: jiff::Timestamp,
    /// When it was retired (`POST /terminals/{id}/retire`); null while in use.
    pub retired_at: Option<jiff::Timestamp>,
}

impl TerminalView {
    pub fn of(t: &Terminal, base: &str) -> Self {
        TerminalView {
            id: t.id,
            merchant_id: t.merchant_id,
            name: t.name.clone(),
            kind: if t.collection.is_some() {
                TerminalKind::Collection
            } else {
                TerminalKind::Till
            },
            collection: t.collection.as_ref().map(|c| CollectionView::of(c, base)),
            created_at: t.created_at,
            retired_at: t.retired_at,
        }
    }
}

/// 410 `terminal_retired`: what a retired terminal's code or token answers.
pub fn terminal_retired() -> ApiError {
    ApiError::Gone {
        code: "terminal_retired",
        detail: "this terminal was retired: it takes no payments or visits".into(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TerminalCreated {
    #[serde(flatten)]
    pub terminal: TerminalView,
    /// The terminal's token; shown once. A till takes payments with it; a collection
    /// code's screen (`/screen`) shows the payments and visits at the code with it.
    pub token: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TotalsQuery {
    /// Tenant-local day, `YYYY-MM-DD`; default today.
    pub date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantTotals {
    pub date: String,
    #[serde(flatten)]
    pub own: Totals,
    /// The same over the merchant and everything under it.
    pub rollup: Totals,
}

fn check_limit(c: &mut Checks, limit: Option<i64>) -> Option<Money> {
    let l = limit?;
    if !(1..=MONEY_JSON_MAX).contains(&l) {
        c.fail(
            "single_limit",
            "range",
            format!("1 to {MONEY_JSON_MAX} fen"),
        );
        return None;
    }
    Some(Money(l))
}

/// Add a merchant (depth at most 3).
#[utoipa::path(tag = "merchants", request_body = CreateMerchant, security(("bearer" = [])),
    responses((status = 201, body = Merchant), Problems))]
#[post("/merchants")]
pub async fn create_merchant(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    Json(body): Json<CreateMerchant>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    c.text("name", &body.name, 1, MERCHANT_NAME_CHARS_MAX);
    if let Some(n) = &body.number {
        onecard_actors::domain::directory::check_number(&mut c, "number", n);
    }
    let limit = check_limit(&mut c, body.single_limit).unwrap_or(SINGLE_LIMIT_DEFAULT);
    checked(c)?;
    let all = state.store.list_merchants(tenant).await?;
    let depth = match body.parent_id {
        None => 1,
        Some(p) => {
            let parent = all.iter().find(|m| m.id == p).ok_or_else(|| {
                ApiError::invalid_field("parent_id", "exists", "no such merchant")
            })?;
            parent.depth + 1
        }
    };
    if depth > MERCHANT_DEPTH_MAX {
        return Err(ApiError::invalid_field(
            "parent_id",
            "max_depth",
            "merchant trees are at most 3 levels deep",
        ));
    }
    let number = body.number.unwrap_or_else(|| {
        let id = uuid::Uuid::now_v7().simple().to_string().to_uppercase();
        format!("M{}", &id[id.len() - 8..])
    });
    let merchant = Merchant {
        id: MerchantId::new(),
        parent_id: body.parent_id,
        name: body.name,
        number,
        single_limit: limit,
        depth,
        created_at: state.clock.now(),
    };
    let audit = caller.audit(
        &state,
        "merchant.create",
        "merchant",
        merchant.id,
        serde_json::json!({
            "name": merchant.name, "number": merchant.number, "parent_id": merchant.parent_id,
        }),
    );
    state
        .store
        .create_merchant(tenant, merchant.clone(), audit)
        .await?;
    state.merchants.remove(&tenant);
    Ok(HttpResponse::Created().json(merchant))
}

/// Every merchant, in tree order.
#[utoipa::path(tag = "merchants", security(("bearer" = [])),
    responses((status = 200, body = Paged<Merchant>), Problems))]
#[get("/merchants")]
pub async fn list_merchants(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
) -> Result<web::Json<Paged<Merchant>>, ApiError> {
    let all = state.store.list_merchants(caller.tenant()?).await?;
    let ordered = tree_order(&all).into_iter().cloned().collect();
    Ok(web::Json(Paged::new(ordered, None)))
}

/// The merchants in tree order: each root, then its subtree; siblings by name. What
/// `GET /merchants` answers and the order of the reports' rows. A merchant whose parent is
/// not in the list (a report narrowed to one settlement entity) stands as a root of it.
pub fn tree_order(merchants: &[Merchant]) -> Vec<&Merchant> {
    super::tree_order_by(merchants, |m| m.id, |m| m.parent_id, |m| &m.name)
}

/// One merchant.
#[utoipa::path(tag = "merchants", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Merchant), Problems))]
#[get("/merchants/{id}")]
pub async fn get_merchant(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
) -> Result<web::Json<Merchant>, ApiError> {
    let id: MerchantId = path_id(&id)?;
    let all = state.merchants_of(caller.tenant()?).await?;
    all.iter()
        .find(|m| m.id == id)
        .cloned()
        .map(web::Json)
        .ok_or(ApiError::NotFound)
}

/// Change a merchant's name or limit.
#[utoipa::path(tag = "merchants", params(("id" = String, Path)), request_body = PatchMerchant,
    security(("bearer" = [])), responses((status = 200, body = Merchant), Problems))]
#[patch("/merchants/{id}")]
pub async fn patch_merchant(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    id: web::Path<String>,
    Json(body): Json<PatchMerchant>,
) -> Result<web::Json<Merchant>, ApiError> {
    let id: MerchantId = path_id(&id)?;
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    if let Some(n) = &body.name {
        c.text("name", n, 1, MERCHANT_NAME_CHARS_MAX);
    }
    let limit = check_limit(&mut c, body.single_limit);
    checked(c)?;
    let audit = caller.audit(
        &state,
        "merchant.update",
        "merchant",
        id,
        serde_json::json!({
            "name": body.name, "single_limit": limit.map(|m| m.0),
        }),
    );
    let m = state
        .store
        .update_merchant(tenant, id, body.name, limit, audit)
        .await?;
    state.merchants.remove(&tenant);
    Ok(web::Json(m))
}

/// One tenant-local day of a merchant and those under it: what a day's figures read.
pub struct MerchantDay {
    pub tenant: onecard_schema::ids::TenantId,
    pub policy: onecard_actors::wallet::Policy,
    pub date: Date,
    /// The day's bounds, in UTC.
    pub from: jiff::Timestamp,
    pub to: jiff::Timestamp,
    /// The merchant first, then those under it.
    pub subtree: Vec<MerchantId>,
}

impl MerchantDay {
    /// Merchant `id` (404 unless the caller's tenant's) on `date` (`YYYY-MM-DD`; today
    /// when absent).
    pub async fn of(
        state: &AppState,
        caller: &crate::auth::Caller,
        id: &str,
        date: Option<&str>,
    ) -> Result<Self, ApiError> {
        let id: MerchantId = path_id(id)?;
        let tenant = caller.tenant()?;
        let policy = state.policy(tenant).await?;
        let date: Date = match date {
            Some(d) => d
                .parse()
                .map_err(|_| ApiError::invalid_field("date", "date", "a date as YYYY-MM-DD"))?,
            None => state.clock.now().to_zoned(policy.tz.clone()).date(),
        };
        let (from, to) = state.local_day(&policy, date);
        let all = state.merchants_of(tenant).await?;
        let subtree = subtree(&all, id).ok_or(ApiError::NotFound)?;
        Ok(MerchantDay {
            tenant,
            policy,
            date,
            from,
            to,
            subtree,
        })
    }
}

/// `id` and the merchants under it, `id` first; `None` unless `id` is among `all`.
pub fn subtree(all: &[Merchant], id: MerchantId) -> Option<Vec<MerchantId>> {
    if !all.iter().any(|m| m.id == id) {
        return None;
    }
    let mut subtree = vec![id];
    let mut i = 0;
    while i < subtree.len() {
        let parent = subtree[i];
        subtree.extend(
            all.iter()
                .filter(|m| m.parent_id == Some(parent))
                .map(|m| m.id),
        );
        i += 1;
    }
    Some(subtree)
}

/// Add a till or POS, or a static collection code (`kind: collection`, with its `mode`;
/// it gets a fresh code), to a merchant; its token is shown once.
#[utoipa::path(tag = "merchants", params(("id" = String, Path)), request_body = CreateTerminal,
    security(("bearer" = [])), responses((status = 201, body = TerminalCreated), Problems))]
#[post("/merchants/{id}/terminals")]
pub async fn create_terminal(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    id: web::Path<String>,
    Json(body): Json<CreateTerminal>,
) -> Result<HttpResponse, ApiError> {
    let merchant: MerchantId = path_id(&id)?;
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    c.text("name", &body.name, 1, 64);
    let collection = match (body.kind, body.mode) {
        (TerminalKind::Till, None) => None,
        (TerminalKind::Till, Some(_)) => {
            c.fail("mode", "forbidden", "only a collection code has a mode");
            None
        }
        (TerminalKind::Collection, None) => {
            c.fail("mode", "required", "pay or count");
            None
        }
        (TerminalKind::Collection, Some(mode)) => Some(Collection {
            code: String::new(),
            mode,
        }),
    };
    checked(c)?;
    let now = state.clock.now();
    let terminal = Terminal {
        id: TerminalId::new(),
        merchant_id: merchant,
        name: body.name,
        created_at: now,
        collection,
        retired_at: None,
    };
    let token = new_token();
    let stored = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Terminal,
        tenant_id: Some(tenant),
        subject_id: Some(terminal.id.0),
        created_at: now,
    };
    let write = |t: Terminal| {
        let audit = caller.audit(
            &state,
            "terminal.create",
            "terminal",
            t.id,
            serde_json::json!({
                "merchant_id": merchant,
                "collection": t.collection,
            }),
        );
        let (store, stored) = (state.store.clone(), stored.clone());
        async move { store.create_terminal(tenant, t, stored, audit).await }
    };
    let terminal = if terminal.collection.is_some() {
        with_fresh_code(
            terminal,
            |t, code| {
                if let Some(c) = &mut t.collection {
                    c.code = code;
                }
            },
            write,
        )
        .await?
    } else {
        write(terminal.clone()).await?;
        terminal
    };
    Ok(HttpResponse::Created().json(TerminalCreated {
        terminal: TerminalView::of(&terminal, &state.public_url_of(caller.tenant()?).await?),
        token,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TerminalToken {
    /// The terminal's new token; shown once. Every earlier one no longer works.
    pub token: String,
}

/// Give a terminal a new token and revoke its others (a till lost, stolen or replaced;
/// a collection code's screen moved): audited `terminal.token`. Other nodes stop taking
/// the old token within the token cache's 5 seconds.
#[utoipa::path(tag = "merchants", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = TerminalToken), Problems))]
#[post("/terminals/{id}/token")]
pub async fn replace_terminal_token(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let id: TerminalId = path_id(&id)?;
    let token = new_token();
    let stored = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Terminal,
        tenant_id: Some(tenant),
        subject_id: Some(id.0),
        created_at: state.clock.now(),
    };
    let audit = caller.audit(
        &state,
        "terminal.token",
        "terminal",
        id,
        serde_json::json!({}),
    );
    match state
        .store
        .replace_terminal_token(tenant, id, stored, audit)
        .await
    {
        Err(StoreError::Gone) => return Err(terminal_retired()),
        other => other?,
    }
    // The old token is revoked: drop every cached token here.
    state.tokens.clear();
    Ok(HttpResponse::Created().json(TerminalToken { token }))
}

/// Retire a terminal (a till sold, a stall closed): its tokens are revoked and its
/// collection code answers 410 `terminal_retired`; it stays listed, with its payments and
/// visits. Audited `terminal.retire`; again: the same answer. Other nodes follow within
/// their caches' 5 seconds.
#[utoipa::path(tag = "merchants", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = TerminalView), Problems))]
#[post("/terminals/{id}/retire")]
pub async fn retire_terminal(
    state: web::Data<AppState>,
    caller: Auth<PaymentsManager>,
    id: web::Path<String>,
) -> Result<web::Json<TerminalView>, ApiError> {
    let tenant = caller.tenant()?;
    let id: TerminalId = path_id(&id)?;
    let audit = caller.audit(
        &state,
        "terminal.retire",
        "terminal",
        id,
        serde_json::json!({}),
    );
    let t = state
        .store
        .retire_terminal(tenant, id, state.clock.now(), audit)
        .await?;
    state.tokens.clear();
    state.terminals.remove(&id);
    state.collection_codes.clear();
    Ok(web::Json(TerminalView::of(
        &t,
        &state.public_url_of(tenant).await?,
    )))
}

/// A merchant's terminals: its tills and its collection codes, oldest first.
#[utoipa::path(tag = "merchants", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<TerminalView>), Problems))]
#[get("/merchants/{id}/terminals")]
pub async fn list_terminals(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
) -> Result<web::Json<Vec<TerminalView>>, ApiError> {
    let tenant = caller.tenant()?;
    let merchant: MerchantId = path_id(&id)?;
    if !state
        .merchants_of(tenant)
        .await?
        .iter()
        .any(|m| m.id == merchant)
    {
        return Err(ApiError::NotFound);
    }
    let terminals = state.store.list_terminals(tenant, vec![merchant]).await?;
    let base = state.public_url_of(tenant).await?;
    Ok(web::Json(
        terminals
            .iter()
            .map(|t| TerminalView::of(t, &base))
            .collect(),
    ))
}

/// A merchant's totals for one tenant-local day, and the roll-up over its subtree.
#[utoipa::path(tag = "merchants", params(("id" = String, Path), TotalsQuery), security(("bearer" = [])),
    responses((status = 200, body = MerchantTotals), Problems))]
#[get("/merchants/{id}/totals")]
pub async fn get_merchant_totals(
    state: web::Data<AppState>,
    caller: Auth<PaymentsViewer>,
    id: web::Path<String>,
    Query(q): Query<TotalsQuery>,
) -> Result<web::Json<MerchantTotals>, ApiError> {
    let MerchantDay {
        tenant,
        policy,
        date,
        from,
        to,
        subtree,
    } = MerchantDay::of(&state, &caller, &id, q.date.as_deref()).await?;
    let id = subtree[0];
    // Today comes from the merchant actors' running totals; other days from the store.
    let today = state.clock.now().to_zoned(policy.tz.clone()).date();
    let each: Vec<Totals> = if date == today {
        state
            .merchant_totals
            .send(TodayOf {
                tenant,
                merchants: subtree.clone(),
            })
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("merchant actors: {e}")))?
            .map_err(|e| ApiError::internal(anyhow::anyhow!("merchant totals: {e}")))?
    } else {
        let mut v = Vec::with_capacity(subtree.len());
        for m in &subtree {
            v.push(state.store.merchant_totals(tenant, *m, from, to).await?);
        }
        v
    };
    let mut rollup = Totals::default();
    let mut own = Totals::default();
    for (m, t) in subtree.into_iter().zip(each) {
        if m == id {
            own = t;
        }
        rollup.gross = Money(rollup.gross.0 + t.gross.0);
        rollup.refunds = Money(rollup.refunds.0 + t.refunds.0);
        rollup.count += t.count;
        rollup.by_source.coupon = Money(rollup.by_source.coupon.0 + t.by_source.coupon.0);
        rollup.by_source.subsidy = Money(rollup.by_source.subsidy.0 + t.by_source.subsidy.0);
        rollup.by_source.balance = Money(rollup.by_source.balance.0 + t.by_source.balance.0);
        rollup.by_source.deferred = Money(rollup.by_source.deferred.0 + t.by_source.deferred.0);
    }
    Ok(web::Json(MerchantTotals {
        date: date.to_string(),
        own,
        rollup,
    }))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TerminalSelf {
    pub id: String,
    pub name: String,
    pub merchant_id: String,
    pub merchant_name: String,
    /// The topic this till may subscribe to on `/api/v1/ws`.
    pub topic: String,
    /// Set when this terminal is a collection code.
    pub collection: Option<CollectionView>,
}

/// The till itself (terminal token): what a till screen shows and subscribes to.
#[utoipa::path(tag = "merchants", security(("bearer" = [])),
    responses((status = 200, body = TerminalSelf), Problems))]
#[get("/terminal")]
pub async fn get_terminal_self(
    state: web::Data<AppState>,
    caller: Auth<crate::auth::Terminal>,
) -> Result<web::Json<TerminalSelf>, ApiError> {
    let tenant = caller.tenant()?;
    let id = onecard_schema::ids::TerminalId(caller.subject()?);
    let t = state.terminal(tenant, id).await?;
    let merchant_name = state.merchant_name(tenant, t.merchant_id).await?;
    let base = state.public_url_of(tenant).await?;
    Ok(web::Json(TerminalSelf {
        id: t.id.to_string(),
        name: t.name.clone(),
        merchant_id: t.merchant_id.to_string(),
        merchant_name,
        topic: format!("terminal:{}", t.id),
        collection: t.collection.as_ref().map(|c| CollectionView::of(c, &base)),
    }))
}
