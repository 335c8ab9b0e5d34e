//! Financial reports (SPEC §9): five reports over a tenant-local period, as JSON, CSV or
//! XLSX. Every figure is a sum of ledger entries or of the payments they were written
//! with (`MoneyStore::report_facts`), so each report reconciles with the ledger, and the
//! five agree with one another (docs/OPERATIONS.md, "Financial reports").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{get, web, HttpResponse};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use onecard_actors::domain::edition::Capability;
use onecard_schema::ids::{MerchantId, TerminalId};
use onecard_schema::model::Tenant;
use onecard_schema::settlement_store::{Schedule, SettlementEntity, SettlesTo};
use onecard_schema::wallet::{Breakdown, Merchant, RefundBucket, ReportFacts, REPORT_BUCKET_MS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::merchants::tree_order;
use crate::auth::{AnalyticsAdmin, Auth};
use crate::extract::Query;
use crate::import::XLSX_MIME;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// The longest period one report covers.
pub const MAX_DAYS: i32 = 366;

/// How often each node adds closed quarter hours to the report roll-ups.
pub const ROLLUP_EVERY_S: u64 = 60;
/// How long after its end a quarter hour is rolled up: long past the commit of a payment
/// decided in it, and past clock differences between nodes. On PostgreSQL the store also
/// stays behind any writing transaction held open longer (`MoneyStore::roll_up_reports`).
pub const ROLLUP_LAG: SignedDuration = SignedDuration::from_hours(1);
/// Quarter hours a tenant a store call: a week, so that one call's sums stay short even
/// for a large site, and a tenant with years of history catches up in steps.
pub const ROLLUP_STEP: i64 = 7 * 96;
/// How long one round goes on catching up before it leaves the rest to the next.
const ROLLUP_ROUND: Duration = Duration::from_secs(10);

/// A tenant's report: its period and format, and which merchants' sales it covers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantReportQuery {
    /// First tenant-local day, `YYYY-MM-DD`; default today.
    pub from: Option<String>,
    /// Last tenant-local day (inclusive), `YYYY-MM-DD`; default `from`. At most 366 days.
    pub to: Option<String>,
    /// `json` (default), `csv` or `xlsx`.
    #[param(inline)]
    pub format: Option<ReportFormat>,
    /// The merchant reports only: the sales of the days each merchant settled to this
    /// settlement entity (its id), or to the tenant itself (`own`). Needs
    /// multi-merchant-entity settlement (advanced edition and up).
    pub settlement_entity: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// First tenant-local day, `YYYY-MM-DD`; default today.
    pub from: Option<String>,
    /// Last tenant-local day (inclusive), `YYYY-MM-DD`; default `from`. At most 366 days.
    pub to: Option<String>,
    /// `json` (default), `csv` or `xlsx`.
    #[param(inline)]
    pub format: Option<ReportFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
    Xlsx,
}

/// The five reports of SPEC §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    IncomeSummary,
    MerchantClearing,
    MerchantSummary,
    MerchantSplit,
    MerchantReceipts,
    /// Per settlement entity (and the tenant itself): what its merchants sold on the days
    /// they settled to it (multi-merchant-entity settlement).
    EntitySettlement,
    /// A tenant group's income summary, one line per member tenant (`GET /group/reports/…`);
    /// not one of a tenant's own reports, so not in `ALL`.
    GroupIncomeSummary,
    /// Cardholders' spending by department, identity or person (`GET /analytics/spending`,
    /// enhanced analytics); not in `ALL` either.
    SpendingByDepartment,
    SpendingByIdentity,
    SpendingByUser,
}

impl ReportKind {
    pub const ALL: [ReportKind; 6] = [
        ReportKind::IncomeSummary,
        ReportKind::MerchantClearing,
        ReportKind::MerchantSummary,
        ReportKind::MerchantSplit,
        ReportKind::MerchantReceipts,
        ReportKind::EntitySettlement,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::IncomeSummary => "income-summary",
            ReportKind::MerchantClearing => "merchant-clearing",
            ReportKind::MerchantSummary => "merchant-summary",
            ReportKind::MerchantSplit => "merchant-split",
            ReportKind::MerchantReceipts => "merchant-receipts",
            ReportKind::EntitySettlement => "entity-settlement",
            ReportKind::GroupIncomeSummary => "group-income-summary",
            ReportKind::SpendingByDepartment => "spending-by-department",
            ReportKind::SpendingByIdentity => "spending-by-identity",
            ReportKind::SpendingByUser => "spending-by-user",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ReportKind::IncomeSummary => "Income and expense summary",
            ReportKind::MerchantClearing => "Merchant clearing",
            ReportKind::MerchantSummary => "Merchant summary, rolled up the merchant tree",
            ReportKind::MerchantSplit => "Merchant split by funding source",
            ReportKind::MerchantReceipts => "Merchant receipts by terminal and hour",
            ReportKind::EntitySettlement => "Settlement by entity",
            ReportKind::GroupIncomeSummary => "Income and expense summary by member tenant",
            ReportKind::SpendingByDepartment => "Cardholders' spending by department",
            ReportKind::SpendingByIdentity => "Cardholders' spending by identity",
            ReportKind::SpendingByUser => "Cardholders' spending, person by person",
        }
    }
}

impl std::str::FromStr for ReportKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ReportKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// A report as JSON. `rows` hold one object per line, keyed by the report's columns
/// (docs/OPERATIONS.md lists them); money is in fen. `totals` sums the columns that add
/// up (counts and money, not the subtree columns of `merchant-summary`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Report {
    pub report: String,
    /// First and last tenant-local day, inclusive.
    pub from: String,
    pub to: String,
    pub time_zone: String,
    pub currency: &'static str,
    /// Every money figure is an integer number of this unit.
    pub unit: &'static str,
    pub generated_at: Timestamp,
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    #[schema(value_type = Object)]
    pub totals: serde_json::Map<String, serde_json::Value>,
}

