//! Enhanced analytics (SPEC §1, advanced edition and up): what cardholders spend, by
//! department, by identity or person by person — students against teachers at the
//! canteens, a class's spending, and the students who eat on the card often but spend
//! little, whom a school may want to help discreetly with a subsidy rule
//! (docs/OPERATIONS.md, "Spending analysis").

use std::collections::{BTreeMap, HashMap, HashSet};

use actix_web::{get, web, HttpResponse};
use onecard_schema::ids::{DepartmentId, UserId};
use onecard_schema::model::{Department, User, UserFilter};
use onecard_schema::wallet::UserSpending;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::all_pages;
use super::reports::{
    col, period, respond, table, Cell, Column, Head, Kind, Report, ReportFormat, ReportKind,
};
use crate::auth::{Auth, SpendingAnalyst};
use crate::extract::Query;
use crate::problem::{ApiError, Problems};
use crate::scope::DirectoryScope;
use crate::state::AppState;

/// The longest period one analysis covers: a term.
pub const SPENDING_DAYS_MAX: i32 = 92;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpendingBy {
    #[default]
    Department,
    Identity,
    User,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SpendingQuery {
    /// First tenant-local day, `YYYY-MM-DD`; default today.
    pub from: Option<String>,
    /// Last tenant-local day (inclusive); default `from`. At most 92 days.
    pub to: Option<String>,
    /// `department` (default), `identity` or `user`.
    #[param(inline)]
    pub by: Option<SpendingBy>,
    /// `by=user`: only people with at least this many payments in the period (default 1).
    pub min_payments: Option<u32>,
    /// `by=user`: only people whose net spending in the period is at most this many fen.
    pub max_net: Option<i64>,
    /// `json` (default), `csv` or `xlsx`.
    #[param(inline)]
    pub format: Option<ReportFormat>,
}

static BY_GROUP: [Column; 9] = [
    col("key", "Id", Kind::Text),
    col("name", "Name", Kind::Text),
    col("members", "Members", Kind::CountNoTotal),
    col("payers", "Payers", Kind::CountNoTotal),
    col("payments", "Payments", Kind::CountNoTotal),
    col("gross", "Gross", Kind::MoneyNoTotal),
    col("refunded", "Refunded", Kind::MoneyNoTotal),
    col("net", "Net", Kind::MoneyNoTotal),
    col("net_per_payer", "Net per payer", Kind::MoneyNoTotal),
];

/// The same, by identity: every person has one, so the lines add up.
static BY_IDENTITY: [Column; 9] = [
    BY_GROUP[0],
    BY_GROUP[1],
    col("members", "Members", Kind::Count),
    col("payers", "Payers", Kind::Count),
    col("payments", "Payments", Kind::Count),
    col("gross", "Gross", Kind::Money),
    col("refunded", "Refunded", Kind::Money),
    col("net", "Net", Kind::Money),
    BY_GROUP[8],
];

static BY_USER: [Column; 10] = [
    col("user_id", "User id", Kind::Text),
    col("number", "Number", Kind::Text),
    col("name", "Name", Kind::Text),
    col("identity", "Identity", Kind::Text),
    col("departments", "Departments", Kind::Text),
    col("payments", "Payments", Kind::Count),
    col("gross", "Gross", Kind::Money),
    col("refunded", "Refunded", Kind::Money),
    col("net", "Net", Kind::Money),
    col("net_per_payment", "Net per payment", Kind::MoneyNoTotal),
];

/// What a group of people (a department, an identity) spent.
#[derive(Default)]
struct Group {
    members: i64,
    payers: i64,
    payments: i64,
    gross: i64,
    refunded: i64,
}

impl Group {
    fn add(&mut self, s: Option<&UserSpending>) {
        self.members += 1;
        if let Some(s) = s {
            self.payers += 1;
            self.payments += s.payments as i64;
            self.gross += s.amount.0;
            self.refunded += s.refunded.0;
        }
    }

    fn line(&self, key: String, name: String) -> Vec<Cell> {
        let net = self.gross - self.refunded;
        vec![
            Cell::Text(key),
            Cell::Text(name),
            Cell::Int(self.members),
            Cell::Int(self.payers),
            Cell::Int(self.payments),
            Cell::Int(self.gross),
            Cell::Int(self.refunded),
            Cell::Int(net),
            Cell::Int(if self.payers > 0 {
                net / self.payers
            } else {
                0
            }),
        ]
    }
}

/// What the tenant's cardholders spent over a period of tenant-local days, by department
/// (everyone in it or below it; a person is counted in each of their departments and
/// those above, so the lines do not add up), by identity (a line per identity and one for none) or person by person (the
/// lowest net spending first; `min_payments` and `max_net` find those who eat on the card
/// often but spend little). Gross is what their payments not declined came to; refunded,
/// what has been refunded of them up to now. Sub-admins see the people of their
/// departments and tags only. Needs enhanced analytics (advanced edition and up).
#[utoipa::path(tag = "analytics", params(SpendingQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The analysis", content(
            (Report = "application/json"),
            (String = "text/csv"),
            (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        )),
        Problems))]
