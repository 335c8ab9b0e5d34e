//! Spreadsheet import of users: download the template, upload it filled in. A valid
//! upload is applied atomically; anything else is refused whole with every reason.

use std::collections::HashMap;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use onecard_schema::model::ImportOutcome;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::directory::Tree;
use crate::auth::{Admin, Auth, SuperAdmin};
use crate::extract::{read_file, Query};
use crate::import::{self, XLSX_MIME};
use crate::limits::IMPORT_BYTES_MAX;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateQuery {
    /// `csv` (default) or `xlsx`.
    #[param(inline)]
    pub format: Option<TemplateFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TemplateFormat {
    Csv,
    Xlsx,
}

/// The upload: one file field.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImportUpload {
    /// The filled-in template, CSV (UTF-8) or XLSX.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The current import template.
#[utoipa::path(tag = "users", params(TemplateQuery), security(("bearer" = [])), responses(
    (status = 200, description = "The template", content(
        (String = "text/csv"),
        (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    )),
    Problems))]
#[get("/users/import/template")]
pub async fn get_import_template(
    _caller: Auth<Admin>,
    Query(q): Query<TemplateQuery>,
) -> Result<HttpResponse, ApiError> {
    let (body, mime, ext) = match q.format.unwrap_or(TemplateFormat::Csv) {
        TemplateFormat::Csv => (import::template_csv(), "text/csv; charset=utf-8", "csv"),
        TemplateFormat::Xlsx => (
            import::template_xlsx().map_err(ApiError::internal)?,
            XLSX_MIME,
            "xlsx",
        ),
    };
    Ok(super::attachment(
        body,
        mime,
        &format!("onecard-users-{}.{ext}", import::TEMPLATE_VERSION),
    ))
}

/// Import users from a filled-in template (multipart field `file`; or the file itself as
/// the body with Content-Type `text/csv` or the XLSX type).
#[utoipa::path(tag = "users", security(("bearer" = [])),
    request_body(content = ImportUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = ImportOutcome), Problems))]
#[post("/users/import")]
pub async fn import_users(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let bytes = read_upload(&req, payload).await?;
    let upload_bytes = bytes.len();
    let rows = web::block(move || import::read_rows(&bytes).and_then(import::parse_template))
        .await
        .map_err(ApiError::internal)??;
    let (departments, tags, identities) = tokio::try_join!(
        state.store.list_departments(tenant),
        state.store.list_tags(tenant),
        state.store.list_identity_types(tenant)
    )?;
    let identities: Vec<String> = identities.into_iter().map(|t| t.name).collect();
    let by_path: HashMap<String, _> = Tree::build(departments)
        .by_path()
        .into_iter()
        .map(|(p, id)| (p.to_string(), id))
        .collect();
    let by_name: HashMap<String, _> = tags.into_iter().map(|t| (t.name, t.id)).collect();
    let keys = state.keys.clone();
    let users =
        web::block(move || import::build_users(&rows, &by_path, &by_name, &identities, &keys))
            .await
            .map_err(ApiError::internal)??;
    let audit = caller.audit(
        &state,
        "user.import",
        "users",
        users.len(),
        serde_json::json!({
            "rows": users.len(), "bytes": upload_bytes,
        }),
    );
    let outcome = state
        .store
        .import_users(tenant, users, state.clock.now(), audit)
        .await?;
    tracing::info!(
        created = outcome.created,
        updated = outcome.updated,
        "users imported"
    );
    Ok(HttpResponse::Created().json(outcome))
}

async fn read_upload(req: &HttpRequest, payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    read_file(
        req,
        payload,
        IMPORT_BYTES_MAX,
        &["text/csv", XLSX_MIME],
        "the spreadsheet",
        "text/csv or XLSX",
    )
    .await
}
