//! The OpenAPI document's frame: info, the bearer scheme and the shared schemas. Paths are
//! collected from the handlers themselves by the route table.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "OneCard API",
        description = "Campus and enterprise e-card platform. Amounts are integer fen; ids are opaque strings; errors are application/problem+json.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&Bearer),
    tags(
        (name = "tenants"), (name = "admins"), (name = "directory"), (name = "users"),
        (name = "audit"), (name = "analytics"), (name = "merchants"), (name = "wallets"), (name = "me"),
        (name = "payments"), (name = "subsidies"), (name = "ledger"), (name = "sandbox"), (name = "operations"),
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
    }
}