#[get("/analytics/spending")]
pub async fn get_spending(
    state: web::Data<AppState>,
    caller: Auth<SpendingAnalyst>,
    Query(q): Query<SpendingQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let by = q.by.unwrap_or_default();
    if by != SpendingBy::User && (q.min_payments.is_some() || q.max_net.is_some()) {
        return Err(ApiError::invalid_field(
            if q.min_payments.is_some() {
                "min_payments"
            } else {
                "max_net"
            },
            "by_user_only",
            "filters people; only with by=user",
        ));
    }
    let policy = state.policy(tenant).await?;
    let now = state.clock.now();
    let (from, to) = period(
        q.from.as_deref(),
        q.to.as_deref(),
        now.to_zoned(policy.tz.clone()).date(),
        SPENDING_DAYS_MAX,
    )?;
    let start = state.local_day(&policy, from).0;
    let end = state.local_day(&policy, to).1;
    let departments = state.store.list_departments(tenant).await?;
    let scope = DirectoryScope::over(&caller, &departments);
    let users = all_pages(|page| {
        state.store.list_users(
            tenant,
            UserFilter {
                within: scope.user_filter(),
                ..UserFilter::default()
            },
            page,
        )
    })
    .await?;
    let spending: HashMap<UserId, UserSpending> = state
        .store
        .spending_by_user(tenant, start, end)
        .await?
        .into_iter()
        .map(|s| (s.user_id, s))
        .collect();
    let (kind, columns, rows): (_, &'static [Column], _) = match by {
        SpendingBy::Department => (
            ReportKind::SpendingByDepartment,
            &BY_GROUP,
            by_department(&users, &departments, &scope, &spending),
        ),
        SpendingBy::Identity => (
            ReportKind::SpendingByIdentity,
            &BY_IDENTITY,
            by_identity(&users, &spending),
        ),
        SpendingBy::User => (
            ReportKind::SpendingByUser,
            &BY_USER,
            by_user(
                &users,
                &departments,
                &spending,
                q.min_payments.unwrap_or(1),
                q.max_net,
            ),
        ),
    };
    let head = Head {
        kind,
        from,
        to,
        time_zone: policy.tz.iana_name().unwrap_or("UTC").to_string(),
        generated_at: now,
    };
    respond(table(kind, columns, rows), head, q.format).await
}

/// A line per department the caller sees, in tree order, with everyone in it or below
/// it, and one for people in none (for a caller who sees the whole tenant).
fn by_department(
    users: &[User],
    departments: &[Department],
    scope: &DirectoryScope,
    spending: &HashMap<UserId, UserSpending>,
) -> Vec<Vec<Cell>> {
    let parent: HashMap<DepartmentId, Option<DepartmentId>> =
        departments.iter().map(|d| (d.id, d.parent_id)).collect();
    let mut groups: HashMap<Option<DepartmentId>, Group> = HashMap::new();
    for u in users {
        let s = spending.get(&u.id);
        if u.department_ids.is_empty() {
            groups.entry(None).or_default().add(s);
        }
        // Each of the person's departments and everything above it, once.
        let mut lines: HashSet<DepartmentId> = HashSet::new();
        for d in &u.department_ids {
            let mut at = Some(*d);
            while let Some(id) = at.filter(|id| lines.insert(*id)) {
                at = parent.get(&id).copied().flatten();
            }
        }
        for d in lines {
            groups.entry(Some(d)).or_default().add(s);
        }
    }
    let mut lines: Vec<Vec<Cell>> =
        super::tree_order_by(departments, |d| d.id, |d| d.parent_id, |d| &d.name)
            .into_iter()
            .filter(|d| scope.sees_department(d.id))
            .map(|d| {
                groups
                    .get(&Some(d.id))
                    .unwrap_or(&Group::default())
                    .line(d.id.to_string(), d.name.clone())
            })
            .collect();
    if !scope.is_limited() {
        if let Some(none) = groups.get(&None) {
            lines.push(none.line(String::new(), "(no department)".into()));
        }
    }
    lines
}

/// A line per identity, by name, then one for people with none.
fn by_identity(users: &[User], spending: &HashMap<UserId, UserSpending>) -> Vec<Vec<Cell>> {
    let mut groups: BTreeMap<Option<&str>, Group> = BTreeMap::new();
    for u in users {
        groups
            .entry(u.identity.as_deref())
            .or_default()
            .add(spending.get(&u.id));
    }
    // `None` sorts first in a BTreeMap; it goes last.
    let none = groups.remove(&None);
    groups
        .into_iter()
        .map(|(identity, g)| {
            let name = identity.unwrap_or_default().to_string();
            g.line(name.clone(), name)
        })
        .chain(none.map(|g| g.line(String::new(), "(no identity)".into())))
        .collect()
}

/// A line per person with at least `min_payments` payments (and at most `max_net` net),
/// lowest net first, then by number.
fn by_user(
    users: &[User],
    departments: &[Department],
    spending: &HashMap<UserId, UserSpending>,
    min_payments: u32,
    max_net: Option<i64>,
) -> Vec<Vec<Cell>> {
    let names: HashMap<DepartmentId, &str> = departments
        .iter()
        .map(|d| (d.id, d.name.as_str()))
        .collect();
    let mut lines: Vec<(i64, &User, i64, i64, i64)> = users
        .iter()
        .filter_map(|u| {
            let (payments, gross, refunded) = spending
                .get(&u.id)
                .map_or((0, 0, 0), |s| (s.payments as i64, s.amount.0, s.refunded.0));
            let net = gross - refunded;
            (payments >= i64::from(min_payments) && max_net.is_none_or(|m| net <= m))
                .then_some((net, u, payments, gross, refunded))
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.number.cmp(&b.1.number)));
    lines
        .into_iter()
        .map(|(net, u, payments, gross, refunded)| {
            let depts: Vec<&str> = u
                .department_ids
                .iter()
                .filter_map(|d| names.get(d).copied())
                .collect();
            vec![
                Cell::Text(u.id.to_string()),
                Cell::Text(u.number.clone()),
                Cell::Text(u.name.clone()),
                Cell::Text(u.identity.clone().unwrap_or_default()),
                Cell::Text(depts.join("; ")),
                Cell::Int(payments),
                Cell::Int(gross),
                Cell::Int(refunded),
                Cell::Int(net),
                Cell::Int(if payments > 0 { net / payments } else { 0 }),
            ]
        })
        .collect()
}