/// A financial report over a period of tenant-local days.
///
/// `income-summary` (per day: receivable, received, refunds, top-ups,
/// subsidies issued, arrears opened, recovered and written off), `merchant-clearing`
/// (per merchant: payments, gross, refunds, net to settle), `merchant-summary` (the same,
/// own and rolled up the merchant tree), `merchant-split` (per merchant: gross by funding
/// source) or `merchant-receipts` (per merchant, terminal, day and hour: what was taken,
/// by funding source) or `entity-settlement` (per settlement entity and the tenant itself:
/// what its merchants sold and refunded on the days they settled to it, by funding source).
/// Needs the analytics capability (standard edition and up); `entity-settlement` and the
/// `settlement_entity` filter also need multi-merchant-entity settlement (advanced and up).
/// Closed quarter hours are read from roll-ups, the last hour or so from the payments.
#[utoipa::path(tag = "analytics",
    params(("kind" = String, Path, description = "income-summary, merchant-clearing, merchant-summary, merchant-split, merchant-receipts or entity-settlement"), TenantReportQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The report", content(
            (Report = "application/json"),
            (String = "text/csv"),
            (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        )),
        Problems))]
#[get("/reports/{kind}")]
pub async fn get_report(
    state: web::Data<AppState>,
    caller: Auth<AnalyticsAdmin>,
    kind: web::Path<String>,
    Query(q): Query<TenantReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let kind: ReportKind = kind.parse().map_err(|_| ApiError::NotFound)?;
    let tenant = caller.tenant()?;
    let settled = kind == ReportKind::EntitySettlement || q.settlement_entity.is_some();
    if settled {
        caller.require(Capability::MultiMerchantSettlement)?;
    }
    let filter = q
        .settlement_entity
        .as_deref()
        .map(|s| super::settlement::parse_settles_to("settlement_entity", s))
        .transpose()?;
    if filter.is_some()
        && matches!(
            kind,
            ReportKind::IncomeSummary | ReportKind::EntitySettlement
        )
    {
        return Err(ApiError::invalid_field(
            "settlement_entity",
            "merchant_reports_only",
            "only the merchant reports cover one settlement entity",
        ));
    }
    let tenant_row = state.tenant(tenant).await?;
    let policy = crate::state::policy_of(&tenant_row);
    let now = state.clock.now();
    let (from, to) = period(
        q.from.as_deref(),
        q.to.as_deref(),
        now.to_zoned(policy.tz.clone()).date(),
        MAX_DAYS,
    )?;
    let start = state.local_day(&policy, from).0;
    let end = state.local_day(&policy, to).1;
    let mut facts = state.store.report_facts(tenant, start, end).await?;
    let all = state.merchants_of(tenant).await?;
    let mut narrowed = None;
    let mut settlement = None;
    if settled {
        let schedule = Schedule::new(&all, &state.store.merchant_settlements(tenant).await?);
        let entities = state.store.list_settlement_entities(tenant).await?;
        if let Some(f) = filter {
            if let SettlesTo::Entity(id) = f {
                if !entities.iter().any(|e| e.id == id) {
                    return Err(ApiError::invalid_field(
                        "settlement_entity",
                        "exists",
                        "no such settlement entity",
                    ));
                }
            }
            let mut merchants = all.to_vec();
            keep_settled_to(
                &mut facts,
                &mut merchants,
                &schedule,
                &policy.tz,
                f,
                from,
                to,
            );
            narrowed = Some(merchants);
        }
        settlement = Some((schedule, entities));
    }
    let mut terminals = HashMap::new();
    if kind == ReportKind::MerchantReceipts {
        for s in &facts.sales {
            if let std::collections::hash_map::Entry::Vacant(e) = terminals.entry(s.terminal_id) {
                e.insert(state.terminal(tenant, s.terminal_id).await?.name);
            }
        }
    }
    let input = Input {
        facts: &facts,
        merchants: narrowed.as_deref().unwrap_or(&all),
        terminals: &terminals,
        tz: &policy.tz,
        from,
        to,
        settlement: settlement.as_ref().map(|(schedule, entities)| Settlement {
            schedule,
            entities,
            tenant_name: &tenant_row.name,
        }),
    };
    let table = build(kind, &input);
    let head = Head {
        kind,
        from,
        to,
        time_zone: policy.tz.iana_name().unwrap_or("UTC").to_string(),
        generated_at: now,
    };
    respond(table, head, q.format).await
}

/// Narrows a report to one settlement entity's sales: the facts of the days each merchant
/// settled to it, and the merchants that did on any day of the period.
fn keep_settled_to(
    facts: &mut ReportFacts,
    merchants: &mut Vec<Merchant>,
    schedule: &Schedule,
    tz: &TimeZone,
    to_whom: SettlesTo,
    from: Date,
    to: Date,
) {
    let day = |bucket: i64| local_of(tz, bucket).0;
    facts
        .sales
        .retain(|s| schedule.on(s.merchant_id, day(s.bucket)).0 == to_whom);
    facts
        .refunds
        .retain(|r| schedule.on(r.merchant_id, day(refund_sale_bucket(r))).0 == to_whom);
    // Its merchants on some day of the period, and any with a refund counted against it
    // (of a sale from before the period).
    let days = days_of(from, to);
    let refunded: std::collections::HashSet<MerchantId> =
        facts.refunds.iter().map(|r| r.merchant_id).collect();
    merchants.retain(|m| {
        refunded.contains(&m.id) || days.iter().any(|d| schedule.on(m.id, *d).0 == to_whom)
    });
}

/// The quarter hour whose day decides whom a refund is counted against: its sale's, or
/// its own where the sale's was not kept (roll-ups of days before settlement entities).
fn refund_sale_bucket(r: &RefundBucket) -> i64 {
    r.sale_bucket.unwrap_or(r.bucket)
}

