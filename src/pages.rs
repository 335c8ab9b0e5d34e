//! The live pages, embedded in the binary: `/screen` (a till's customer display), `/me`
//! (the cardholder's code, wallet and notices), `/dashboard` (a tenant's live view) and
//! `/event-screen` (an event's door: its QR code and the check-ins as they come) and `/pay`
//! (what a canteen's collection code opens on a cardholder's phone: pay it, or be counted)
//! `/verify` (a shuttle bus's phone, a device's scanner or a visitor gate: it verifies
//! the codes shown to it), `/visit` (a visitor's request and pass), `/claim` (claiming
//! and activating a card), `/bind` (a new admin binding themselves) and `/launch/<app>`
//! (an H5 app's or mini-program's own link: it opens the app for the card on the phone).
//! Every page loads `brand.js`, which gives it the organisation's look at its own address
//! (`GET /api/v1/brand`).
//! Plain HTML, CSS and JavaScript with nothing loaded from elsewhere, so they work on a
//! closed campus network. Tokens go in the URL fragment (`/screen#token=…`), which
//! browsers never send to the server.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const SCREEN: &str = include_str!("pages/screen.html");
const ME: &str = include_str!("pages/me.html");
const DASHBOARD: &str = include_str!("pages/dashboard.html");
const LIVE_JS: &str = include_str!("pages/live.js");
const SCREEN_JS: &str = include_str!("pages/screen.js");
const ME_JS: &str = include_str!("pages/me.js");
const DASHBOARD_JS: &str = include_str!("pages/dashboard.js");
const EVENT: &str = include_str!("pages/event.html");
const EVENT_JS: &str = include_str!("pages/event.js");
const PAY: &str = include_str!("pages/pay.html");
const PAY_JS: &str = include_str!("pages/pay.js");
const VERIFY: &str = include_str!("pages/verify.html");
const VERIFY_JS: &str = include_str!("pages/verify.js");
const VISIT: &str = include_str!("pages/visit.html");
const CLAIM: &str = include_str!("pages/claim.html");
const CLAIM_JS: &str = include_str!("pages/claim.js");
const VISIT_JS: &str = include_str!("pages/visit.js");
const BIND: &str = include_str!("pages/bind.html");
const BIND_JS: &str = include_str!("pages/bind.js");
const LAUNCH: &str = include_str!("pages/launch.html");
const LAUNCH_JS: &str = include_str!("pages/launch.js");
const BRAND_JS: &str = include_str!("pages/brand.js");
const CSS: &str = include_str!("pages/pages.css");

/// Scripts from this server only (no inline script); style attributes are allowed (the
/// merchant tree indents with one); the websocket back to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn page(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    cfg.route("/screen", web::get().to(|| async { page(SCREEN, HTML) }))
        .route("/me", web::get().to(|| async { page(ME, HTML) }))
        .route(
            "/dashboard",
            web::get().to(|| async { page(DASHBOARD, HTML) }),
        )
        .route(
            "/event-screen",
            web::get().to(|| async { page(EVENT, HTML) }),
        )
        .route(
            "/assets/event.js",
            web::get().to(|| async { page(EVENT_JS, JS) }),
        )
        .route(
            "/assets/live.js",
            web::get().to(|| async { page(LIVE_JS, JS) }),
        )
        .route(
            "/assets/screen.js",
            web::get().to(|| async { page(SCREEN_JS, JS) }),
        )
        .route("/assets/me.js", web::get().to(|| async { page(ME_JS, JS) }))
        .route("/pay", web::get().to(|| async { page(PAY, HTML) }))
        .route("/bind", web::get().to(|| async { page(BIND, HTML) }))
        .route(
            "/launch/{app}",
            web::get().to(|| async { page(LAUNCH, HTML) }),
        )
        .route(
            "/assets/launch.js",
            web::get().to(|| async { page(LAUNCH_JS, JS) }),
        )
        .route(
            "/assets/bind.js",
            web::get().to(|| async { page(BIND_JS, JS) }),
        )
        .route(
            "/assets/pay.js",
            web::get().to(|| async { page(PAY_JS, JS) }),
        )
        .route("/verify", web::get().to(|| async { page(VERIFY, HTML) }))
        .route("/visit", web::get().to(|| async { page(VISIT, HTML) }))
        .route("/claim", web::get().to(|| async { page(CLAIM, HTML) }))
        .route(
            "/assets/claim.js",
            web::get().to(|| async { page(CLAIM_JS, JS) }),
        )
        .route(
            "/assets/visit.js",
            web::get().to(|| async { page(VISIT_JS, JS) }),
        )
        .route(
            "/assets/verify.js",
            web::get().to(|| async { page(VERIFY_JS, JS) }),
        )
        .route(
            "/assets/dashboard.js",
            web::get().to(|| async { page(DASHBOARD_JS, JS) }),
        )
        .route(
            "/assets/brand.js",
            web::get().to(|| async { page(BRAND_JS, JS) }),
        )
        .route(
            "/assets/pages.css",
            web::get().to(|| async { page(CSS, "text/css; charset=utf-8") }),
        );
}
