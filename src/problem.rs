//! The API's one error type, rendered once as `application/problem+json` (RFC 9457)
//! with a stable `code`. A 5xx body says nothing of the cause; the cause goes to the log.

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use onecard_actors::domain::edition::Capability;
use onecard_actors::domain::validate::Violation;
use onecard_schema::model::Edition;
use onecard_schema::StoreError;
use serde::Serialize;
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every problem code the API can answer with, and its status (docs/ERRORS.md).
pub const CATALOGUE: &[(&str, u16)] = &[
    ("malformed_json", 400),
    ("malformed_body", 400),
    ("malformed_multipart", 400),
    ("invalid_idempotency_key", 400),
    ("unauthorized", 401),
    ("bad_signature", 401),
    ("stale_timestamp", 401),
    ("nonce_reused", 401),
    ("forbidden", 403),
    ("not_granted", 403),
    ("binding_not_yours", 403),
    ("out_of_scope", 403),
    ("not_a_member", 403),
    ("not_designated", 403),
    ("outside_geofence", 403),
    ("card_inactive", 403),
    ("not_a_till", 403),
    ("not_on_route", 403),
    ("not_a_technician", 403),
    ("claim_ticket_required", 403),
    ("follow_required", 403),
    ("edition", 403),
    ("not_found", 404),
    ("number_taken", 409),
    ("user_changed", 409),
    ("tag_name_taken", 409),
    ("department_name_taken", 409),
    ("already_admin", 409),
    ("last_super_admin", 409),
    ("group_name_taken", 409),
    ("group_in_use", 409),
    ("app_name_taken", 409),
    ("no_webhook", 409),
    ("code_taken", 409),
    ("event_not_open", 409),
    ("room_name_taken", 409),
    ("room_booked", 409),
    ("slot_taken", 409),
    ("too_many_bookings", 409),
    ("booking_over", 409),
    ("collection_mode", 409),
    ("shuttle_route_name_taken", 409),
    ("bus_name_taken", 409),
    ("device_type_name_taken", 409),
    ("identity_type_name_taken", 409),
    ("identity_in_use", 409),
    ("not_external", 409),
    ("card_not_approved", 409),
    ("not_pending_review", 409),
    ("cover_missing", 409),
    ("card_changed", 409),
    ("notice_state", 409),
    ("notice_changed", 409),
    ("tenant_in_group", 409),
    ("group_head", 409),
    ("group_not_empty", 409),
    ("link_not_allowed", 409),
    ("app_not_launchable", 409),
    ("identity_mismatch", 409),
    ("settlement_entity_name_taken", 409),
    ("settlement_entity_in_use", 409),
    ("tenant_already_linked", 409),
    ("identity_ambiguous", 409),
    ("phone_code_too_soon", 409),
    ("outside_window", 409),
    ("visit_not_approved", 409),
    ("host_busy", 409),
    ("outside_visit", 409),
    ("personal_code_expired", 409),
    ("personal_code_used", 409),
    ("not_a_collection_code", 409),
    ("too_many_rotations", 409),
    ("user_is_admin", 409),
    ("user_has_wallet", 409),
    ("idempotency_conflict", 409),
    ("idempotency_in_progress", 409),
    ("gone", 410),
    ("terminal_retired", 410),
    ("binding_used_or_expired", 410),
    ("claim_ticket_used_or_expired", 410),
    ("link_code_used_or_expired", 410),
    ("launch_ticket_used_or_expired", 410),
    ("too_large", 413),
    ("unsupported_media_type", 415),
    ("invalid", 422),
    ("invalid_file", 422),
    ("template_outdated", 422),
    ("template_column_missing", 422),
    ("too_many_rows", 422),
    ("personal_code_invalid", 422),
    ("unknown_host", 422),
    ("pass_invalid", 422),
    ("cover_invalid", 422),
    ("logo_invalid", 422),
    ("address_taken", 409),
    ("department_in_use", 409),
    ("tag_in_use", 409),
    ("identity_not_eligible", 422),
    ("verification_failed", 422),
    ("audience_empty", 422),
    ("phone_code_wrong", 422),
    ("phone_code_expired", 422),
    ("invalid_rows", 422),
    ("rate_limited", 429),
    ("internal", 500),
    ("unavailable", 503),
    ("busy", 503),
    ("idempotency_key_required", 400),
    ("agreement_required", 403),
    ("frozen", 403),
    ("maker_checker", 403),
    ("merchant_number_taken", 409),
    ("not_pending", 409),
    ("not_refundable", 409),
    ("no_arrears", 409),
    ("in_arrears", 409),
    ("insufficient_balance", 409),
    ("reference_used", 409),
    ("already_reversed", 409),
    ("online_topups_disabled", 403),
    ("too_many_pending_charges", 409),
    ("charge_closed", 409),
    ("not_websocket", 400),
];

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code; the catalogue is in docs/ERRORS.md.
    pub code: String,
    /// Every broken rule, for 422 answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Violation>,
    /// For `edition`: the capability the request needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
    /// For `edition`: the lowest edition that has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lowest_edition: Option<Edition>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// A signed request that does not authenticate (an app's, SPEC §12).
    #[error("{detail}")]
    BadCredentials { code: &'static str, detail: String },
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    #[error("the {} capability is not in this tenant's edition", .0.as_str())]
    Edition(Capability),
    #[error("not found")]
    NotFound,
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{detail}")]
    Gone { code: &'static str, detail: String },
    #[error("{detail}")]
    TooLarge { detail: String },
    #[error("{detail}")]
    UnsupportedMedia { detail: String },
    #[error("{detail}")]
    Invalid {
        code: &'static str,
        detail: String,
        errors: Vec<Violation>,
    },
    #[error("rate limited")]
    RateLimited { retry_after_s: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A wallet's mailbox is full: back off and retry.
    #[error("busy")]
    Busy,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// 401 for a signed request that does not authenticate.
    pub fn credentials(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadCredentials {
            code,
            detail: detail.into(),
        }
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Forbidden {
            code,
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            detail: detail.into(),
        }
    }

    /// A 422 that is a refusal of its own (`code`), not a field's rule: what was sent is
    /// well formed but names nothing acceptable.
    pub fn refused(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A 422 for one field.
    pub fn invalid_field(field: &str, rule: &str, message: impl Into<String>) -> Self {
        Self::invalid_field_as("invalid", field, rule, message)
    }

    /// A 422 for one field, with a problem code of its own (`cover_invalid`…).
    pub fn invalid_field_as(
        code: &'static str,
        field: &str,
        rule: &str,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        ApiError::Invalid {
            code,
            detail: format!("{field}: {message}"),
            errors: vec![Violation {
                field: field.into(),
                rule: rule.into(),
                message,
                row: None,
            }],
        }
    }

    /// A 422 listing every violation.
    pub fn invalid(errors: Vec<Violation>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields break their rules", many.len()),
        };
        ApiError::Invalid {
            code: "invalid",
            detail,
            errors,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::BadCredentials { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Gone { code, .. }
            | ApiError::Invalid { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::Edition(_) => "edition",
            ApiError::NotFound => "not_found",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::UnsupportedMedia { .. } => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Busy => "busy",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "Malformed request",
            ApiError::Unauthorized | ApiError::BadCredentials { .. } => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::Edition(_) => "Not in this edition",
            ApiError::NotFound => "Not found",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone { .. } => "Gone",
            ApiError::TooLarge { .. } => "Payload too large",
            ApiError::UnsupportedMedia { .. } => "Unsupported media type",
            ApiError::Invalid { .. } => "Invalid request",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::Busy => "Busy",
            ApiError::Internal(_) => "Internal error",
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status_code().as_u16();
        let (errors, capability, lowest_edition) = match self {
            ApiError::Invalid { errors, .. } => (errors.clone(), None, None),
            ApiError::Edition(cap) => (Vec::new(), Some(*cap), Some(cap.lowest_edition())),
            _ => (Vec::new(), None, None),
        };
        let detail = match self {
            // Never leak internals: the cause chain is logged, not returned.
            ApiError::Internal(_) => "something went wrong on our side; it has been logged".into(),
            ApiError::Unavailable(_) => {
                "a backing service is unavailable; try again shortly".into()
            }
            ApiError::Edition(cap) => format!(
                "{} needs the {} edition or higher",
                cap.as_str(),
                cap.lowest_edition().as_str()
            ),
            other => other.to_string(),
        };
        Problem {
            kind: format!("/problems/{}", self.code()),
            title: self.title().into(),
            status,
            detail,
            code: self.code().into(),
            errors,
            capability,
            lowest_edition,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::BadCredentials { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::Edition(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMedia { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            ApiError::Unavailable(why) => tracing::warn!(%why, "backing service unavailable"),
            _ => {}
        }
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let ApiError::RateLimited { retry_after_s } = self {
            res.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
        }
        if let ApiError::Busy | ApiError::Unavailable(_) = self {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        if let ApiError::Unauthorized = self {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        res.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

impl From<onecard_actors::wallet::WalletError> for ApiError {
    fn from(e: onecard_actors::wallet::WalletError) -> Self {
        use onecard_actors::wallet::WalletError as W;
        match e {
            W::NotFound => ApiError::NotFound,
            W::Busy => ApiError::Busy,
            W::IdempotencyConflict => ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key was used with another request",
            ),
            W::Refused(r) => match (r.status, r.field) {
                (404, _) => ApiError::NotFound,
                (422, Some(field)) => ApiError::invalid_field(field, "range", r.detail),
                (403, _) => ApiError::Forbidden {
                    code: r.code,
                    detail: r.detail,
                },
                _ => ApiError::Conflict {
                    code: r.code,
                    detail: r.detail,
                },
            },
            W::Unavailable(why) => ApiError::Unavailable(why),
            W::Store(why) => ApiError::internal(anyhow::anyhow!(why)),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Conflict { code, detail, .. } => ApiError::Conflict { code, detail },
            StoreError::Gone => ApiError::Gone {
                code: "gone",
                detail: "already used or expired".into(),
            },
            StoreError::InvalidReference { field, detail } => {
                ApiError::invalid_field(field, "exists", detail)
            }
            StoreError::Invalid {
                field,
                rule,
                detail,
            } => ApiError::invalid_field(field, rule, detail),
            StoreError::Unavailable(why) => ApiError::Unavailable(why),
            e @ StoreError::Backend(_) => ApiError::Internal(e.into()),
        }
    }
}

/// The error answers every operation may give, for the OpenAPI document.
pub struct Problems;

impl utoipa::IntoResponses for Problems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("400", "Malformed request (bad JSON, missing header)"),
            ("401", "Missing or unknown bearer token"),
            (
                "403",
                "Not permitted, or the capability is not in the tenant's edition",
            ),
            ("404", "Unknown id (or another tenant's)"),
            ("409", "Conflict with the current state"),
            ("413", "Body too large"),
            ("415", "Unsupported media type"),
            ("422", "Invalid: every broken rule is listed in errors[]"),
            ("429", "Rate limited; see Retry-After"),
            ("500", "Internal error"),
            ("503", "A backing service is unavailable"),
        ]
        .into_iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause() {
        let e = ApiError::internal(anyhow::anyhow!("password=hunter2 at db:5432"));
        let p = e.problem();
        assert_eq!((p.status, p.code.as_str()), (500, "internal"));
        assert!(!p.detail.contains("hunter2"));
    }

    /// Walks the source for every code a problem can carry and checks that each is in
    /// `CATALOGUE` with the status it is answered with, and documented in docs/ERRORS.md.
    #[test]
    fn every_problem_code_in_the_source_is_catalogued_and_documented() {
        let docs = include_str!("../docs/ERRORS.md");
        for (code, status) in CATALOGUE {
            assert!(
                docs.contains(&format!("| `{code}` | {status} |")),
                "{code} is not documented"
            );
        }
        let mut found = std::collections::BTreeSet::new();
        let roots = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/src"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/schema/src"),
        ];
        let mut files = Vec::new();
        for root in roots {
            let mut stack = vec![std::path::PathBuf::from(root)];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        files.push(path);
                    }
                }
            }
        }
        let openers = [
            "credentials(",
            "conflict(",
            "bad_request(",
            "forbidden(",
            "code:",
            "refusal(",
        ];
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for opener in openers {
                for (i, _) in text.match_indices(opener) {
                    let rest = text[i + opener.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let code: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if rest[code.len()..].starts_with('"') && !code.is_empty() {
                        found.insert(code);
                    }
                }
            }
        }
        assert!(found.len() >= 15, "the walk found too few codes: {found:?}");
        for code in &found {
            assert!(
                CATALOGUE.iter().any(|(c, _)| c == code),
                "{code} is used in the source but not in CATALOGUE"
            );
        }
        // Variants without a literal code answer with their fixed code and status.
        let fixed = [
            ApiError::Unauthorized,
            ApiError::NotFound,
            ApiError::Edition(Capability::Analytics),
            ApiError::TooLarge {
                detail: String::new(),
            },
            ApiError::UnsupportedMedia {
                detail: String::new(),
            },
            ApiError::RateLimited { retry_after_s: 1 },
            ApiError::Unavailable(String::new()),
            ApiError::Busy,
            ApiError::internal(anyhow::anyhow!("x")),
            ApiError::invalid(vec![]),
        ];
        for e in fixed {
            let p = e.problem();
            assert!(
                CATALOGUE.contains(&(p.code.as_str(), p.status)),
                "{} {} not catalogued",
                p.code,
                p.status
            );
        }
    }

    #[test]
    fn edition_problem_names_capability_and_lowest_edition() {
        let p = ApiError::Edition(Capability::OpenApi).problem();
        assert_eq!(p.status, 403);
        assert_eq!(p.capability, Some(Capability::OpenApi));
        assert_eq!(p.lowest_edition, Some(Edition::Advanced));
        assert_eq!(p.kind, "/problems/edition");
    }
}
