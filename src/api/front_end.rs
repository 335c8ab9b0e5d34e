//! The tenant's own front end (SPEC §1 "dedicated mini-program", the professional edition
//! and up). A school gives its card its own name, colour and logo; the platform operator,
//! who points the school's name (`https://card.example.edu`) at this server and gives it a
//! certificate, then gives the school that address (so no link carries an address before
//! it works, and nobody claims another's name). Every link the server makes for the
//! tenant then carries that address (`AppState::public_url_of`), and the card pages opened
//! there ask `GET /brand`, which answers by the request's host, for the look to wear; a
//! mini-program of the school's own asks it with `?tenant=`.
//! Without the capability (an edition moved down) the settings stay but nothing uses
//! them: links carry the platform's address again and the pages its look.

use actix_web::http::header;
use actix_web::{delete, get, put, web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::edition::{has_capability, Capability};
use onecard_actors::domain::validate::Checks;
use onecard_schema::front_end_store::{FrontEnd, FrontEndChange, Logo};
use onecard_schema::ids::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::checked;
use crate::auth::{Admin, Auth, Root, SuperAdmin};
use crate::extract::{path_id, read_file, Json, Query};
use crate::limits::{
    FRONT_END_TITLE_CHARS_MAX, LOGO_BYTES_MAX, LOGO_PX_MAX, LOGO_PX_MIN, PUBLIC_URL_CHARS_MAX,
};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// The name the platform's own pages show.
const PLATFORM_NAME: &str = "OneCard";

/// What the tenant's card pages are to look like.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFrontEnd {
    /// The name the pages show (absent: the organisation's name); 1–20 characters.
    #[schema(example = "Riverside Card", max_length = 20)]
    pub title: Option<String>,
    /// `#rrggbb`: the pages' buttons and highlights (absent: the platform's blue).
    #[schema(example = "#8a1538", pattern = "^#[0-9a-fA-F]{6}$")]
    pub accent_color: Option<String>,
}

/// Where a tenant's card pages are served (the platform operator's to set).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAddress {
    /// `https://` and a host (a port if not 443), no path; null: the platform's address.
    /// One organisation's per address.
    #[schema(example = "https://card.example.edu", max_length = 200)]
    pub public_url: Option<String>,
}

/// The tenant's front end as set.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrontEndView {
    /// Whether the edition has `dedicated_mini_program`. Without it the settings are kept
    /// but unused: links carry the platform's address and pages its look.
    pub in_force: bool,
    pub public_url: Option<String>,
    pub title: Option<String>,
    pub accent_color: Option<String>,
    /// `/api/v1/logos/<sha256>`, on whichever address the page is at.
    pub logo_url: Option<String>,
    pub updated_at: Option<Timestamp>,
}

/// The look of the card pages: an organisation's, or the platform's.
#[derive(Debug, Serialize, ToSchema)]
pub struct Brand {
    /// The organisation whose look this is; null for the platform's.
    pub tenant_id: Option<TenantId>,
    /// The name to show: the front end's title, else the organisation's name.
    pub name: String,
    /// `#rrggbb`, when the organisation chose one.
    pub accent_color: Option<String>,
    pub logo_url: Option<String>,
}

/// A logo: the file, in a multipart field named `file` or as the whole body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LogoUpload {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

fn logo_url(sha256: &[u8; 32]) -> String {
    format!("/api/v1/logos/{}", hex::encode(sha256))
}

fn view(f: FrontEnd, in_force: bool) -> FrontEndView {
    FrontEndView {
        in_force,
        logo_url: f.logo_sha256.as_ref().map(logo_url),
        public_url: f.public_url,
        title: f.title,
        accent_color: f.accent_color,
        updated_at: f.updated_at,
    }
}

/// A request's host as a front end's is kept: lower case, with its port unless default.
/// `None` for what no address can be.
fn host_of(req: &HttpRequest) -> Option<String> {
    let host = req.connection_info().host().to_ascii_lowercase();
    let fits = !host.is_empty()
        && host.len() <= PUBLIC_URL_CHARS_MAX
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    fits.then_some(host)
}

