//! The open platform's apps (SPEC §12): self-built H5 pages, mini-programs and headless
//! integrations (a door gate, a logistics system). An app's `app_key` is its id; its
//! `app_secret` is shown when it is created and when it is rotated, and never again (the
//! server derives it when it checks a signature, `crate::apps`). Kept by super admins and
//! by sub-admins granted `api_config`; needs an edition with the open API. A change holds
//! on this node at once and on the others within the cache's few seconds.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use onecard_actors::domain::validate::Checks;
use onecard_schema::ids::{AppId, DeliveryId};
use onecard_schema::model::{
    App, AppKind, AppScope, DeliveryStatus, NewDelivery, WebhookDelivery, WebhookEvent,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::{IntoParams, ToSchema};

use super::{checked, nullable, ListParams, Paged};
use crate::auth::{AppsManager, AppsViewer, Auth};
use crate::extract::{path_id, Json, Query};
use crate::problem::{ApiError, Problems};
use crate::state::AppState;

const NAME_CHARS_MAX: usize = 32;
const DESCRIPTION_CHARS_MAX: usize = 200;
const LOGO_URL_CHARS_MAX: usize = 512;
const WEBHOOK_URL_CHARS_MAX: usize = 512;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        example = "North gate"
    )]
    pub name: String,
    pub kind: AppKind,
    #[schema(max_length = 200)]
    pub description: Option<String>,
    /// An `https://` (or `http://`) address of the app's logo.
    #[schema(max_length = 512, pattern = r"^https?://[^\s]+$")]
    pub logo_url: Option<String>,
    /// What its signed requests may do; each scope once.
    #[serde(default)]
    pub scopes: Vec<AppScope>,
    /// Where its events go: an `https://` (or `http://`) address that answers a signed
    /// `POST` with a 2xx status once it has the event.
    #[schema(max_length = 512, pattern = r"^https?://[^\s]+$")]
    pub webhook_url: Option<String>,
    /// The event types delivered there, each once; each needs the scope that reads it
    /// (`payments_read`).
    #[serde(default)]
    pub webhook_events: Vec<WebhookEvent>,
    /// An H5 app's or mini-program's page (not a headless app's): the card's launcher
    /// opens it with `?onecard_ticket=…`, which the app's server redeems (scope `launch`).
    #[schema(max_length = 512, pattern = r"^https?://[^\s]+$")]
    pub entry_url: Option<String>,
}

/// Absent fields stay as they are; `null` clears `description` or `logo_url`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchApp {
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 512, pattern = r"^https?://[^\s]+$")]
    pub logo_url: Option<Option<String>>,
    /// Replaces the scopes whole.
    pub scopes: Option<Vec<AppScope>>,
    /// `null` stops the deliveries (those pending wait for an address until given up).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 512, pattern = r"^https?://[^\s]+$")]
    pub webhook_url: Option<Option<String>>,
    /// Replaces the event types whole.
    pub webhook_events: Option<Vec<WebhookEvent>>,
    /// `null`: the launcher has nothing to open.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 512, pattern = r"^https?://[^\s]+$")]
    pub entry_url: Option<Option<String>>,
}

/// An app as admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppView {
    #[serde(flatten)]
    pub app: App,
    /// What the app sends as `X-App-Key`.
    pub app_key: AppId,
    /// An H5 app's or mini-program's own link: the card's launcher, which opens
    /// `entry_url` for the cardholder signed in on the phone. Null for a headless app.
    pub launch_url: Option<String>,
    /// A mini-program's own code: `launch_url` as an SVG QR image.
    pub launch_qr_svg: Option<String>,
}

/// An app with its secret: shown once, at creation and at each rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppCredentials {
    #[serde(flatten)]
    pub view: AppView,
    /// Signs the app's requests; keep it on the app's server, never in a page.
    pub app_secret: String,
}

fn view(base: &str, app: App) -> Result<AppView, ApiError> {
    let launch_url =
        (app.kind != AppKind::Headless).then(|| super::launch::launch_url(base, app.id));
    let launch_qr_svg = match (&launch_url, app.kind) {
        (Some(url), AppKind::MiniProgram) => Some(super::qr_svg(url, 240)?),
        _ => None,
    };
    Ok(AppView {
        app_key: app.id,
        launch_url,
        launch_qr_svg,
        app,
    })
}

