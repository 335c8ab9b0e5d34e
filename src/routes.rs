//! The route table: every endpoint in one place. Paths live on the handlers (one
//! attribute each) and are collected into the OpenAPI document from here.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, Error, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi;
use utoipa_actix_web::{scope, AppExt};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::api::{
    admins, analytics, apps, arrears, audit, booking, cards, charges, checkin, collection,
    directory, front_end, groups, health, identity, import, launch, ledger, maintenance, merchants,
    notices, payments, people, reports, settlement, shuttle, statements, stats, subsidies,
    tenant_groups, tenants, topups, users, visitors, wallets, withdrawals,
};
use crate::deadline::deadline;
use crate::idempotency::idempotency;
use crate::metrics::track;
use crate::openapi::ApiDoc;
use crate::problem::ApiError;
use crate::ratelimit::{limit, Limiter};
use crate::state::AppState;
use crate::telemetry::OneCardSpan;

/// The OpenAPI document, built from the same table the server routes by.
pub fn openapi() -> utoipa::openapi::OpenApi {
    build(App::new()).1
}

fn build<T>(app: App<T>) -> (App<T>, utoipa::openapi::OpenApi)
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = Error, InitError = ()>,
{
    app.into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .service(health::get_healthz)
        .service(health::get_readyz)
        .service(health::get_metrics)
        .service(
            // The router tries routes in order, and a path with a parameter is a regex
            // match: the till's and the phone's hot routes come first.
            scope("/api/v1")
                .service(payments::create_payment)
                .service(wallets::create_payment_code)
                .service(tenants::create_tenant)
                .service(tenants::get_tenant)
                .service(tenants::patch_tenant)
                .service(front_end::get_front_end)
                .service(front_end::put_front_end)
                .service(front_end::put_address)
                .service(front_end::put_logo)
                .service(front_end::delete_logo)
                .service(front_end::get_brand)
                .service(front_end::get_logo)
                .service(tenant_groups::list_tenants)
                .service(tenant_groups::get_tenant_by_id)
                .service(tenant_groups::patch_tenant_by_operator)
                .service(tenant_groups::create_tenant_group)
                .service(tenant_groups::list_tenant_groups)
                .service(tenant_groups::get_tenant_group)
                .service(tenant_groups::patch_tenant_group)
                .service(tenant_groups::delete_tenant_group)
                .service(tenant_groups::add_group_member)
                .service(tenant_groups::remove_group_member)
                .service(tenant_groups::get_group)
                .service(tenant_groups::list_group_tenants)
                .service(tenant_groups::group_income_summary)
                .service(people::find_group_person)
                .service(people::get_group_person)
                .service(people::unlink_group_person)
                .service(admins::create_admin)
                .service(admins::bind_admin)
                .service(admins::get_admin_self)
                .service(admins::list_admins)
                .service(admins::delete_admin)
                .service(groups::create_admin_group)
                .service(groups::list_admin_groups)
                .service(groups::get_admin_group)
                .service(groups::patch_admin_group)
                .service(groups::delete_admin_group)
                .service(apps::create_app)
                .service(apps::list_apps)
                .service(apps::get_app)
                .service(apps::patch_app)
                .service(apps::rotate_app_secret)
                .service(apps::delete_app)
                .service(apps::list_webhook_deliveries)
                .service(apps::retry_webhook_delivery)
                .service(apps::ping_webhook)
                .service(checkin::create_check_in)
                .service(checkin::create_event)
                .service(checkin::list_events)
                .service(checkin::get_event)
                .service(checkin::patch_event)
                .service(checkin::delete_event)
                .service(checkin::rotate_event_code)
                .service(checkin::get_event_qr)
                .service(checkin::add_attendees)
                .service(checkin::remove_attendee)
                .service(checkin::list_attendees)
                .service(checkin::list_check_ins)
                .service(checkin::export_attendance)
                .service(checkin::create_staff_check_in)
                .service(booking::create_room)
                .service(booking::list_rooms)
                .service(booking::get_room)
                .service(booking::patch_room)
                .service(booking::delete_room)
                .service(booking::get_availability)
                .service(booking::create_booking)
                .service(booking::list_bookings)
                .service(booking::get_booking)
                .service(booking::cancel_booking)
                .service(booking::list_my_bookings)
                .service(directory::create_department)
                .service(directory::list_departments)
                .service(directory::patch_department)
                .service(directory::delete_department)
                .service(directory::create_tag)
                .service(directory::list_tags)
                .service(directory::patch_tag)
                .service(directory::delete_tag)
                .service(import::get_import_template)
                .service(import::import_users)
                .service(users::batch_update_users)
                .service(users::create_user)
                .service(users::list_users)
                .service(users::get_user)
                .service(users::patch_user)
                .service(users::delete_user)
                .service(users::create_user_token)
                .service(audit::list_audit)
                .service(stats::get_directory_stats)
                .service(stats::get_wallet_stats)
                .service(reports::get_report)
                .service(analytics::get_spending)
                .service(merchants::create_merchant)
                .service(merchants::list_merchants)
                .service(merchants::get_merchant)
                .service(merchants::patch_merchant)
                .service(merchants::create_terminal)
                .service(merchants::get_merchant_totals)
                .service(merchants::get_terminal_self)
                .service(merchants::list_terminals)
                .service(merchants::replace_terminal_token)
                .service(merchants::retire_terminal)
                .service(settlement::create_settlement_entity)
                .service(settlement::list_settlement_entities)
                .service(settlement::get_settlement_entity)
                .service(settlement::patch_settlement_entity)
                .service(settlement::delete_settlement_entity)
                .service(settlement::get_merchant_settlement)
                .service(settlement::put_merchant_settlement)
                .service(collection::get_collection_code)
                .service(collection::pay_collection_code)
                .service(collection::visit_collection_code)
                .service(collection::get_terminal_qr)
                .service(collection::list_visits)
                .service(collection::list_my_visits)
                .service(collection::get_merchant_visits)
                .service(shuttle::verify_ride)
                .service(identity::create_identity_type)
                .service(identity::list_identity_types)
                .service(identity::get_identity_type)
                .service(identity::patch_identity_type)
                .service(identity::rotate_identity_secret)
                .service(identity::delete_identity_type)
                .service(cards::create_card)
                .service(cards::list_cards)
                .service(cards::get_card)
                .service(cards::patch_card)
                .service(cards::put_cover)
                .service(cards::get_cover)
                .service(cards::get_card_claim_link)
                .service(cards::list_card_holders)
                .service(cards::get_claim_link)
                .service(cards::list_card_reviews)
                .service(cards::approve_card)
                .service(cards::reject_card)
                .service(cards::create_claim_ticket)
                .service(cards::get_claim_offer)
                .service(cards::get_claimable_card)
                .service(cards::send_phone_code)
                .service(cards::claim_card)
                .service(cards::list_my_cards)
                .service(launch::start_launch)
                .service(launch::list_card_apps)
                .service(launch::redeem_launch)
                .service(people::create_link_code)
                .service(people::redeem_link_code)
                .service(people::get_my_identity)
                .service(people::unlink_my_record)
                .service(people::open_linked_session)
                .service(cards::list_sandbox_texts)
                .service(notices::get_notice_settings)
                .service(notices::put_notice_settings)
                .service(notices::rotate_notice_secret)
                .service(notices::create_notice)
                .service(notices::list_notices)
                .service(notices::get_notice)
                .service(notices::edit_notice)
                .service(notices::delete_notice)
                .service(notices::send_notice)
                .service(notices::recall_notice)
                .service(notices::list_notice_deliveries)
                .service(shuttle::create_route)
                .service(shuttle::list_routes)
                .service(shuttle::get_route)
                .service(shuttle::patch_route)
                .service(shuttle::create_bus)
                .service(shuttle::list_buses)
                .service(shuttle::get_bus)
                .service(shuttle::patch_bus)
                .service(shuttle::create_bus_binding)
                .service(shuttle::unbind_bus)
                .service(shuttle::bind_verifier)
                .service(shuttle::get_verifier)
                .service(shuttle::list_rides)
                .service(shuttle::export_rides)
                .service(shuttle::list_my_rides)
                .service(shuttle::create_personal_code)
                .service(maintenance::record_by_device_code)
                .service(maintenance::record_by_scanner)
                .service(maintenance::create_device_type)
                .service(maintenance::list_device_types)
                .service(maintenance::get_device_type)
                .service(maintenance::patch_device_type)
                .service(maintenance::create_device)
                .service(maintenance::list_devices)
                .service(maintenance::get_device)
                .service(maintenance::patch_device)
                .service(maintenance::get_device_qr)
                .service(maintenance::create_device_binding)
                .service(maintenance::unbind_device)
                .service(maintenance::record_by_staff)
                .service(maintenance::bind_scanner)
                .service(maintenance::get_scanner)
                .service(maintenance::list_records)
                .service(maintenance::export_records)
                .service(maintenance::list_my_records)
                .service(visitors::get_public_form)
                .service(visitors::put_form)
                .service(visitors::create_request)
                .service(visitors::read_pass)
                .service(visitors::cancel_by_pass)
                .service(visitors::list_my_requests)
                .service(visitors::approve)
                .service(visitors::reject)
                .service(visitors::enter)
                .service(visitors::list_requests)
                .service(visitors::stats)
                .service(wallets::get_wallet)
                .service(wallets::get_my_wallet)
                .service(statements::get_my_statement)
                .service(statements::get_statement)
                .service(statements::export_my_statement)
                .service(statements::export_statement)
                .service(wallets::get_me)
                .service(wallets::create_topup)
                .service(charges::get_online_topups)
                .service(charges::create_charge)
                .service(charges::list_my_charges)
                .service(charges::get_my_charge)
                .service(charges::list_charges)
                .service(charges::sandbox_pay)
                .service(topups::create_topups)
                .service(topups::list_topups)
                .service(topups::export_topups)
                .service(topups::reverse_topup)
                .service(withdrawals::create_withdrawal)
                .service(withdrawals::create_batch_withdrawal)
                .service(withdrawals::list_withdrawals)
                .service(withdrawals::export_withdrawals)
                .service(wallets::create_coupon)
                .service(wallets::sign_agreement)
                .service(wallets::create_payment_code_qr)
                .service(wallets::freeze_wallet)
                .service(wallets::unfreeze_wallet)
                .service(wallets::put_sandbox_user)
                .service(subsidies::create_subsidy_rule)
                .service(subsidies::approve_subsidy_rule)
                .service(subsidies::get_subsidy_rule)
                .service(subsidies::reject_subsidy_rule)
                .service(subsidies::list_subsidy_rules)
                .service(payments::export_payments)
                .service(payments::get_payment)
                .service(payments::get_payment_holder)
                .service(payments::list_payments)
                .service(payments::create_refund)
                .service(arrears::get_arrears)
                .service(arrears::repay_arrears)
                .service(ledger::get_ledger_check)
                .service(crate::ws::connect),
        )
        .split_for_parts()
}

