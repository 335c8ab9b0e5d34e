//! onecard: the edge. HTTP handlers, auth, problem+json, OpenAPI, config, CLI, the bus,
//! rate limits, websocket sessions. Behaviour lives in `onecard-actors`, data in `onecard-schema`.

pub mod adapter;
pub mod api;
pub mod apps;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod charges;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod deferred;
pub mod extract;
pub mod idempotency;
pub mod import;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod pages;
pub mod problem;
pub mod ratelimit;
pub mod realname;
pub mod retention;
pub mod routes;
pub mod scope;
pub mod startup;
pub mod state;
pub mod tasks;
pub mod telemetry;
pub mod texts;
pub mod webhooks;
pub mod ws;