fn credentials(state: &AppState, base: &str, app: App) -> Result<AppCredentials, ApiError> {
    let app_secret = state.keys.app_secret(app.id, app.secret_version);
    Ok(AppCredentials {
        view: view(base, app)?,
        app_secret,
    })
}

fn check_app(app: &App) -> Result<(), ApiError> {
    let mut c = Checks::new();
    c.text("name", &app.name, 1, NAME_CHARS_MAX);
    if let Some(d) = &app.description {
        c.text("description", d, 1, DESCRIPTION_CHARS_MAX);
    }
    if let Some(url) = &app.logo_url {
        if c.text("logo_url", url, 1, LOGO_URL_CHARS_MAX)
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            c.fail("logo_url", "pattern", "an http:// or https:// address");
        }
    }
    if let Some(url) = &app.webhook_url {
        if c.text("webhook_url", url, 1, WEBHOOK_URL_CHARS_MAX) && !webhook_address(url) {
            c.fail(
                "webhook_url",
                "pattern",
                "an http:// or https:// address with a host, without user or password",
            );
        }
    }
    if let Some(url) = &app.entry_url {
        if app.kind == AppKind::Headless {
            c.fail(
                "entry_url",
                "kind",
                "a headless app has no page to open: only h5 and mini_program apps",
            );
        } else if c.text("entry_url", url, 1, WEBHOOK_URL_CHARS_MAX) && !webhook_address(url) {
            c.fail(
                "entry_url",
                "pattern",
                "an http:// or https:// address with a host, without user or password",
            );
        }
    }
    if app.scopes.iter().collect::<HashSet<_>>().len() != app.scopes.len() {
        c.fail("scopes", "unique", "each scope may be named once");
    }
    let events = &app.webhook_events;
    if events.iter().collect::<HashSet<_>>().len() != events.len() {
        c.fail(
            "webhook_events",
            "unique",
            "each event type may be named once",
        );
    }
    if let Some(e) = events.iter().find(|e| !app.scopes.contains(&e.scope())) {
        c.fail(
            "webhook_events",
            "scope",
            format!("{e} needs the app to hold the {} scope", e.scope()),
        );
    }
    if !events.is_empty() && app.webhook_url.is_none() {
        c.fail(
            "webhook_url",
            "required",
            "event types need an address to go to",
        );
    }
    checked(c)
}

/// An address the deliverer can post to: http(s), a host, no credentials in it (they
/// would show in every admin's view of the app).
pub(crate) fn webhook_address(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
            && u.fragment().is_none()
    })
}

fn audit_detail(app: &App) -> serde_json::Value {
    serde_json::json!({
        "name": app.name, "kind": app.kind, "scopes": app.scopes,
        "secret_version": app.secret_version,
        "webhook_url": app.webhook_url, "webhook_events": app.webhook_events,
        "entry_url": app.entry_url,
    })
}

/// Register an app; the answer carries its secret, once.
#[utoipa::path(tag = "apps", request_body = CreateApp, security(("bearer" = [])),
    responses((status = 201, body = AppCredentials), Problems))]
#[post("/apps")]
pub async fn create_app(
    state: web::Data<AppState>,
    caller: Auth<AppsManager>,
    Json(body): Json<CreateApp>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let app = App {
        id: AppId::new(),
        name: body.name,
        kind: body.kind,
        description: body.description,
        logo_url: body.logo_url,
        scopes: body.scopes,
        webhook_url: body.webhook_url,
        webhook_events: body.webhook_events,
        entry_url: body.entry_url,
        secret_version: 1,
        created_at: now,
        updated_at: now,
    };
    check_app(&app)?;
    let audit = caller.audit(&state, "app.create", "app", app.id, audit_detail(&app));
    state
        .store
        .create_app(caller.tenant()?, app.clone(), audit)
        .await?;
    state.webhooks.forget_subscribers();
    Ok(HttpResponse::Created().json(credentials(
        &state,
        &state.public_url_of(caller.tenant()?).await?,
        app,
    )?))
}