pub fn app(
    state: web::Data<AppState>,
    prometheus: web::Data<PrometheusHandle>,
    limiter: web::Data<Limiter>,
    doc: Arc<utoipa::openapi::OpenApi>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let base = App::new()
        .app_data(state)
        .app_data(prometheus)
        .app_data(limiter)
        .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into()))
        .configure(crate::pages::routes)
        // Before the `/api/v1` scope, which would otherwise claim these paths. Both are
        // static prefixes, so the router never runs the docs page's pattern (a regular
        // expression) on an API request: tried first on every request, twice, it cost
        // ~16,000 instructions per payment (docs/BENCHMARKS.md, twenty-sixth run).
        .service(
            web::resource("/api/v1/openapi.json")
                .app_data(web::Data::from(doc))
                .route(web::get().to(openapi_json)),
        )
        .service(
            web::scope("/api/v1/docs")
                // `/api/v1/docs` itself: the page lives at `/api/v1/docs/`.
                .service(web::resource("").route(web::get().to(|| async {
                    HttpResponse::PermanentRedirect()
                        .insert_header((actix_web::http::header::LOCATION, "/api/v1/docs/"))
                        .finish()
                })))
                .service(SwaggerUi::new("/{_:.*}").config(Config::new(["/api/v1/openapi.json"]))),
        );
    let (app, _) = build(base);
    app.default_service(web::to(|| async {
        HttpResponse::from_error(ApiError::NotFound)
    }))
    .wrap(from_fn(idempotency))
    // Before the idempotency layer: an app's key is public, so a replay must wait until
    // the request is known to be the app's.
    .wrap(from_fn(crate::apps::verify))
    .wrap(from_fn(limit))
    .wrap(from_fn(deadline))
    .wrap(from_fn(track))
    .wrap(TracingLogger::<OneCardSpan>::new())
}

/// The OpenAPI document, as the docs page reads it.
async fn openapi_json(doc: web::Data<utoipa::openapi::OpenApi>) -> HttpResponse {
    HttpResponse::Ok().json(doc.as_ref())
}
