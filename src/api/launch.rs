//! The card's launcher (SPEC §12: an H5 app gets its own link, a mini-program its own
//! code). An app's link is `/launch/<app id>`; on the cardholder's phone it asks for a
//! launch (`POST /me/app-launches`) with the card signed in there, and goes on to the
//! app's `entry_url` with `?onecard_ticket=<ticket>`. The app's server redeems the ticket
//! with a signed request (`POST /app-launches/redeem`, scope `launch`) and learns who
//! opened it. A ticket is good for one redemption, by that app, within a minute; the page
//! never holds the card's token, only the ticket.

use actix_web::{get, post, web, HttpResponse};
use jiff::Timestamp;
use onecard_actors::domain::edition::{has_capability, Capability};
use onecard_schema::ids::{AppId, TenantId, UserId};
use onecard_schema::model::{AppKind, UserStatus};
use onecard_schema::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Paged;
use crate::auth::{hash_token, new_token, AppLauncher, AppOpener, Auth, Cardholder};
use crate::extract::Json;
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

/// How long a launch ticket may wait for the app's server to redeem it.
const LAUNCH_TICKET_TTL: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartLaunch {
    /// An H5 app or mini-program of the cardholder's organisation.
    pub app_id: AppId,
}

/// Where the phone goes next: the app's page, with the ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct Launch {
    pub redirect_url: String,
    pub expires_at: Timestamp,
    pub app_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemLaunch {
    /// The `onecard_ticket` the app's page was opened with.
    #[schema(min_length = 1, max_length = 64)]
    pub ticket: String,
}

/// Who opened the app from their card.
#[derive(Debug, Serialize, ToSchema)]
pub struct Launcher {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub name: String,
    pub number: String,
    /// Their identity type's name, as imported (`staff`).
    pub identity: Option<String>,
    pub status: UserStatus,
}

/// An app's own link: the launcher page for it.
pub(crate) fn launch_url(base: &str, app: AppId) -> String {
    format!("{base}/launch/{app}")
}

fn ticket_spent() -> ApiError {
    ApiError::Gone {
        code: "launch_ticket_used_or_expired",
        detail: "this launch ticket was already redeemed, was made for another app, or is \
                 older than a minute: open the app from the card again"
            .into(),
    }
}

/// Open an app from the card: a one-time ticket for it, and the address of the app's page
/// that carries it. 404 for an app of another organisation; 409 `app_not_launchable` for
/// a headless app or one without an `entry_url`; 403 `edition` without the open API.
#[utoipa::path(tag = "apps", request_body = StartLaunch, security(("bearer" = [])),
    responses((status = 201, body = Launch), Problems))]
#[post("/me/app-launches")]
pub async fn start_launch(
    state: web::Data<AppState>,
    caller: Auth<AppOpener>,
    Json(body): Json<StartLaunch>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let user = UserId(caller.subject()?);
    let app = state.store.get_app(tenant, body.app_id).await?;
    let entry = match (&app.entry_url, app.kind) {
        (Some(url), AppKind::H5 | AppKind::MiniProgram) => url.clone(),
        _ => {
            return Err(ApiError::conflict(
                "app_not_launchable",
                "this app has no page to open from the card (a headless app, or no \
                 entry_url yet)",
            ))
        }
    };
    let ticket = new_token();
    let expires_at = state.clock.now() + LAUNCH_TICKET_TTL;
    state
        .store
        .put_app_launch(app.id, tenant, user, hash_token(&ticket), expires_at)
        .await?;
    let mut url = reqwest::Url::parse(&entry)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored entry_url: {e}")))?;
    url.query_pairs_mut().append_pair("onecard_ticket", &ticket);
    Ok(HttpResponse::Created().json(Launch {
        redirect_url: url.into(),
        expires_at,
        app_name: app.name,
    }))
}

/// Redeem a launch ticket (the app's server, signed, scope `launch`): who opened the app.
/// 410 `launch_ticket_used_or_expired` for a ticket spent, older than a minute, or made
/// for another app.
#[utoipa::path(tag = "apps", request_body = RedeemLaunch,
    responses((status = 200, body = Launcher), Problems))]
#[post("/app-launches/redeem")]
pub async fn redeem_launch(
    state: web::Data<AppState>,
    caller: Auth<AppLauncher>,
    Json(body): Json<RedeemLaunch>,
) -> Result<web::Json<Launcher>, ApiError> {
    if body.ticket.is_empty() || body.ticket.len() > 64 {
        return Err(ticket_spent());
    }
    let app = AppId(caller.subject()?);
    let (tenant, user) = state
        .store
        .redeem_app_launch(app, hash_token(&body.ticket), state.clock.now())
        .await
        .map_err(|e| match e {
            StoreError::Gone => ticket_spent(),
            other => other.into(),
        })?;
    let user = state.store.get_user(tenant, user).await?;
    Ok(web::Json(Launcher {
        tenant_id: tenant,
        user_id: user.id,
        name: user.name,
        number: user.number,
        identity: user.identity,
        status: user.status,
    }))
}

/// An app the card opens, as its holder sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardApp {
    pub id: AppId,
    pub name: String,
    pub kind: AppKind,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    /// The app's own link (`/launch/<id>`).
    pub launch_url: String,
}

/// The apps this card opens (H5 apps and mini-programs with a page), by name; none in an
/// edition without the open API.
#[utoipa::path(tag = "apps", security(("bearer" = [])),
    responses((status = 200, body = Paged<CardApp>), Problems))]
#[get("/me/apps")]
pub async fn list_card_apps(
    state: web::Data<AppState>,
    caller: Auth<Cardholder>,
) -> Result<web::Json<Paged<CardApp>>, ApiError> {
    let open = caller
        .edition
        .is_some_and(|e| has_capability(e, Capability::OpenApi));
    let apps = if open {
        state.store.list_apps(caller.tenant()?).await?
    } else {
        Vec::new()
    };
    let base = state.public_url_of(caller.tenant()?).await?;
    let items = apps
        .into_iter()
        .filter(|a| a.kind != AppKind::Headless && a.entry_url.is_some())
        .map(|a| CardApp {
            launch_url: launch_url(&base, a.id),
            id: a.id,
            name: a.name,
            kind: a.kind,
            description: a.description,
            logo_url: a.logo_url,
        })
        .collect();
    Ok(web::Json(Paged::new(items, None)))
}