/// The period a query asks for: `from` (default `today`) to `to` (default `from`), at most
/// `max_days` days (`MAX_DAYS` for a report).
pub fn period(
    from: Option<&str>,
    to: Option<&str>,
    today: Date,
    max_days: i32,
) -> Result<(Date, Date), ApiError> {
    let from = parse_date("from", from)?.unwrap_or(today);
    let to = parse_date("to", to)?.unwrap_or(from);
    if to < from {
        return Err(ApiError::invalid_field("to", "range", "not before from"));
    }
    if from.until(to).map_err(ApiError::internal)?.get_days() >= max_days {
        return Err(ApiError::invalid_field(
            "to",
            "range",
            format!("at most {max_days} days"),
        ));
    }
    Ok((from, to))
}

/// A report's answer in the format asked for (JSON by default, or a CSV or XLSX file).
pub async fn respond(
    table: Table,
    head: Head,
    format: Option<ReportFormat>,
) -> Result<HttpResponse, ApiError> {
    let kind = head.kind;
    let (from, to) = (head.from, head.to);
    let (body, mime, ext) = match format.unwrap_or(ReportFormat::Json) {
        ReportFormat::Json => {
            return Ok(HttpResponse::Ok().json(table.to_json(head)));
        }
        ReportFormat::Csv => (table.to_csv(), "text/csv; charset=utf-8", "csv"),
        ReportFormat::Xlsx => {
            let bytes = web::block(move || table.to_xlsx(&head))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
            (bytes, XLSX_MIME, "xlsx")
        }
    };
    Ok(super::attachment(
        body,
        mime,
        &format!("onecard-{}-{from}-{to}.{ext}", kind.as_str()),
    ))
}

/// The roll-up loop (docs/OPERATIONS.md, "Financial reports"): every `ROLLUP_EVERY_S` on
/// each node; the nodes take turns through the store.
pub fn spawn_rollups(state: Arc<AppState>) {
    crate::tasks::every(
        state,
        Duration::from_secs(ROLLUP_EVERY_S),
        "report roll-up",
        |state| async move { roll_up(&state).await.map(|_| ()) },
    );
}

/// Adds every quarter hour that ended `ROLLUP_LAG` ago or earlier to the roll-ups, for
/// up to `ROLLUP_ROUND`; answers how many it added.
pub async fn roll_up(state: &AppState) -> Result<u64, ApiError> {
    let now = state.clock.now();
    let started = Instant::now();
    let mut added = 0;
    loop {
        let n = state
            .store
            .roll_up_reports(now, ROLLUP_LAG, ROLLUP_STEP)
            .await?;
        added += n;
        if n == 0 || started.elapsed() > ROLLUP_ROUND {
            break;
        }
    }
    if added > 0 {
        tracing::debug!(quarter_hours = added, "report roll-ups added");
    }
    // How far behind now the least rolled-up tenant's roll-ups end: `ROLLUP_LAG` and up
    // to a quarter hour more while the loop keeps up (docs/OPERATIONS.md).
    if let Some(end) = state.store.report_rollups_end().await? {
        let behind = now.duration_since(end).as_secs_f64().max(0.0);
        metrics::gauge!("report_rollups_behind_seconds").set(behind);
    }
    Ok(added)
}

pub fn parse_date(field: &str, s: Option<&str>) -> Result<Option<Date>, ApiError> {
    s.map(|s| {
        s.parse::<Date>()
            .ok()
            .filter(|d| s.len() == 10 && d.year() >= 2000)
            .ok_or_else(|| {
                ApiError::invalid_field(field, "date", "a date as YYYY-MM-DD, 2000 or later")
            })
    })
    .transpose()
}

pub struct Head {
    pub kind: ReportKind,
    pub from: Date,
    pub to: Date,
    /// The zone whose days `from` and `to` are.
    pub time_zone: String,
    pub generated_at: Timestamp,
}

/// What a report is built from.
pub struct Input<'a> {
    pub facts: &'a ReportFacts,
    pub merchants: &'a [Merchant],
    pub terminals: &'a HashMap<TerminalId, String>,
    pub tz: &'a TimeZone,
    pub from: Date,
    pub to: Date,
    /// Whom each merchant settled to, for `entity-settlement`.
    pub settlement: Option<Settlement<'a>>,
}

/// The tenant's settlement entities and its merchants' schedule of them.
pub struct Settlement<'a> {
    pub schedule: &'a Schedule,
    /// By name.
    pub entities: &'a [SettlementEntity],
    /// The name the tenant's own line carries.
    pub tenant_name: &'a str,
}

/// The tenant-local day and hour a bucket lies in.
fn local_of(tz: &TimeZone, bucket: i64) -> (Date, i8) {
    let t = Timestamp::from_millisecond(bucket * REPORT_BUCKET_MS).unwrap_or(Timestamp::UNIX_EPOCH);
    let z = t.to_zoned(tz.clone());
    (z.date(), z.hour())
}

/// Every day from `from` to `to`, both included.
fn days_of(from: Date, to: Date) -> Vec<Date> {
    let mut out = Vec::new();
    let mut d = from;
    while d <= to {
        out.push(d);
        match d.checked_add(1.day()) {
            Ok(next) => d = next,
            Err(_) => break,
        }
    }
    out
}

impl Input<'_> {
    /// The tenant-local day and hour a bucket lies in.
    fn local(&self, bucket: i64) -> (Date, i8) {
        local_of(self.tz, bucket)
    }

    fn days(&self) -> Vec<Date> {
        days_of(self.from, self.to)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    /// A whole number that is summed in the totals (a count).
    Count,
    /// A whole number that is not summed (an hour, a depth).
    Int,
    /// Money in fen, summed in the totals.
    Money,
    /// Money in fen, not summed (a subtree's figure: it repeats its children's).
    MoneyNoTotal,
    /// A count not summed.
    CountNoTotal,
}

