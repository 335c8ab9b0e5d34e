//! Logs: `tracing` only, pretty or JSON. The root span of a request carries method, route
//! pattern and request id — never the path's query string or headers, so tokens, codes
//! and ID numbers cannot reach a log line.

use std::rc::Rc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// A request's route pattern (`/api/v1/payments/{id}`), found once per request: finding
/// it walks the router's patterns, and the span, the metrics and the idempotency layer
/// each need it.
#[derive(Clone)]
struct Route(Rc<str>);

/// The route pattern of `request`, or `unmatched`.
pub fn route(request: &ServiceRequest) -> Rc<str> {
    if let Some(Route(r)) = request.extensions().get::<Route>() {
        return r.clone();
    }
    let r: Rc<str> = request
        .match_pattern()
        .map_or_else(|| Rc::from("unmatched"), Rc::from);
    request.extensions_mut().insert(Route(r.clone()));
    r
}

#[derive(Clone)]
struct RequestIdText(Rc<str>);

/// The request id `TracingLogger` gave this request, as text: formatted once and kept
/// with the request for the span, the `x-request-id` header and problem documents.
pub fn request_id(request: &impl HttpMessage) -> Rc<str> {
    if let Some(RequestIdText(id)) = request.extensions().get::<RequestIdText>() {
        return id.clone();
    }
    let id: Rc<str> = match request.extensions().get::<RequestId>() {
        Some(id) => Rc::from(id.to_string()),
        None => return Rc::from(""),
    };
    request.extensions_mut().insert(RequestIdText(id.clone()));
    id
}

pub struct OneCardSpan;

impl RootSpanBuilder for OneCardSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = route(request);
        let request_id = request_id(request);
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            request_id = %request_id,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(res) => res.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        span.record("status", status);
        if status >= 500 {
            tracing::warn!(parent: &span, status, "request failed");
        } else {
            tracing::debug!(parent: &span, status, "request done");
        }
    }
}