/// The tenant's apps, by name.
#[utoipa::path(tag = "apps", security(("bearer" = [])),
    responses((status = 200, body = Paged<AppView>), Problems))]
#[get("/apps")]
pub async fn list_apps(
    state: web::Data<AppState>,
    caller: Auth<AppsViewer>,
) -> Result<web::Json<Paged<AppView>>, ApiError> {
    let apps = state.store.list_apps(caller.tenant()?).await?;
    let base = state.public_url_of(caller.tenant()?).await?;
    let items = apps
        .into_iter()
        .map(|a| view(&base, a))
        .collect::<Result<_, _>>()?;
    Ok(web::Json(Paged::new(items, None)))
}

/// One app (without its secret).
#[utoipa::path(tag = "apps", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = AppView), Problems))]
#[get("/apps/{id}")]
pub async fn get_app(
    state: web::Data<AppState>,
    caller: Auth<AppsViewer>,
    id: web::Path<String>,
) -> Result<web::Json<AppView>, ApiError> {
    let app = state.store.get_app(caller.tenant()?, path_id(&id)?).await?;
    Ok(web::Json(view(
        &state.public_url_of(caller.tenant()?).await?,
        app,
    )?))
}

/// Change an app's name, description, logo or scopes (scopes hold from its next request).
#[utoipa::path(tag = "apps", params(("id" = String, Path)), request_body = PatchApp,
    security(("bearer" = [])), responses((status = 200, body = AppView), Problems))]
#[patch("/apps/{id}")]
pub async fn patch_app(
    state: web::Data<AppState>,
    caller: Auth<AppsManager>,
    id: web::Path<String>,
    Json(body): Json<PatchApp>,
) -> Result<web::Json<AppView>, ApiError> {
    let tenant = caller.tenant()?;
    let mut app = state.store.get_app(tenant, path_id(&id)?).await?;
    if let Some(name) = body.name {
        app.name = name;
    }
    if let Some(description) = body.description {
        app.description = description;
    }
    if let Some(logo_url) = body.logo_url {
        app.logo_url = logo_url;
    }
    if let Some(scopes) = body.scopes {
        app.scopes = scopes;
    }
    if let Some(url) = body.webhook_url {
        app.webhook_url = url;
    }
    if let Some(events) = body.webhook_events {
        app.webhook_events = events;
    }
    if let Some(url) = body.entry_url {
        app.entry_url = url;
    }
    check_app(&app)?;
    app.updated_at = state.clock.now();
    let audit = caller.audit(&state, "app.update", "app", app.id, audit_detail(&app));
    state.store.update_app(tenant, app.clone(), audit).await?;
    state.apps.remove(&app.id);
    state.webhooks.forget_subscribers();
    Ok(web::Json(view(
        &state.public_url_of(caller.tenant()?).await?,
        app,
    )?))
}

/// Issue a new secret; the old one stops working (on other nodes within the cache's few
/// seconds). The answer carries it, once.
#[utoipa::path(tag = "apps", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = AppCredentials), Problems))]
#[post("/apps/{id}/secret")]
pub async fn rotate_app_secret(
    state: web::Data<AppState>,
    caller: Auth<AppsManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let mut app = state.store.get_app(tenant, path_id(&id)?).await?;
    app.secret_version = app
        .secret_version
        .checked_add(1)
        .ok_or_else(|| ApiError::conflict("too_many_rotations", "register a new app instead"))?;
    app.updated_at = state.clock.now();
    let audit = caller.audit(
        &state,
        "app.secret.rotate",
        "app",
        app.id,
        audit_detail(&app),
    );
    state.store.update_app(tenant, app.clone(), audit).await?;
    state.apps.remove(&app.id);
    state.webhooks.forget_subscribers();
    Ok(HttpResponse::Created().json(credentials(
        &state,
        &state.public_url_of(caller.tenant()?).await?,
        app,
    )?))
}