impl Kind {
    fn summed(self) -> bool {
        matches!(self, Kind::Count | Kind::Money)
    }
    fn money(self) -> bool {
        matches!(self, Kind::Money | Kind::MoneyNoTotal)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Column {
    key: &'static str,
    title: &'static str,
    kind: Kind,
}

pub(crate) const fn col(key: &'static str, title: &'static str, kind: Kind) -> Column {
    Column { key, title, kind }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    Int(i64),
}

pub struct Table {
    kind: ReportKind,
    columns: &'static [Column],
    pub rows: Vec<Vec<Cell>>,
}

const MERCHANT: [Column; 3] = [
    col("merchant_id", "Merchant id", Kind::Text),
    col("merchant_number", "Merchant number", Kind::Text),
    col("merchant_name", "Merchant", Kind::Text),
];

static INCOME: [Column; 10] = [
    col("date", "Date", Kind::Text),
    col("receivable", "Receivable", Kind::Money),
    col("received", "Received", Kind::Money),
    col("refunds", "Refunds", Kind::Money),
    col("top_ups", "Top-ups", Kind::Money),
    col("subsidies_issued", "Subsidies issued", Kind::Money),
    col("arrears_opened", "Arrears opened", Kind::Money),
    col("arrears_recovered", "Arrears recovered", Kind::Money),
    col("arrears_written_off", "Arrears written off", Kind::Money),
    col("withdrawals", "Withdrawals", Kind::Money),
];

static GROUP_INCOME: [Column; 13] = [
    col("tenant_id", "Tenant id", Kind::Text),
    col("tenant_name", "Tenant", Kind::Text),
    col("time_zone", "Time zone", Kind::Text),
    INCOME[1],
    INCOME[2],
    INCOME[3],
    INCOME[4],
    INCOME[5],
    INCOME[6],
    INCOME[7],
    INCOME[8],
    INCOME[9],
    col("payments", "Payments", Kind::Count),
];

static CLEARING: [Column; 7] = [
    MERCHANT[0],
    MERCHANT[1],
    MERCHANT[2],
    col("payments", "Payments", Kind::Count),
    col("gross", "Gross", Kind::Money),
    col("refunds", "Refunds", Kind::Money),
    col("net", "Net to settle", Kind::Money),
];

static SUMMARY: [Column; 13] = [
    MERCHANT[0],
    MERCHANT[1],
    MERCHANT[2],
    col("parent_number", "Parent number", Kind::Text),
    col("depth", "Depth", Kind::Int),
    col("payments", "Payments", Kind::Count),
    col("gross", "Gross", Kind::Money),
    col("refunds", "Refunds", Kind::Money),
    col("net", "Net", Kind::Money),
    col(
        "subtree_payments",
        "Payments with sub-merchants",
        Kind::CountNoTotal,
    ),
    col(
        "subtree_gross",
        "Gross with sub-merchants",
        Kind::MoneyNoTotal,
    ),
    col(
        "subtree_refunds",
        "Refunds with sub-merchants",
        Kind::MoneyNoTotal,
    ),
    col("subtree_net", "Net with sub-merchants", Kind::MoneyNoTotal),
];

static ENTITY_SETTLEMENT: [Column; 13] = [
    col("settlement_entity_id", "Settlement entity id", Kind::Text),
    col("settlement_entity", "Settlement entity", Kind::Text),
    col("legal_name", "Legal name", Kind::Text),
    col("provider_sub_merchant", "Provider sub-merchant", Kind::Text),
    col("bank_account", "Bank account", Kind::Text),
    col("payments", "Payments", Kind::Count),
    col("gross", "Gross", Kind::Money),
    col("refunds", "Refunds", Kind::Money),
    col("net", "Net to settle", Kind::Money),
    col("coupon", "Coupons", Kind::Money),
    col("subsidy", "Subsidies", Kind::Money),
    col("balance", "Balance", Kind::Money),
    col("deferred", "Deferred debit", Kind::Money),
];

static SPLIT: [Column; 8] = [
    MERCHANT[0],
    MERCHANT[1],
    MERCHANT[2],
    col("gross", "Gross", Kind::Money),
    col("coupon", "Coupons", Kind::Money),
    col("subsidy", "Subsidies", Kind::Money),
    col("balance", "Balance", Kind::Money),
    col("deferred", "Deferred debit", Kind::Money),
];

static RECEIPTS: [Column; 13] = [
    MERCHANT[0],
    MERCHANT[1],
    MERCHANT[2],
    col("terminal_id", "Terminal id", Kind::Text),
    col("terminal_name", "Terminal", Kind::Text),
    col("date", "Date", Kind::Text),
    col("hour", "Hour", Kind::Int),
    col("payments", "Payments", Kind::Count),
    col("amount", "Amount", Kind::Money),
    col("coupon", "Coupons", Kind::Money),
    col("subsidy", "Subsidies", Kind::Money),
    col("balance", "Balance", Kind::Money),
    col("deferred", "Deferred debit", Kind::Money),
];

/// Sales and refunds of one merchant (or a subtree) over the period.
#[derive(Clone, Copy, Default)]
struct Sums {
    payments: i64,
    gross: i64,
    refunds: i64,
    split: [i64; 4],
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.payments += o.payments;
        self.gross += o.gross;
        self.refunds += o.refunds;
        for (a, b) in self.split.iter_mut().zip(o.split) {
            *a += b;
        }
    }
}

fn split_of(b: &Breakdown) -> [i64; 4] {
    [b.coupon.0, b.subsidy.0, b.balance.0, b.deferred.0]
}

fn merchant_cells(m: &Merchant) -> [Cell; 3] {
    [
        Cell::Text(m.id.to_string()),
        Cell::Text(m.number.clone()),
        Cell::Text(m.name.clone()),
    ]
}

pub fn build(kind: ReportKind, input: &Input) -> Table {
    let (columns, rows): (&'static [Column], _) = match kind {
        ReportKind::IncomeSummary => (&INCOME, income(input)),
        ReportKind::MerchantClearing => (&CLEARING, per_merchant(kind, input)),
        ReportKind::MerchantSummary => (&SUMMARY, per_merchant(kind, input)),
        ReportKind::MerchantSplit => (&SPLIT, per_merchant(kind, input)),
        ReportKind::MerchantReceipts => (&RECEIPTS, receipts(input)),
        ReportKind::EntitySettlement => (&ENTITY_SETTLEMENT, by_entity(input)),
        // Its lines are whole tenants' (`group_income`), not built from one tenant's facts.
        ReportKind::GroupIncomeSummary => (&GROUP_INCOME, Vec::new()),
        // Built from the cardholders' spending (`analytics.rs`), not from a tenant's facts.
        ReportKind::SpendingByDepartment
        | ReportKind::SpendingByIdentity
        | ReportKind::SpendingByUser => (&[], Vec::new()),
    };
    Table {
        kind,
        columns,
        rows,
    }
}

/// One member tenant's line of a group's income summary: the tenant's own income summary
/// over its own local days `from..=to`, summed, and its number of payments.
pub async fn group_income_line(
    state: &AppState,
    tenant: &Tenant,
    from: Date,
    to: Date,
) -> Result<Vec<Cell>, ApiError> {
    // The tenant in hand decides its days (no second read of it).
    let policy = crate::state::policy_of(tenant);
    let start = state.local_day(&policy, from).0;
    let end = state.local_day(&policy, to).1;
    let facts = state.store.report_facts(tenant.id, start, end).await?;
    let input = Input {
        facts: &facts,
        merchants: &[],
        terminals: &HashMap::new(),
        tz: &policy.tz,
        from,
        to,
        settlement: None,
    };
    let mut sums = [0i64; 9];
    for row in income(&input) {
        // Past the date: the nine money columns, in `INCOME`'s order.
        for (sum, cell) in sums.iter_mut().zip(&row[1..]) {
            if let Cell::Int(v) = cell {
                *sum += v;
            }
        }
    }
    let payments: i64 = facts.sales.iter().map(|s| s.count as i64).sum();
    let mut line = vec![
        Cell::Text(tenant.id.to_string()),
        Cell::Text(tenant.name.clone()),
        Cell::Text(tenant.timezone.clone()),
    ];
    line.extend(sums.map(Cell::Int));
    line.push(Cell::Int(payments));
    Ok(line)
}

/// A table built elsewhere from its columns and rows.
pub(crate) fn table(kind: ReportKind, columns: &'static [Column], rows: Vec<Vec<Cell>>) -> Table {
    Table {
        kind,
        columns,
        rows,
    }
}

/// A tenant group's income summary from its members' lines.
pub fn group_income(lines: Vec<Vec<Cell>>) -> Table {
    table(ReportKind::GroupIncomeSummary, &GROUP_INCOME, lines)
}

fn income(input: &Input) -> Vec<Vec<Cell>> {
    // receivable, refunds, top-ups, subsidies, opened, recovered, written off, withdrawals
    let mut days: BTreeMap<Date, [i64; 8]> =
        input.days().into_iter().map(|d| (d, [0; 8])).collect();
    let mut at = |bucket: i64, i: usize, v: i64| {
        if let Some(day) = days.get_mut(&input.local(bucket).0) {
            day[i] += v;
        }
    };
    for s in &input.facts.sales {
        at(s.bucket, 0, s.amount.0);
    }
    for r in &input.facts.refunds {
        at(r.bucket, 1, r.amount.0);
    }
    for m in &input.facts.movements {
        at(m.bucket, 2, m.top_ups.0);
        at(m.bucket, 3, m.subsidies_issued.0);
        at(m.bucket, 4, m.arrears_opened.0);
        at(m.bucket, 5, m.arrears_recovered.0);
        at(m.bucket, 6, m.arrears_written_off.0);
        at(m.bucket, 7, m.withdrawals.0);
    }
    days.into_iter()
        .map(
            |(date, [receivable, refunds, top_ups, subsidies, opened, recovered, written_off, withdrawals])| {
                // SPEC §7: what a deferred debit the provider declined leaves unreceived on its
                // day, a repayment brings in on the day it is made.
                let received = receivable - opened + recovered;
                vec![
                    Cell::Text(date.to_string()),
                    Cell::Int(receivable),
                    Cell::Int(received),
                    Cell::Int(refunds),
                    Cell::Int(top_ups),
                    Cell::Int(subsidies),
                    Cell::Int(opened),
                    Cell::Int(recovered),
                    Cell::Int(written_off),
                    Cell::Int(withdrawals),
                ]
            },
        )
        .collect()
}

fn own_sums(input: &Input) -> HashMap<MerchantId, Sums> {
    let mut own: HashMap<MerchantId, Sums> = HashMap::new();
    for s in &input.facts.sales {
        let e = own.entry(s.merchant_id).or_default();
        e.payments += s.count as i64;
        e.gross += s.amount.0;
        for (a, b) in e.split.iter_mut().zip(split_of(&s.by_source)) {
            *a += b;
        }
    }
    for r in &input.facts.refunds {
        own.entry(r.merchant_id).or_default().refunds += r.amount.0;
    }
    own
}

fn per_merchant(kind: ReportKind, input: &Input) -> Vec<Vec<Cell>> {
    let own = own_sums(input);
    let order = tree_order(input.merchants);
    let by_id: HashMap<MerchantId, &Merchant> = input.merchants.iter().map(|m| (m.id, m)).collect();
    // Subtree sums: children come after their parents in tree order, so walk it backwards.
    let mut subtree: HashMap<MerchantId, Sums> = HashMap::new();
    for m in order.iter().rev() {
        let mut s = subtree.remove(&m.id).unwrap_or_default();
        s.add(&own.get(&m.id).copied().unwrap_or_default());
        if let Some(p) = m.parent_id.filter(|p| by_id.contains_key(p)) {
            subtree.entry(p).or_default().add(&s);
        }
        subtree.insert(m.id, s);
    }
    order
        .into_iter()
        .map(|m| {
            let o = own.get(&m.id).copied().unwrap_or_default();
            let mut row: Vec<Cell> = merchant_cells(m).into();
            match kind {
                ReportKind::MerchantClearing => row.extend([
                    Cell::Int(o.payments),
                    Cell::Int(o.gross),
                    Cell::Int(o.refunds),
                    Cell::Int(o.gross - o.refunds),
                ]),
                ReportKind::MerchantSummary => {
                    let t = subtree.get(&m.id).copied().unwrap_or_default();
                    let parent = m
                        .parent_id
                        .and_then(|p| by_id.get(&p))
                        .map(|p| p.number.clone())
                        .unwrap_or_default();
                    row.extend([
                        Cell::Text(parent),
                        Cell::Int(m.depth.into()),
                        Cell::Int(o.payments),
                        Cell::Int(o.gross),
                        Cell::Int(o.refunds),
                        Cell::Int(o.gross - o.refunds),
                        Cell::Int(t.payments),
                        Cell::Int(t.gross),
                        Cell::Int(t.refunds),
                        Cell::Int(t.gross - t.refunds),
                    ]);
                }
                _ => {
                    row.push(Cell::Int(o.gross));
                    row.extend(o.split.map(Cell::Int));
                }
            }
            row
        })
        .collect()
}

/// One line for the tenant itself, then one per settlement entity by name: what the
/// merchants sold and refunded on the days they settled to it.
fn by_entity(input: &Input) -> Vec<Vec<Cell>> {
    let Some(settlement) = &input.settlement else {
        return Vec::new();
    };
    let mut sums: HashMap<SettlesTo, Sums> = HashMap::new();
    let to_whom = |merchant: MerchantId, bucket: i64| {
        settlement.schedule.on(merchant, input.local(bucket).0).0
    };
    for s in &input.facts.sales {
        let e = sums.entry(to_whom(s.merchant_id, s.bucket)).or_default();
        e.payments += s.count as i64;
        e.gross += s.amount.0;
        for (a, b) in e.split.iter_mut().zip(split_of(&s.by_source)) {
            *a += b;
        }
    }
    for r in &input.facts.refunds {
        sums.entry(to_whom(r.merchant_id, refund_sale_bucket(r)))
            .or_default()
            .refunds += r.amount.0;
    }
    let own = [
        Cell::Text("own".into()),
        Cell::Text(settlement.tenant_name.to_string()),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
    ];
    let lines = std::iter::once((SettlesTo::Own, own)).chain(settlement.entities.iter().map(|e| {
        (
            SettlesTo::Entity(e.id),
            [
                Cell::Text(e.id.to_string()),
                Cell::Text(e.name.clone()),
                Cell::Text(e.legal_name.clone()),
                Cell::Text(e.provider_sub_merchant.clone()),
                Cell::Text(e.bank_account.clone()),
            ],
        )
    }));
    lines
        .map(|(whom, head)| {
            let o = sums.get(&whom).copied().unwrap_or_default();
            let mut row: Vec<Cell> = head.into();
            row.extend([
                Cell::Int(o.payments),
                Cell::Int(o.gross),
                Cell::Int(o.refunds),
                Cell::Int(o.gross - o.refunds),
            ]);
            row.extend(o.split.map(Cell::Int));
            row
        })
        .collect()
}

fn receipts(input: &Input) -> Vec<Vec<Cell>> {
    let rank: HashMap<MerchantId, usize> = tree_order(input.merchants)
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m.id, i))
        .collect();
    let by_id: HashMap<MerchantId, &Merchant> = input.merchants.iter().map(|m| (m.id, m)).collect();
    // (merchant rank, terminal name, terminal, date, hour) → payments, amount, split
    type Key = (usize, String, TerminalId, Date, i8);
    let mut lines: BTreeMap<Key, (MerchantId, i64, i64, [i64; 4])> = BTreeMap::new();
    for s in &input.facts.sales {
        let (date, hour) = input.local(s.bucket);
        let name = input
            .terminals
            .get(&s.terminal_id)
            .cloned()
            .unwrap_or_default();
        let key = (
            rank.get(&s.merchant_id).copied().unwrap_or(usize::MAX),
            name,
            s.terminal_id,
            date,
            hour,
        );
        let e = lines.entry(key).or_insert((s.merchant_id, 0, 0, [0; 4]));
        e.1 += s.count as i64;
        e.2 += s.amount.0;
        for (a, b) in e.3.iter_mut().zip(split_of(&s.by_source)) {
            *a += b;
        }
    }
    lines
        .into_iter()
        .map(
            |((_, name, terminal, date, hour), (merchant, count, amount, split))| {
                let mut row: Vec<Cell> = match by_id.get(&merchant) {
                    Some(m) => merchant_cells(m).into(),
                    None => vec![
                        Cell::Text(merchant.to_string()),
                        Cell::Text(String::new()),
                        Cell::Text(String::new()),
                    ],
                };
                row.extend([
                    Cell::Text(terminal.to_string()),
                    Cell::Text(name),
                    Cell::Text(date.to_string()),
                    Cell::Int(hour.into()),
                    Cell::Int(count),
                    Cell::Int(amount),
                ]);
                row.extend(split.map(Cell::Int));
                row
            },
        )
        .collect()
}

