//! Every limit the edge enforces, in one place, with why. Units come last in the name.

/// Largest JSON request body. Our largest JSON request (a batch update of
/// `BATCH_USERS_MAX` ids) is ~40 KiB.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest import upload. A 10,000-row CSV with every column filled is ~1.5 MiB; XLSX is
/// smaller. 16 MiB leaves room for wide cells without inviting abuse.
pub const IMPORT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Data rows per import (SPEC §2).
pub const IMPORT_ROWS_MAX: usize = 10_000;
/// Total uncompressed size of an XLSX's zip entries: guards against zip bombs.
pub const XLSX_UNCOMPRESSED_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Zip entries in an XLSX; a real workbook has a dozen or two.
pub const XLSX_ENTRIES_MAX: usize = 200;
/// Columns read from an import; the template has 7.
pub const IMPORT_COLUMNS_MAX: usize = 64;
/// Longest cell in an import, in bytes, before the row's rules even run.
pub const IMPORT_CELL_BYTES_MAX: usize = 1024;

/// Page sizes for lists (API.md: 1..500, default 50).
pub const LIST_LIMIT_MAX: u32 = 500;
pub const LIST_LIMIT_DEFAULT: u32 = 50;
/// Users one batch update may touch.
pub const BATCH_USERS_MAX: usize = 1_000;
/// User ids, and numbers, one request may designate as an event's attendees: like a
/// batch, so that the body stays inside `JSON_BODY_BYTES_MAX` (1,000 ids are ~40 KiB).
/// Larger lists go by department or tag, or in several requests.
pub const ATTENDEES_PER_REQUEST_MAX: usize = 1_000;
/// Department and tag ids a single user may carry.
pub const USER_MEMBERSHIPS_MAX: usize = 64;

/// `Idempotency-Key` length (API.md: 1..64 characters).
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 64;
/// Days an idempotency record is kept by default (`ONECARD_IDEMPOTENCY_KEEP_DAYS`): long
/// past any client's retries, yet the records, the largest rows a payment writes, do not
/// pile up for ever.
pub const IDEMPOTENCY_KEEP_DAYS_DEFAULT: usize = 30;
/// How long a node waits for the provider's answer to a deferred debit by default
/// (`ONECARD_PROVIDER_TIMEOUT_MS`). A provider that hangs must not hold one of the node's
/// 64 provider calls, nor keep its payment from being asked again, for ever.
pub const PROVIDER_TIMEOUT_MS_DEFAULT: usize = 20_000;
/// How long a request may take by default before it is answered 503 `unavailable`
/// (`ONECARD_REQUEST_TIMEOUT_MS`): a store that is alive but stalled (a storage stall, a
/// lock held by hand) must not hold a till, nor an HTTP worker's request, for ever. Long
/// enough for the largest import (`IMPORT_BYTES_MAX`) and a 10,000-person subsidy rule.
pub const REQUEST_TIMEOUT_MS_DEFAULT: usize = 10_000;
/// How long `/readyz` waits for each of the store and the bus. A store that hangs is not
/// ready, and says so inside the probe's own timeout (2 s in `k8s/`) rather than past it.
pub const READY_PING_MS: u64 = 1_500;
/// How often each node purges idempotency records past their keep, and how many go per
/// statement (a short write each, between payments).
pub const IDEMPOTENCY_PURGE_S: u64 = 600;
pub const IDEMPOTENCY_PURGE_BATCH: usize = 2_000;
/// How often each node purges personal records past their tenant's retention.
pub const RETENTION_EVERY_S: u64 = 3_600;
/// Records one retention statement deletes.
pub const RETENTION_BATCH: usize = 2_000;
/// The shortest and longest retention a tenant may set, in days.
pub const RETENTION_DAYS_MIN: u32 = 30;
pub const RETENTION_DAYS_MAX: u32 = 3_650;
/// How long an admin binding link stays usable (API.md: 24 h).
pub const ADMIN_BINDING_TTL_S: i64 = 24 * 3600;
/// Longest tenant name, in characters.
pub const TENANT_NAME_CHARS_MAX: usize = 64;
/// A tenant group's name.
pub const TENANT_GROUP_NAME_CHARS_MAX: usize = 64;
/// Member tenants one group report reads (each is a read of the member's own facts).
pub const GROUP_REPORT_TENANTS_MAX: usize = 1_000;
/// Longest admin group name, in characters, and most departments (or tags, or apps) one
/// group may grant: each of a sub-admin's requests checks against them.
pub const ADMIN_GROUP_NAME_CHARS_MAX: usize = 32;
pub const ADMIN_GROUP_GRANTS_MAX: usize = 1_000;
/// An app's signed request must be stamped within this many seconds of the server's clock
/// (SPEC §12: ±5 min), and its nonce is kept long enough to outlast that window on both
/// sides.
pub const APP_CLOCK_WINDOW_S: i64 = 300;
pub const APP_NONCE_KEEP_S: i64 = 900;

