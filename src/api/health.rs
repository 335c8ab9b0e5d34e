//! Probes and metrics: `/healthz` (the process is up), `/readyz` (store and bus answer),
//! `/metrics` (Prometheus text).

use actix_web::{get, web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
    pub store_ok: bool,
    /// `in_process` or `redis`.
    pub bus: &'static str,
    pub bus_ok: bool,
}

/// The process is up.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn get_healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// The store and the bus answer, each within `READY_PING_MS`; 503 otherwise.
#[utoipa::path(tag = "operations", responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)
))]
#[get("/readyz")]
pub async fn get_readyz(state: web::Data<AppState>) -> HttpResponse {
    let limit = std::time::Duration::from_millis(crate::limits::READY_PING_MS);
    let late = |_| format!("no answer within {} ms", limit.as_millis());
    let (store, bus) = tokio::join!(
        tokio::time::timeout(limit, state.store.ping()),
        tokio::time::timeout(limit, state.bus.ping())
    );
    let store = store
        .map_err(late)
        .and_then(|r| r.map_err(|e| e.to_string()));
    let bus = bus.map_err(late).and_then(|r| r);
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness: store unreachable");
    }
    if let Err(e) = &bus {
        tracing::warn!(error = %e, "readiness: bus unreachable");
    }
    let body = Readiness {
        status: if store.is_ok() && bus.is_ok() {
            "ready"
        } else {
            "not_ready"
        },
        store: state.store.engine(),
        store_ok: store.is_ok(),
        bus: state.bus.kind(),
        bus_ok: bus.is_ok(),
    };
    if store.is_ok() && bus.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics in text format.
#[utoipa::path(tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
#[get("/metrics")]
pub async fn get_metrics(
    handle: web::Data<PrometheusHandle>,
    state: web::Data<AppState>,
) -> HttpResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let (batches, commits) = (
        onecard_actors::ledger::BATCHES.load(Relaxed),
        onecard_actors::ledger::COMMITS.load(Relaxed),
    );
    metrics::gauge!("wallet_actors_live").set(state.wallets.live() as f64);
    metrics::counter!("ledger_batches_total").absolute(batches);
    metrics::counter!("ledger_commits_total").absolute(commits);
    // Over `ledger_batches_total`: the mean time a group commit takes to be durable.
    metrics::counter!("ledger_batch_write_microseconds_total")
        .absolute(onecard_actors::ledger::COMMIT_MICROS.load(Relaxed));
    metrics::counter!("ledger_entries_sealed_total")
        .absolute(crate::api::ledger::SEALED.load(Relaxed));
    metrics::counter!("arrears_written_off_wallets_total")
        .absolute(crate::api::arrears::WRITTEN_OFF.load(Relaxed));
    metrics::counter!("online_topups_credited_total")
        .absolute(crate::charges::CREDITED.load(Relaxed));
    metrics::counter!("online_topups_closed_total").absolute(crate::charges::CLOSED.load(Relaxed));
    {
        use onecard_actors::realtime::{hub, relay};
        metrics::gauge!("ws_connections").set(crate::ws::CONNECTIONS.load(Relaxed) as f64);
        metrics::gauge!("ws_subscriptions").set(hub::SUBSCRIPTIONS.load(Relaxed) as f64);
        metrics::counter!("ws_events_delivered_total").absolute(hub::DELIVERED.load(Relaxed));
        metrics::counter!("ws_sessions_cut_off_total").absolute(hub::LAGGED.load(Relaxed));
        metrics::counter!("outbox_relayed_total").absolute(relay::RELAYED.load(Relaxed));
        metrics::counter!("outbox_swept_total").absolute(relay::SWEPT.load(Relaxed));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
