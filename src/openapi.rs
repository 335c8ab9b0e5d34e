//! The OpenAPI document's frame: info, the bearer scheme and the shared schemas. Paths are
//! collected from the handlers themselves by the route table.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "OneCard API",
        description = "Campus and enterprise e-card platform. Amounts are integer fen; ids are opaque strings; errors are application/problem+json. A tenant group's admin (a super admin of its head tenant) acts in a member tenant as its super admin by sending the member's id in the OneCard-Tenant header.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&Bearer),
    tags(
        (name = "tenants"), (name = "admins"), (name = "directory"), (name = "users"),
        (name = "audit"), (name = "analytics"), (name = "merchants"), (name = "wallets"), (name = "me"),
        (name = "payments"), (name = "subsidies"), (name = "ledger"), (name = "sandbox"), (name = "operations"),
        (name = "apps"), (name = "checkin"), (name = "booking"), (name = "collection"),
        (name = "shuttle"), (name = "maintenance"), (name = "visitors"), (name = "identity"),
        (name = "cards"), (name = "notifications"), (name = "tenant groups"), (name = "global identity"),
        (name = "settlement"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Apps of the open platform sign each request instead (docs/OPERATIONS.md, "Open
        // platform"); the routes an app's scopes open are listed there.
        components.add_security_scheme(
            "app_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-App-Key",
                "An app's signed request: X-App-Key (the app key), X-Timestamp (unix \
                 seconds, within 5 minutes), X-Nonce (8-64 of A-Z a-z 0-9 _ -, once) and \
                 X-Signature = hex(HMAC-SHA256(app secret, METHOD \\n PATH?QUERY \\n \
                 TIMESTAMP \\n NONCE \\n hex(SHA-256(body)))).",
            ))),
        );
    }
}