/// Default per-token request rate, and its burst; operators can override both
/// (`ONECARD_RATE_LIMIT_PER_S`, `ONECARD_RATE_LIMIT_BURST`). A busy till sends a few
/// requests a second; an integrator's batch job a few hundred.
pub const RATE_LIMIT_PER_S_DEFAULT: u32 = 1_000;
pub const RATE_LIMIT_BURST_DEFAULT: u32 = 2_000;
/// How often idle keys are dropped from the limiter's map (governor never evicts).
pub const RATE_LIMIT_TRIM_S: u64 = 60;

/// Seconds SIGTERM waits for in-flight requests before closing them.
pub const SHUTDOWN_GRACE_S: u64 = 30;
/// Database connections (PostgreSQL) or reader connections (SQLite) by default.
pub const DB_POOL_SIZE_DEFAULT: usize = 16;

/// Visitors' requests (sent without a token) one client address may make: a burst for a
/// visitor centre's shared network, then one every `60 / VISITOR_REQUESTS_PER_MINUTE`
/// seconds. Past it, 429 with Retry-After.
pub const VISITOR_REQUESTS_BURST: u32 = 20;
pub const VISITOR_REQUESTS_PER_MINUTE: u32 = 6;
/// Requests a host may have waiting for a decision; more are refused (409 `host_busy`)
/// until they decide some, so that nobody can bury a host in requests.
pub const HOST_PENDING_MAX: u32 = 50;

/// Card claims and phone-code requests (sent without a token) one client address may make:
/// each guesses at who someone is, so after a burst for a shared campus network, one every
/// `60 / CLAIMS_PER_MINUTE` seconds. Past it, 429 with Retry-After.
pub const CLAIMS_BURST: u32 = 20;
pub const CLAIMS_PER_MINUTE: u32 = 6;
/// A phone code: how long it is accepted, how soon another may be texted to the same
/// phone, and how many wrong tries use it up.
pub const PHONE_CODE_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);
pub const PHONE_CODE_GAP: jiff::SignedDuration = jiff::SignedDuration::from_mins(1);
pub const PHONE_CODE_TRIES: i32 = 5;
/// How long a claim ticket from the tenant's channel is accepted.
pub const CLAIM_TICKET_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(30);
/// The largest card cover accepted (SPEC §4: under 1 MiB), and its exact size.
pub const COVER_BYTES_MAX: usize = 1024 * 1024;
pub const COVER_WIDTH: usize = 1000;
pub const COVER_HEIGHT: usize = 600;
/// A front end's logo: at most 256 KiB, square, 64 to 1024 px a side.
pub const LOGO_BYTES_MAX: usize = 256 * 1024;
pub const LOGO_PX_MIN: usize = 64;
pub const LOGO_PX_MAX: usize = 1024;
/// The name a front end's pages show, in characters.
pub const FRONT_END_TITLE_CHARS_MAX: usize = 20;
/// A front end's address, in characters.
pub const PUBLIC_URL_CHARS_MAX: usize = 200;
/// How long OneCard waits for a tenant's identity endpoint.
pub const IDENTITY_ENDPOINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long OneCard waits for the SMS gateway adapter to take a text.
pub const TEXT_GATEWAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a real-name registry adapter has to answer a check.
pub const REAL_NAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a global-identity link code stays good: long enough to open the other
/// tenant's card on the same phone or another, short enough that a code shown on a
/// screen is not worth keeping.
pub const LINK_CODE_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

/// The most a tenant may let one online top-up be: 10,000 yuan.
pub const ONLINE_TOPUP_MAX_FEN: i64 = 1_000_000;
/// How long a cardholder has to pay an online top-up at the provider before it is closed.
pub const CHARGE_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);
/// Online top-ups a cardholder may have open (unpaid) at once.
pub const CHARGES_PENDING_MAX: u32 = 3;
/// How often each node asks the provider about charges still open, and how old one must be
/// before it does (the provider's own notice usually comes first).
pub const CHARGE_SCAN_S: u64 = 30;
pub const CHARGE_ASK_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_mins(1);
/// Charges one round asks about at most.
pub const CHARGE_SCAN_BATCH: u32 = 500;