/// Checks an address and returns it in its kept form with its host: `https://host[:port]`.
fn parse_public_url(c: &mut Checks, platform: &str, url: &str) -> Option<(String, String)> {
    if !c.text("public_url", url, 1, PUBLIC_URL_CHARS_MAX) {
        return None;
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        c.fail(
            "public_url",
            "url",
            "not an address such as https://card.example.edu",
        );
        return None;
    };
    if parsed.scheme() != "https" {
        c.fail(
            "public_url",
            "https",
            "the card pages carry tokens: their address must be https://",
        );
        return None;
    }
    let bare = parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.path() == "/"
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    let Some(host) = parsed.host_str().filter(|_| bare) else {
        c.fail(
            "public_url",
            "origin_only",
            "only a scheme, a host and a port: no path, query, fragment or user",
        );
        return None;
    };
    let host = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let platform_host = reqwest::Url::parse(platform).ok().and_then(|p| {
        p.host_str().map(|h| {
            format!(
                "{h}{}",
                p.port().map(|n| format!(":{n}")).unwrap_or_default()
            )
        })
    });
    if platform_host.as_deref() == Some(host.as_str()) {
        c.fail(
            "public_url",
            "platform_address",
            "this is the platform's own address, which every organisation shares",
        );
        return None;
    }
    Some((format!("https://{host}"), host))
}

fn check_accent(c: &mut Checks, color: &str) -> Option<String> {
    let ok = color.len() == 7
        && color.starts_with('#')
        && color[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        c.fail(
            "accent_color",
            "hex_color",
            "a colour as #rrggbb, such as #8a1538",
        );
        return None;
    }
    Some(color.to_ascii_lowercase())
}

fn logo_invalid(rule: &str, message: String) -> ApiError {
    ApiError::invalid_field_as("logo_invalid", "file", rule, message)
}

/// The logo's content type, when its bytes are a square JPEG or PNG of 64 to 1024 px.
fn check_logo(bytes: &[u8]) -> Result<&'static str, ApiError> {
    let content_type = match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
        Ok(imagesize::ImageType::Png) => "image/png",
        _ => {
            return Err(logo_invalid(
                "format",
                "a logo is a JPEG or PNG image (judged by its content, not its name)".into(),
            ))
        }
    };
    let size = imagesize::blob_size(bytes).map_err(|_| {
        logo_invalid(
            "format",
            "this image is damaged: its size cannot be read".into(),
        )
    })?;
    if size.width != size.height {
        return Err(logo_invalid(
            "square",
            format!(
                "a logo is square; this one is {}×{} px",
                size.width, size.height
            ),
        ));
    }
    if !(LOGO_PX_MIN..=LOGO_PX_MAX).contains(&size.width) {
        return Err(logo_invalid(
            "dimensions",
            format!(
                "a logo is {LOGO_PX_MIN} to {LOGO_PX_MAX} px a side; this one is {} px",
                size.width
            ),
        ));
    }
    Ok(content_type)
}

/// The organisation's front end: its address, name, colour and logo, and whether its
/// edition puts them in force.
#[utoipa::path(tag = "tenants", security(("bearer" = [])),
    responses((status = 200, body = FrontEndView), Problems))]
#[get("/tenant/front-end")]
pub async fn get_front_end(
    state: web::Data<AppState>,
    caller: Auth<Admin>,
) -> Result<web::Json<FrontEndView>, ApiError> {
    let tenant = state.tenant(caller.tenant()?).await?;
    let f = state.store.get_front_end(tenant.id).await?;
    let in_force = has_capability(tenant.edition, Capability::DedicatedMiniProgram);
    Ok(web::Json(view(f, in_force)))
}

/// Set the name and colour the card pages show (super admin; the professional edition
/// and up). Fields absent or null go back to the platform's; the address and the logo
/// stay.
#[utoipa::path(tag = "tenants", request_body = PutFrontEnd, security(("bearer" = [])),
    responses((status = 200, body = FrontEndView), Problems))]
