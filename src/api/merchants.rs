//! Merchants (a tree: root → site → stall), their terminals, and daily totals.

use std::collections::HashMap;

use actix_web::{get, patch, post, web, HttpResponse};
use jiff::civil::Date;
use onecard_actors::domain::validate::Checks;
use onecard_actors::merchant::TodayOf;
use onecard_schema::ids::{MerchantId, TerminalId};
use onecard_schema::model::{NewToken, TokenKind};
use onecard_schema::money::{Money, MONEY_JSON_MAX};
use onecard_schema::wallet::{Merchant, Terminal, Totals};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{checked, Paged};
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTerminal {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TerminalCreated {
    pub id: TerminalId,
    /// The terminal's token; shown once.
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
/// `GET /merchants` answers and the order of the reports' rows.
pub fn tree_order(merchants: &[Merchant]) -> Vec<&Merchant> {
    let mut children: HashMap<Option<MerchantId>, Vec<&Merchant>> = HashMap::new();
    for m in merchants {
        children.entry(m.parent_id).or_default().push(m);
    }
    for kids in children.values_mut() {
        kids.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut out = Vec::with_capacity(merchants.len());
    let mut stack: Vec<&Merchant> = children
        .get(&None)
        .into_iter()
        .flatten()
        .rev()
        .copied()
        .collect();
    while let Some(m) = stack.pop() {
        out.push(m);
        if let Some(kids) = children.get(&Some(m.id)) {
            stack.extend(kids.iter().rev().copied());
        }
    }
    out
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

/// Add a till, POS or collection code to a merchant; its token is shown once.
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
    checked(c)?;
    let now = state.clock.now();
    let terminal = Terminal {
        id: TerminalId::new(),
        merchant_id: merchant,
        name: body.name,
        created_at: now,
    };
    let token = new_token();
    let stored = NewToken {
        hash: hash_token(&token),
        kind: TokenKind::Terminal,
        tenant_id: Some(tenant),
        subject_id: Some(terminal.id.0),
        created_at: now,
    };
    let audit = caller.audit(
        &state,
        "terminal.create",
        "terminal",
        terminal.id,
        serde_json::json!({
            "merchant_id": merchant,
        }),
    );
    state
        .store
        .create_terminal(tenant, terminal.clone(), stored, audit)
        .await?;
    Ok(HttpResponse::Created().json(TerminalCreated {
        id: terminal.id,
        token,
    }))
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
    let id: MerchantId = path_id(&id)?;
    let tenant = caller.tenant()?;
    let policy = state.policy(tenant).await?;
    let date: Date = match &q.date {
        Some(d) => d
            .parse()
            .map_err(|_| ApiError::invalid_field("date", "date", "a date as YYYY-MM-DD"))?,
        None => state.clock.now().to_zoned(policy.tz.clone()).date(),
    };
    let (from, to) = state.local_day(&policy, date);
    let all = state.merchants_of(tenant).await?;
    if !all.iter().any(|m| m.id == id) {
        return Err(ApiError::NotFound);
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
    let merchants = state.merchants_of(tenant).await?;
    let merchant_name = merchants
        .iter()
        .find(|m| m.id == t.merchant_id)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    Ok(web::Json(TerminalSelf {
        id: t.id.to_string(),
        name: t.name.clone(),
        merchant_id: t.merchant_id.to_string(),
        merchant_name,
        topic: format!("terminal:{}", t.id),
    }))
}
