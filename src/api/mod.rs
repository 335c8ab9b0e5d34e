//! HTTP handlers, one module per resource, one short handler per verb (`verb_noun`).
//! Handlers parse, call the store (or an actor), and map the reply.

pub mod admins;
pub mod analytics;
pub mod apps;
pub mod arrears;
pub mod audit;
pub mod booking;
pub mod cards;
pub mod charges;
pub mod checkin;
pub mod collection;
pub mod directory;
pub mod front_end;
pub mod groups;
pub mod health;
pub mod identity;
pub mod import;
pub mod launch;
pub mod ledger;
pub mod maintenance;
pub mod merchants;
pub mod money;
pub mod notices;
pub mod payments;
pub mod people;
pub mod register;
pub mod reports;
pub mod scan;
pub mod settlement;
pub mod sheet;
pub mod shuttle;
pub mod statements;
pub mod stats;
pub mod subsidies;
pub mod tenant_groups;
pub mod tenants;
pub mod topups;
pub mod users;
pub mod visitors;
pub mod wallets;
pub mod withdrawals;

use base64::Engine;
use onecard_actors::domain::validate::Checks;
use onecard_schema::model::PageReq;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::limits::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
use crate::problem::ApiError;

/// `?limit=&cursor=` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    /// The page asked for; `wrap` makes the typed id (`params.page(UserId)`).
    pub fn page<Id>(&self, wrap: fn(Uuid) -> Id) -> Result<PageReq<Id>, ApiError> {
        let limit = self.limit.unwrap_or(LIST_LIMIT_DEFAULT);
        if !(1..=LIST_LIMIT_MAX).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                "range",
                format!("1 to {LIST_LIMIT_MAX}"),
            ));
        }
        let after = self
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .map(wrap);
        Ok(PageReq { limit, after })
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Paged<T> {
    pub fn new(items: Vec<T>, next: Option<Uuid>) -> Self {
        Self {
            items,
            next_cursor: next.map(encode_cursor),
        }
    }
}

/// Cursors are opaque to clients; today they wrap the last id seen.
pub fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

fn decode_cursor(raw: &str) -> Result<Uuid, ApiError> {
    let bad = || ApiError::invalid_field("cursor", "cursor", "not a cursor this API gave out");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("v1:")
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(bad)
}

/// An optional id from the query string: absent is `None`; anything not an id is a 422.
pub fn query_id<T>(
    field: &str,
    raw: &Option<String>,
    wrap: fn(Uuid) -> T,
) -> Result<Option<T>, ApiError> {
    raw.as_deref()
        .map(|r| {
            Uuid::parse_str(r)
                .map(wrap)
                .map_err(|_| ApiError::invalid_field(field, "id", "not an id"))
        })
        .transpose()
}

/// For PATCH bodies: tells "absent" (`None`) from "null" (`Some(None)`).
pub fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Finishes a set of checks as a 422 listing every violation.
pub fn checked(c: Checks) -> Result<(), ApiError> {
    c.into_result().map_err(ApiError::invalid)
}

/// Tries at a fresh code when the one drawn is taken (31⁸ codes: a second try is rare).
const CODE_TRIES: usize = 3;

/// Writes `value` with a fresh short code (an event's, a collection code's), given it by
/// `set`, drawing again while `write` finds the code taken (409 `code_taken`).
pub async fn with_fresh_code<T, F, Fut>(
    mut value: T,
    set: fn(&mut T, String),
    write: F,
) -> Result<T, ApiError>
where
    T: Clone,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), onecard_schema::StoreError>>,
{
    for _ in 0..CODE_TRIES {
        set(&mut value, onecard_actors::domain::checkin::new_code());
        match write(value.clone()).await {
            Err(onecard_schema::StoreError::Conflict {
                code: "code_taken", ..
            }) => continue,
            other => return other.map(|()| value).map_err(ApiError::from),
        }
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "{CODE_TRIES} fresh codes in a row were taken"
    )))
}

/// `text` as a QR code in SVG, at least `side` pixels square.
pub fn qr_svg(text: &str, side: u32) -> Result<String, ApiError> {
    Ok(
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("QR encoding: {e}")))?
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(side, side)
            .quiet_zone(true)
            .build(),
    )
}

/// A file to download: `body` of type `mime`, saved as `filename`.
pub fn attachment(body: Vec<u8>, mime: &str, filename: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type(mime)
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .body(body)
}

/// Every item of a paged store list, read `LIST_LIMIT_MAX` at a time (`list` reads the
/// page asked for).
pub async fn all_pages<T, Id, F, Fut>(list: F) -> Result<Vec<T>, ApiError>
where
    F: FnMut(PageReq<Id>) -> Fut,
    Fut: std::future::Future<
        Output = onecard_schema::StoreResult<onecard_schema::model::Page<T, Id>>,
    >,
{
    pages_up_to(usize::MAX, list).await
}

/// 422 `too_many_rows`: a list or file would hold more than `max` rows.
pub fn too_many_rows(max: usize) -> ApiError {
    ApiError::Invalid {
        code: "too_many_rows",
        detail: format!("more than {max} rows: narrow the window or filter"),
        errors: Vec::new(),
    }
}

/// As `all_pages`, but 422 `too_many_rows` as soon as there are more than `max` items (an
/// export that would not fit in memory, or in a spreadsheet anyone could open).
pub async fn pages_up_to<T, Id, F, Fut>(max: usize, mut list: F) -> Result<Vec<T>, ApiError>
where
    F: FnMut(PageReq<Id>) -> Fut,
    Fut: std::future::Future<
        Output = onecard_schema::StoreResult<onecard_schema::model::Page<T, Id>>,
    >,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = list(PageReq {
            limit: LIST_LIMIT_MAX,
            after,
        })
        .await?;
        all.extend(page.items);
        if all.len() > max {
            return Err(too_many_rows(max));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// Items of a tree in tree order: each root, then its subtree, depth first; siblings by
/// name. An item whose parent is not in the list stands as a root.
pub fn tree_order_by<T, K: Copy + Eq + std::hash::Hash>(
    items: &[T],
    id: impl Fn(&T) -> K,
    parent: impl Fn(&T) -> Option<K>,
    name: impl Fn(&T) -> &str,
) -> Vec<&T> {
    use std::collections::{HashMap, HashSet};
    let ids: HashSet<K> = items.iter().map(&id).collect();
    let mut children: HashMap<Option<K>, Vec<&T>> = HashMap::new();
    for item in items {
        let p = parent(item).filter(|p| ids.contains(p));
        children.entry(p).or_default().push(item);
    }
    for kids in children.values_mut() {
        kids.sort_by(|a, b| name(a).cmp(name(b)));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut stack: Vec<&T> = children
        .get(&None)
        .into_iter()
        .flatten()
        .rev()
        .copied()
        .collect();
    while let Some(item) = stack.pop() {
        out.push(item);
        if let Some(kids) = children.get(&Some(id(item))) {
            stack.extend(kids.iter().rev().copied());
        }
    }
    out
}

/// An SVG image that is not to be cached (a code that may be rotated).
pub fn svg_response(svg: String) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "no-store"))
        .body(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        assert!(decode_cursor("bm9wZQ").is_err());
        assert!(decode_cursor("***").is_err());
    }

    #[test]
    fn limits_outside_one_to_500_are_refused() {
        for bad in [0, 501] {
            let p = ListParams {
                limit: Some(bad),
                cursor: None,
            };
            assert!(p.page(onecard_schema::ids::UserId).is_err());
        }
    }
}