/// Remove an app; its signed requests stop (on other nodes within the cache's seconds).
#[utoipa::path(tag = "apps", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), Problems))]
#[delete("/apps/{id}")]
pub async fn delete_app(
    state: web::Data<AppState>,
    caller: Auth<AppsManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: AppId = path_id(&id)?;
    let audit = caller.audit(&state, "app.delete", "app", id, serde_json::json!({}));
    state.store.delete_app(caller.tenant()?, id, audit).await?;
    state.apps.remove(&id);
    state.webhooks.forget_subscribers();
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    pub status: Option<DeliveryStatus>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// An app's webhook deliveries, newest first: what was sent, how often, and what the app
/// answered. Finished ones are kept 30 days.
#[utoipa::path(tag = "apps", params(("id" = String, Path), DeliveriesQuery),
    security(("bearer" = [])), responses((status = 200, body = Paged<WebhookDelivery>), Problems))]
#[get("/apps/{id}/webhook-deliveries")]
pub async fn list_webhook_deliveries(
    state: web::Data<AppState>,
    caller: Auth<AppsViewer>,
    id: web::Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<web::Json<Paged<WebhookDelivery>>, ApiError> {
    let tenant = caller.tenant()?;
    let app = state.store.get_app(tenant, path_id(&id)?).await?;
    let page = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page(DeliveryId)?;
    let found = state
        .store
        .list_deliveries(tenant, app.id, q.status, page.after, page.limit)
        .await?;
    Ok(web::Json(Paged::new(found.items, found.next.map(|d| d.0))))
}

/// Send a delivery again now (delivered, given up or waiting), with a new round of
/// retries. The app receives the same event id and de-duplicates by it.
#[utoipa::path(tag = "apps", params(("id" = String, Path), ("delivery_id" = String, Path)),
    security(("bearer" = [])), responses((status = 202, body = WebhookDelivery), Problems))]
#[post("/apps/{id}/webhook-deliveries/{delivery_id}/retry")]
pub async fn retry_webhook_delivery(
    state: web::Data<AppState>,
    caller: Auth<AppsManager>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let (app, delivery): (AppId, DeliveryId) = (path_id(&path.0)?, path_id(&path.1)?);
    let now = state.clock.now();
    let audit = caller.audit(
        &state,
        "app.webhook.retry",
        "app",
        app,
        serde_json::json!({ "delivery_id": delivery }),
    );
    let found = state
        .store
        .redeliver(
            tenant,
            app,
            delivery,
            now,
            now + state.webhooks.timing().give_up,
            audit,
        )
        .await?;
    state.webhooks.wake();
    Ok(HttpResponse::Accepted().json(found))
}

/// Send the app a `webhook.ping` event now, to try its address and signature check.
#[utoipa::path(tag = "apps", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = WebhookDelivery), Problems))]
#[post("/apps/{id}/webhook-ping")]
pub async fn ping_webhook(
    state: web::Data<AppState>,
    caller: Auth<AppsManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant()?;
    let app = state.store.get_app(tenant, path_id(&id)?).await?;
    if app.webhook_url.is_none() {
        return Err(ApiError::conflict(
            "no_webhook",
            "the app has no webhook_url to ping",
        ));
    }
    let now = state.clock.now();
    let ping = NewDelivery {
        id: DeliveryId::new(),
        tenant,
        app: app.id,
        event_id: uuid::Uuid::now_v7(),
        kind: "webhook.ping".into(),
        payload: serde_json::json!({ "app_id": app.id }).to_string(),
        event_at: now,
        give_up_at: now + state.webhooks.timing().give_up,
        created_at: now,
        lease_until: None,
    };
    // As stored: pending, due now, no attempt yet (its event id is new, so it is new).
    let queued = WebhookDelivery {
        id: ping.id,
        app_id: ping.app,
        event_id: ping.event_id,
        kind: ping.kind.clone(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(now),
        give_up_at: ping.give_up_at,
        last_attempt_at: None,
        last_status: None,
        last_error: None,
        delivered_at: None,
        event_at: now,
        created_at: now,
    };
    state.store.enqueue_deliveries(vec![ping]).await?;
    state.webhooks.wake();
    Ok(HttpResponse::Accepted().json(queued))
}