#[put("/tenant/front-end")]
pub async fn put_front_end(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    Json(body): Json<PutFrontEnd>,
) -> Result<web::Json<FrontEndView>, ApiError> {
    caller.require(Capability::DedicatedMiniProgram)?;
    let tenant = caller.tenant()?;
    let mut c = Checks::new();
    if let Some(title) = &body.title {
        c.text("title", title, 1, FRONT_END_TITLE_CHARS_MAX);
    }
    let accent_color = body
        .accent_color
        .as_deref()
        .and_then(|a| check_accent(&mut c, a));
    checked(c)?;
    let audit = caller.audit(
        &state,
        "tenant.front_end",
        "tenant",
        tenant,
        serde_json::json!({ "title": body.title, "accent_color": accent_color }),
    );
    let change = FrontEndChange::Look {
        title: body.title,
        accent_color,
    };
    state
        .store
        .set_front_end(tenant, change, state.clock.now(), audit)
        .await?;
    state.forget_front_end(tenant);
    let f = state.store.get_front_end(tenant).await?;
    Ok(web::Json(view(f, true)))
}

/// Serve a tenant's card pages at its own address, or (null) at the platform's again
/// (platform operator). Set it once the name points at the server and its certificate
/// is in place: from then on every link made for the tenant carries it. The tenant's
/// edition needs `dedicated_mini_program` (403 `edition`); 409 `address_taken` when
/// another organisation has it.
#[utoipa::path(tag = "tenants", params(("id" = String, Path)), request_body = PutAddress,
    security(("bearer" = [])), responses((status = 200, body = FrontEndView), Problems))]
#[put("/tenants/{id}/front-end/address")]
pub async fn put_address(
    state: web::Data<AppState>,
    caller: Auth<Root>,
    id: web::Path<String>,
    Json(body): Json<PutAddress>,
) -> Result<web::Json<FrontEndView>, ApiError> {
    let tenant = state.tenant(path_id(&id)?).await?;
    if !has_capability(tenant.edition, Capability::DedicatedMiniProgram) {
        return Err(ApiError::Edition(Capability::DedicatedMiniProgram));
    }
    let mut c = Checks::new();
    let address = body
        .public_url
        .as_deref()
        .and_then(|u| parse_public_url(&mut c, &state.public_url, u.trim()));
    checked(c)?;
    let (public_url, host) = address.unzip();
    let mut audit = caller.audit(
        &state,
        "tenant.front_end_address",
        "tenant",
        tenant.id,
        serde_json::json!({ "public_url": public_url }),
    );
    audit.tenant_id = Some(tenant.id);
    let change = FrontEndChange::Address { public_url, host };
    state
        .store
        .set_front_end(tenant.id, change, state.clock.now(), audit)
        .await?;
    state.forget_front_end(tenant.id);
    let f = state.store.get_front_end(tenant.id).await?;
    Ok(web::Json(view(f, true)))
}

/// Give the front end its logo: a square JPEG or PNG of 64 to 1024 px, at most 256 KiB
/// (413 otherwise), judged from the bytes (422 `logo_invalid`, saying which rule).
#[utoipa::path(tag = "tenants",
    request_body(content = LogoUpload, content_type = "multipart/form-data"),
    security(("bearer" = [])), responses((status = 200, body = FrontEndView), Problems))]
#[put("/tenant/front-end/logo")]
pub async fn put_logo(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<FrontEndView>, ApiError> {
    caller.require(Capability::DedicatedMiniProgram)?;
    let tenant = caller.tenant()?;
    let bytes = read_file(
        &req,
        payload,
        LOGO_BYTES_MAX,
        &["image/", "application/octet-stream"],
        "the logo",
        "image/jpeg or image/png",
    )
    .await?;
    let content_type = check_logo(&bytes)?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let audit = caller.audit(
        &state,
        "tenant.logo",
        "tenant",
        tenant,
        serde_json::json!({ "bytes": bytes.len(), "sha256": hex::encode(sha256) }),
    );
    let logo = Logo {
        bytes,
        content_type: content_type.into(),
        sha256,
    };
    let now = state.clock.now();
    state
        .store
        .set_front_end_logo(tenant, Some(logo), now, audit)
        .await?;
    state.forget_front_end(tenant);
    let f = state.store.get_front_end(tenant).await?;
    Ok(web::Json(view(f, true)))
}

/// Take the logo away (super admin; any edition, so one that moved down can too).
#[utoipa::path(tag = "tenants", security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/tenant/front-end/logo")]
pub async fn delete_logo(
    state: web::Data<AppState>,
    caller: Auth<SuperAdmin>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let audit = caller.audit(
        &state,
        "tenant.logo",
        "tenant",
        tenant,
        serde_json::json!({ "removed": true }),
    );
    let now = state.clock.now();
    state
        .store
        .set_front_end_logo(tenant, None, now, audit)
        .await?;
    state.forget_front_end(tenant);
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BrandQuery {
    /// The organisation to answer for, wherever the request came to: what a mini-program
    /// of the organisation's own asks (it has no address of its own). Absent: by host.
    #[param(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
}

/// The look of the card pages (no token): the organisation's name, colour and logo at
/// its own address (or for `tenant`), with the capability; the platform's otherwise. 404
/// for a `tenant` that does not exist.
#[utoipa::path(tag = "tenants", params(BrandQuery),
    responses((status = 200, body = Brand), Problems))]