impl Table {
    fn totals(&self) -> Vec<Option<i64>> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.kind.summed().then(|| {
                    self.rows
                        .iter()
                        .map(|r| match &r[i] {
                            Cell::Int(v) => *v,
                            Cell::Text(_) => 0,
                        })
                        .sum()
                })
            })
            .collect()
    }

    fn to_json(&self, head: Head) -> Report {
        let value = |c: &Cell| match c {
            Cell::Text(s) => serde_json::Value::from(s.as_str()),
            Cell::Int(v) => serde_json::Value::from(*v),
        };
        let rows = self
            .rows
            .iter()
            .map(|r| {
                self.columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| (c.key.to_string(), value(v)))
                    .collect()
            })
            .collect();
        let totals = self
            .columns
            .iter()
            .zip(self.totals())
            .filter_map(|(c, t)| Some((c.key.to_string(), serde_json::Value::from(t?))))
            .collect();
        Report {
            report: head.kind.as_str().to_string(),
            from: head.from.to_string(),
            to: head.to.to_string(),
            time_zone: head.time_zone,
            currency: "CNY",
            unit: "fen",
            generated_at: head.generated_at,
            rows,
            totals,
        }
    }

    /// One header line of column keys, then one line a row; money in fen. No totals line,
    /// so that every line below the header is a row to a program reading the file.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let write = |w: &mut csv::Writer<Vec<u8>>, fields: Vec<String>| {
            // Writing to a Vec cannot fail.
            let _ = w.write_record(fields);
        };
        write(
            &mut w,
            self.columns.iter().map(|c| c.key.to_string()).collect(),
        );
        for r in &self.rows {
            write(
                &mut w,
                r.iter()
                    .map(|c| match c {
                        Cell::Text(s) => csv_text(s),
                        Cell::Int(v) => v.to_string(),
                    })
                    .collect(),
            );
        }
        w.into_inner().unwrap_or_default()
    }

    /// A sheet for people: a title line, the column titles, the rows and a bold totals
    /// line; money in yuan with two decimals.
    fn to_xlsx(&self, head: &Head) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
        use rust_xlsxwriter::{Format, Workbook};
        let mut wb = Workbook::new();
        let bold = Format::new().set_bold();
        let yuan = Format::new().set_num_format("#,##0.00");
        let yuan_bold = Format::new().set_num_format("#,##0.00").set_bold();
        let sheet = wb.add_worksheet();
        sheet.set_name(self.kind.as_str())?;
        sheet.write_string_with_format(
            0,
            0,
            format!(
                "{}, {} to {} ({}); money in CNY",
                self.kind.title(),
                head.from,
                head.to,
                head.time_zone
            ),
            &bold,
        )?;
        const HEADER: u32 = 2;
        for (i, c) in self.columns.iter().enumerate() {
            let i = i as u16;
            sheet.write_string_with_format(HEADER, i, c.title, &bold)?;
            sheet.set_column_width(i, if c.kind == Kind::Text { 20 } else { 14 })?;
        }
        for (r, row) in self.rows.iter().enumerate() {
            let r = HEADER + 1 + r as u32;
            for (i, (c, v)) in self.columns.iter().zip(row).enumerate() {
                let i = i as u16;
                match v {
                    Cell::Text(s) => {
                        sheet.write_string(r, i, s)?;
                    }
                    Cell::Int(v) if c.kind.money() => {
                        sheet.write_number_with_format(r, i, *v as f64 / 100.0, &yuan)?;
                    }
                    Cell::Int(v) => {
                        sheet.write_number(r, i, *v as f64)?;
                    }
                }
            }
        }
        let r = HEADER + 1 + self.rows.len() as u32;
        sheet.write_string_with_format(r, 0, "Total", &bold)?;
        for (i, (c, t)) in self.columns.iter().zip(self.totals()).enumerate() {
            if let Some(t) = t {
                if c.kind.money() {
                    sheet.write_number_with_format(r, i as u16, t as f64 / 100.0, &yuan_bold)?;
                } else {
                    sheet.write_number_with_format(r, i as u16, t as f64, &bold)?;
                }
            }
        }
        wb.save_to_buffer()
    }
}

