//! OneCard's integration tests: one binary, each test against the real server on a
//! random port (see `helpers::spawn_app`).

mod helpers;

mod admins;
mod analytics;
mod apps;
mod booking;
mod browser;
mod cards;
mod charges;
mod checkin;
mod collection;
mod crash;
mod directory;
mod edge;
mod faults;
mod front_end;
mod groups;
mod import;
mod maintenance;
mod money;
mod nodes;
mod notices;
mod people;
mod process;
mod realtime;
mod reports;
mod retention;
mod settlement;
mod shuttle;
mod statements;
mod tenant_groups;
mod tenants;
mod topups;
mod users;
mod visitors;
mod webhooks;
mod withdrawals;