#[get("/brand")]
pub async fn get_brand(
    state: web::Data<AppState>,
    req: HttpRequest,
    Query(q): Query<BrandQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = match (q.tenant, host_of(&req)) {
        (Some(id), _) => Some(state.tenant(id).await?),
        (None, Some(host)) => match state.tenant_at_host(host).await? {
            Some(id) => Some(state.tenant(id).await?),
            None => None,
        },
        (None, None) => None,
    };
    let in_force = match &tenant {
        Some(t) => state.front_end_in_force(t).await?,
        None => None,
    };
    let brand = match (tenant, in_force) {
        (Some(t), Some(f)) => Brand {
            tenant_id: Some(t.id),
            name: f.title.clone().unwrap_or(t.name),
            accent_color: f.accent_color.clone(),
            logo_url: f.logo_sha256.as_ref().map(logo_url),
        },
        _ => Brand {
            tenant_id: None,
            name: PLATFORM_NAME.into(),
            accent_color: None,
            logo_url: None,
        },
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, "Host"))
        .json(brand))
}

/// A front end's logo by its SHA-256 (no token: the pages show it). It never changes, so
/// it may be cached for good.
#[utoipa::path(tag = "tenants", params(("sha256" = String, Path)),
    responses((status = 200, content_type = "image/png"), Problems))]
#[get("/logos/{sha256}")]
pub async fn get_logo(
    state: web::Data<AppState>,
    sha256: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(sha256.as_str(), &mut digest).map_err(|_| ApiError::NotFound)?;
    let logo = state.store.get_logo(digest).await?;
    Ok(HttpResponse::Ok()
        .content_type(logo.content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(logo.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<(String, String), Vec<String>> {
        let mut c = Checks::new();
        let out = parse_public_url(&mut c, "https://onecard.example.com", url);
        match out {
            Some(v) if c.is_ok() => Ok(v),
            _ => Err(c.violations.into_iter().map(|v| v.rule).collect()),
        }
    }

    #[test]
    fn an_address_is_kept_as_scheme_and_host() {
        let ok = |u: &str, kept: &str, host: &str| {
            assert_eq!(parse(u), Ok((kept.to_string(), host.to_string())), "{u}");
        };
        ok(
            "https://Card.Example.EDU",
            "https://card.example.edu",
            "card.example.edu",
        );
        ok(
            "https://card.example.edu/",
            "https://card.example.edu",
            "card.example.edu",
        );
        ok(
            "https://card.example.edu:443",
            "https://card.example.edu",
            "card.example.edu",
        );
        ok(
            "https://card.example.edu:8443",
            "https://card.example.edu:8443",
            "card.example.edu:8443",
        );
        let bad = |u: &str, rule: &str| assert_eq!(parse(u), Err(vec![rule.to_string()]), "{u}");
        bad("http://card.example.edu", "https");
        bad("https://card.example.edu/claim", "origin_only");
        bad("https://card.example.edu?x=1", "origin_only");
        bad("https://card.example.edu#top", "origin_only");
        bad("https://me@card.example.edu", "origin_only");
        bad("card.example.edu", "url");
        bad("https://onecard.example.com/", "platform_address");
        bad("", "required");
    }

    #[test]
    fn colours_are_six_hex_digits() {
        let mut c = Checks::new();
        assert_eq!(check_accent(&mut c, "#8A1538").as_deref(), Some("#8a1538"));
        for bad in ["8a1538", "#8a153", "#8a15388", "#8a153g", "red"] {
            let mut c = Checks::new();
            assert_eq!(check_accent(&mut c, bad), None, "{bad}");
            assert_eq!(c.violations[0].rule, "hex_color");
        }
    }
}