/// A text field that a spreadsheet program would read as a formula (`=`, `+`, `-`, `@`,
/// tab, carriage return) is prefixed with `'`: a merchant named `=HYPERLINK(…)` must not
/// become a link in the finance office's spreadsheet.
pub(crate) fn csv_text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecard_schema::money::Money;
    use onecard_schema::wallet::{MovementBucket, RefundBucket, SalesBucket};

    fn merchant(n: &str, parent: Option<&Merchant>) -> Merchant {
        Merchant {
            id: MerchantId::new(),
            parent_id: parent.map(|p| p.id),
            name: format!("m{n}"),
            number: n.to_string(),
            single_limit: Money(5000),
            depth: parent.map_or(1, |p| p.depth + 1),
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn bucket(t: &str) -> i64 {
        t.parse::<Timestamp>().unwrap().as_millisecond() / REPORT_BUCKET_MS
    }

    fn sale(m: &Merchant, t: TerminalId, at: &str, amount: i64, split: [i64; 4]) -> SalesBucket {
        SalesBucket {
            merchant_id: m.id,
            terminal_id: t,
            bucket: bucket(at),
            count: 1,
            amount: Money(amount),
            by_source: Breakdown {
                coupon: Money(split[0]),
                subsidy: Money(split[1]),
                balance: Money(split[2]),
                deferred: Money(split[3]),
            },
        }
    }

    fn ints(row: &[Cell]) -> Vec<i64> {
        row.iter()
            .filter_map(|c| match c {
                Cell::Int(v) => Some(*v),
                Cell::Text(_) => None,
            })
            .collect()
    }

    #[test]
    fn report_kinds_parse_from_their_names_only() {
        for k in ReportKind::ALL {
            assert_eq!(k.as_str().parse::<ReportKind>(), Ok(k));
        }
        assert!("income_summary".parse::<ReportKind>().is_err());
    }

    #[test]
    fn merchants_come_in_tree_order_with_siblings_by_name() {
        let b = merchant("B", None);
        let a = merchant("A", None);
        let a2 = merchant("A2", Some(&a));
        let a1 = merchant("A1", Some(&a));
        let a1x = merchant("A1x", Some(&a1));
        let all = vec![b.clone(), a2.clone(), a1x.clone(), a.clone(), a1.clone()];
        let order: Vec<&str> = tree_order(&all).iter().map(|m| m.number.as_str()).collect();
        assert_eq!(order, ["A", "A1", "A1x", "A2", "B"]);
    }

    #[test]
    fn days_and_hours_are_the_tenants_even_at_a_half_hour_offset() {
        let m = merchant("1", None);
        let t = TerminalId::new();
        let facts = ReportFacts {
            // 18:29 and 18:30 UTC are 23:59 on the 1st and 00:00 on the 2nd in Kolkata.
            sales: vec![
                sale(&m, t, "2026-03-01T18:15:00Z", 100, [0, 0, 100, 0]),
                sale(&m, t, "2026-03-01T18:30:00Z", 250, [0, 0, 250, 0]),
            ],
            refunds: vec![RefundBucket {
                merchant_id: m.id,
                bucket: bucket("2026-03-01T18:45:00Z"),
                count: 1,
                amount: Money(50),
                sale_bucket: None,
            }],
            movements: vec![
                MovementBucket {
                    bucket: bucket("2026-03-01T18:00:00Z"),
                    top_ups: Money(1000),
                    arrears_opened: Money(30),
                    ..Default::default()
                },
                MovementBucket {
                    bucket: bucket("2026-03-01T18:30:00Z"),
                    withdrawals: Money(400),
                    ..Default::default()
                },
            ],
        };
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        let merchants = [m.clone()];
        let terminals = HashMap::from([(t, "till".to_string())]);
        let input = Input {
            facts: &facts,
            merchants: &merchants,
            terminals: &terminals,
            tz: &tz,
            from: "2026-03-01".parse().unwrap(),
            to: "2026-03-02".parse().unwrap(),
            settlement: None,
        };
        let income = build(ReportKind::IncomeSummary, &input).rows;
        // receivable, received, refunds, top-ups, subsidies, opened, recovered, written off,
        // withdrawals
        assert_eq!(ints(&income[0]), [100, 70, 0, 1000, 0, 30, 0, 0, 0]);
        assert_eq!(ints(&income[1]), [250, 250, 50, 0, 0, 0, 0, 0, 400]);
        let receipts = build(ReportKind::MerchantReceipts, &input).rows;
        assert_eq!(receipts.len(), 2);
        assert_eq!(receipts[0][5], Cell::Text("2026-03-01".into()));
        assert_eq!(receipts[0][6], Cell::Int(23));
        assert_eq!(receipts[1][5], Cell::Text("2026-03-02".into()));
        assert_eq!(receipts[1][6], Cell::Int(0));
    }

    #[test]
    fn the_summary_rolls_up_the_tree_and_totals_only_what_adds_up() {
        let root = merchant("R", None);
        let site = merchant("S", Some(&root));
        let stall = merchant("T", Some(&site));
        let t = TerminalId::new();
        let facts = ReportFacts {
            sales: vec![
                sale(&root, t, "2026-03-01T02:00:00Z", 100, [0, 0, 100, 0]),
                sale(&stall, t, "2026-03-01T03:00:00Z", 300, [50, 100, 100, 50]),
                sale(&stall, t, "2026-03-01T03:20:00Z", 200, [0, 0, 200, 0]),
            ],
            refunds: vec![RefundBucket {
                merchant_id: stall.id,
                bucket: bucket("2026-03-01T04:00:00Z"),
                count: 1,
                amount: Money(70),
                sale_bucket: None,
            }],
            movements: vec![],
        };
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let merchants = [stall.clone(), root.clone(), site.clone()];
        let terminals = HashMap::new();
        let input = Input {
            facts: &facts,
            merchants: &merchants,
            terminals: &terminals,
            tz: &tz,
            from: "2026-03-01".parse().unwrap(),
            to: "2026-03-01".parse().unwrap(),
            settlement: None,
        };
        let summary = build(ReportKind::MerchantSummary, &input);
        let rows: Vec<Vec<i64>> = summary.rows.iter().map(|r| ints(r)).collect();
        // depth, payments, gross, refunds, net, then the same with sub-merchants
        assert_eq!(rows[0], [1, 1, 100, 0, 100, 3, 600, 70, 530]);
        assert_eq!(rows[1], [2, 0, 0, 0, 0, 2, 500, 70, 430]);
        assert_eq!(rows[2], [3, 2, 500, 70, 430, 2, 500, 70, 430]);
        let totals = summary.totals();
        assert_eq!(totals[5..9], [Some(3), Some(600), Some(70), Some(530)]);
        assert_eq!(
            totals[9..],
            [None, None, None, None],
            "subtree figures repeat"
        );
        let split = build(ReportKind::MerchantSplit, &input);
        assert_eq!(ints(&split.rows[2]), [500, 50, 100, 300, 50]);
        let csv = String::from_utf8(split.to_csv()).unwrap();
        assert_eq!(
            csv.lines().next(),
            Some("merchant_id,merchant_number,merchant_name,gross,coupon,subsidy,balance,deferred")
        );
        assert_eq!(
            csv.lines().count(),
            4,
            "a header and three rows, no totals line"
        );
    }

    #[test]
    fn csv_text_that_a_spreadsheet_would_run_is_quoted_as_text() {
        assert_eq!(csv_text("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_text("-1"), "'-1");
        assert_eq!(csv_text("食堂一楼"), "食堂一楼");
    }
}
