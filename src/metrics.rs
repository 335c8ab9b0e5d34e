//! Prometheus metrics: request counts and latency by route pattern (never by raw path,
//! which would make one series per user id).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::Error;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: fine below 10 ms where payments live.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder the first time; later servers in the same process
/// (tests) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_S)
                .expect("the bucket list is non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Only fails if another recorder was installed, which this crate never does.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts and times every request; adds `x-request-id` to every answer.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = crate::telemetry::route(&req);
    let request_id = crate::telemetry::request_id(&req);
    let res = next.call(req).await;
    // An error (a request past its deadline, `crate::deadline`) is answered by actix with
    // the error's own response; it is counted, and carries the request id, all the same.
    let status = match &res {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    }
    .as_u16();
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        h.counters
            .entry((method, route.clone(), status))
            .or_insert_with(|| {
                metrics::counter!("http_requests_total", "method" => method, "route" => route.to_string(), "status" => status.to_string())
            })
            .increment(1);
        h.histograms
            .entry((method, route.clone()))
            .or_insert_with(|| {
                metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.to_string())
            })
            .record(start.elapsed().as_secs_f64());
    });
    let id = HeaderValue::from_str(&request_id)
        .ok()
        .filter(|id| !id.is_empty());
    match (res, id) {
        (Ok(mut res), Some(id)) => {
            res.headers_mut().insert(REQUEST_ID, id);
            Ok(res)
        }
        (Err(e), Some(id)) => Err(WithRequestId(e, id).into()),
        (res, None) => res,
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An error answered with the request's id, as every other answer is.
#[derive(Debug)]
struct WithRequestId(Error, HeaderValue);

impl std::fmt::Display for WithRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl actix_web::ResponseError for WithRequestId {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.0.as_response_error().status_code()
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let mut res = self.0.error_response();
        res.headers_mut().insert(REQUEST_ID, self.1.clone());
        res
    }
}

/// The method as a label: the standard ones by name, any other as `OTHER`, so that a
/// client cannot make a series (and a cached handle) per made-up method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Each worker thread's handles to the series it has recorded, by label values: a
/// request then costs a map lookup, not a metric key built, hashed and looked up in the
/// recorder's registry. Bounded: routes are the app's patterns (or `unmatched`),
/// methods are the eight labels above, and statuses are three digits.
#[derive(Default)]
struct Handles {
    counters: HashMap<(&'static str, Rc<str>, u16), metrics::Counter>,
    histograms: HashMap<(&'static str, Rc<str>), metrics::Histogram>,
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::default();
}
