//! The embedded engine: SQLite in WAL mode with exactly one writer.
//!
//! Every write is a job sent to the writer thread. The thread takes whatever jobs are
//! waiting (up to `WRITE_BATCH_MAX`), runs each inside its own savepoint of one
//! transaction and commits once: one sync for many writes (group commit), and a failed
//! job rolls back to its savepoint without touching the others. The sync is not the
//! writer's: it hands the committed jobs to the syncer thread, which syncs the WAL file
//! and only then answers them, while the writer already runs the next transaction (see
//! `syncer_loop`). Reads go to a small pool of read-only connections on blocking threads.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::{oneshot, Semaphore};
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::ids::*;
use crate::model::*;
use crate::store::{
    app_name_taken, check_deletable, check_unchanged, dedup, from_json_text, granted_ids,
    group_in_use, group_name_taken, to_json_text, Store,
};

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// How many queued writes one transaction may carry. Bounded so that one commit never
/// holds the writer for long, and so a burst cannot grow a transaction without end.
const WRITE_BATCH_MAX: usize = 256;
/// Writes waiting for the writer thread before senders wait (back-pressure).
const WRITE_QUEUE_MAX: usize = 4096;
/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// How often the checkpointer thread copies the WAL into the database file. A page
/// written many times within this interval (a busy wallet, the tail of an index) is
/// copied once. Measured on the 2-core bench (`loadtest pay`, SQLite, docs/BENCHMARKS.md):
/// every 5 ms, 8,800 payments/s with p99 24 ms; every 1 s, 11,500/s with p99 12 ms.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The page size of a new database. A payment dirties a page in each of a few B-trees
/// at a random place (its wallet, its code's nonce, its idempotency key, its cardholder's
/// payments), and every dirty page is written whole to the WAL and synced: with 2 KiB
/// pages instead of SQLite's 4 KiB, `loadtest pay` on SQLite made 11–17 % more payments
/// per second (docs/BENCHMARKS.md, twenty-fourth run). 1 KiB was no faster than 2 KiB
/// and deepens every B-tree.
const PAGE_SIZE: u32 = 2048;
/// WAL size after which the writer checkpoints itself, which blocks commits meanwhile.
/// Under sustained load the WAL can only start over after such a checkpoint; the
/// checkpointer thread has copied all but the last moment's pages by then, so it is
/// short. Sized above what a second of the heaviest load writes (about 240 MB/s on the
/// bench with 4 KiB pages), so it does not fire before the checkpointer does. SQLite
/// counts it in pages, of whatever size the database has.
const WRITER_AUTOCHECKPOINT_BYTES: u32 = 256 << 20;

trait WriteJob: Send {
    /// Runs the job inside its savepoint; false means roll the savepoint back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("write job panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let answer = match (commit, self.result) {
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Err(e), _) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
            (Ok(()), None) => Err(StoreError::Unavailable("write job did not run".into())),
        };
        // The caller may have gone away (request cancelled); nothing to do then.
        let _ = self.reply.send(answer);
    }
}

struct ReaderPool {
    path: PathBuf,
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

pub struct SqliteStore {
    writer: mpsc::SyncSender<Box<dyn WriteJob>>,
    readers: Arc<ReaderPool>,
    /// Set once a sync of the WAL failed: the store takes no more writes (`syncer_loop`).
    broken: Arc<AtomicBool>,
    /// Dropped with the store, which stops the checkpointer thread.
    _checkpointer: mpsc::Sender<()>,
}

fn open_conn(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    crate::sqlite_vfs::register()?;
    let conn = Connection::open_with_flags_and_vfs(path, flags, crate::sqlite_vfs::NAME)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")?;
    if !read_only {
        // Takes effect only while the file is new (before the WAL mode below); an older
        // database keeps its page size (docs/OPERATIONS.md says how to change it).
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))?;
        // NORMAL: a commit writes the WAL without syncing it. Every write is answered
        // only after the syncer thread has synced the WAL (`syncer_loop`), so an answered
        // commit survives power loss, not just a process crash. SQLite still syncs on
        // its own around checkpoints and before the WAL starts over.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        // Savepoint journals (one per wallet commit in a group commit) stay in memory
        // instead of a temporary file created and deleted per transaction.
        conn.execute_batch("PRAGMA temp_store = MEMORY;")?;
    }
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// A writing connection that can run the migrations: migration V6 computes the digest of
/// every idempotency record it copies, with a function of ours.
fn migration_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open_conn(path, false)?;
    conn.create_scalar_function(
        "onecard_key_digest",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let (scope, key): (String, String) = (ctx.get(0)?, ctx.get(1)?);
            Ok(crate::sqlite_money::key_digest(&scope, &key).to_vec())
        },
    )?;
    Ok(conn)
}

/// Copies WAL pages into the database file on a connection of its own, so the writer
/// thread (which every commit waits on) does not: a passive checkpoint never blocks the
/// writer or readers. Stops when the store is dropped.
fn checkpointer_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "background checkpoint failed; the writer checkpoints");
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Box<dyn WriteJob>>,
    syncer: mpsc::Sender<Vec<Box<dyn WriteJob>>>,
    broken: Arc<AtomicBool>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if broken.load(Ordering::Acquire) {
            for job in batch {
                job.finish(Err(WAL_SYNC_FAILED.into()));
            }
            continue;
        }
        match run_batch(&mut conn, &mut batch) {
            // Committed, not yet durable: answered by the syncer once it is.
            Ok(()) => {
                if let Err(mpsc::SendError(batch)) = syncer.send(batch) {
                    for job in batch {
                        job.finish(Err("the WAL syncer stopped".into()));
                    }
                }
            }
            Err(e) => {
                for job in batch {
                    job.finish(Err(e.clone()));
                }
            }
        }
    }
}

/// Why writes fail once a sync of the WAL has failed.
const WAL_SYNC_FAILED: &str = "syncing the SQLite WAL failed earlier; restart the server";

/// Answers committed jobs once the WAL that holds them is on disk. It takes every batch
/// the writer has committed since its last sync, syncs the WAL file once and answers them
/// all; meanwhile the writer runs the next transaction instead of waiting for the disk
/// (an fsync took ~1.7 ms of the writer's ~4.8 ms per batch under `loadtest pay`,
/// docs/BENCHMARKS.md). A sync that starts after a commit returned covers that commit's
/// frames, which were all written by then.
///
/// A failed sync leaves it unknown what reached the disk (Linux may drop the pages it
/// could not write), so, as PostgreSQL does, the store stops taking writes: the jobs of
/// that sync and every later write fail, and a restart recovers from what the disk holds.
fn syncer_loop(
    mut wal: WalFile,
    rx: mpsc::Receiver<Vec<Box<dyn WriteJob>>>,
    broken: Arc<AtomicBool>,
) {
    while let Ok(mut jobs) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            jobs.extend(more);
        }
        let synced = if broken.load(Ordering::Acquire) {
            Err(WAL_SYNC_FAILED.to_string())
        } else {
            wal.sync().map_err(|e| {
                broken.store(true, Ordering::Release);
                tracing::error!(error = %e, path = %wal.path.display(),
                    "syncing the SQLite WAL failed; the store takes no more writes until restarted");
                format!("syncing the SQLite WAL failed: {e}")
            })
        };
        for job in jobs {
            job.finish(synced.clone());
        }
    }
}

/// The store's WAL file (`<database>-wal`), opened by the syncer to sync it.
struct WalFile {
    path: PathBuf,
    file: std::fs::File,
}

impl WalFile {
    fn open(db: &Path) -> std::io::Result<Self> {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        let file = std::fs::File::open(&path)?;
        Ok(Self { path, file })
    }

    /// Syncs the WAL's data. SQLite keeps the file while a connection of this store is
    /// open, but should it ever be replaced, the file now at the path is the one synced.
    fn sync(&mut self) -> std::io::Result<()> {
        if !same_file(&self.file.metadata()?, &std::fs::metadata(&self.path)?) {
            self.file = std::fs::File::open(&self.path)?;
        }
        self.file.sync_data()
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string())?;
    // One job alone needs no savepoint: if it fails, the transaction is rolled back.
    if let [job] = batch {
        let ok = job.run(conn);
        let end = if ok { "COMMIT" } else { "ROLLBACK" };
        return conn.execute_batch(end).map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
    }
    for job in batch.iter_mut() {
        let step = conn
            .execute_batch("SAVEPOINT job")
            .and_then(|_| {
                if job.run(conn) {
                    conn.execute_batch("RELEASE job")
                } else {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")
                }
            })
            .map_err(|e| e.to_string());
        if let Err(e) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, applies migrations and starts the
    /// writer, syncer and checkpointer threads.
    pub async fn open(path: &Path, readers: usize) -> StoreResult<Self> {
        let path = path.to_path_buf();
        let readers = readers.clamp(1, 16);
        tokio::task::spawn_blocking(move || Self::open_blocking(path, readers))
            .await
            .map_err(StoreError::backend)?
    }

    fn open_blocking(path: PathBuf, readers: usize) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
            }
        }
        let mut conn = migration_conn(&path).map_err(StoreError::backend)?;
        embedded::migrations::runner()
            .run(&mut conn)
            .map_err(StoreError::backend)?;
        let mut conns = Vec::with_capacity(readers);
        for _ in 0..readers {
            conns.push(open_conn(&path, true).map_err(StoreError::backend)?);
        }
        let page: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(StoreError::backend)?;
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {};",
            WRITER_AUTOCHECKPOINT_BYTES / page.max(512)
        ))
        .map_err(StoreError::backend)?;
        let checkpoint_conn = open_conn(&path, false).map_err(StoreError::backend)?;
        let (stop_tx, stop_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer_loop(checkpoint_conn, stop_rx))
            .map_err(StoreError::backend)?;
        // The migrations opened the WAL (in WAL mode a connection's first read creates
        // it); it stays while the store's connections are open.
        let wal = WalFile::open(&path).map_err(StoreError::backend)?;
        let broken = Arc::new(AtomicBool::new(false));
        let (sync_tx, sync_rx) = mpsc::channel();
        let syncer_broken = broken.clone();
        std::thread::Builder::new()
            .name("sqlite-syncer".into())
            .spawn(move || syncer_loop(wal, sync_rx, syncer_broken))
            .map_err(StoreError::backend)?;
        let (tx, rx) = mpsc::sync_channel::<Box<dyn WriteJob>>(WRITE_QUEUE_MAX);
        let writer_broken = broken.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, sync_tx, writer_broken))
            .map_err(StoreError::backend)?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(ReaderPool {
                path,
                conns: Mutex::new(conns),
                permits: Semaphore::new(readers),
            }),
            broken,
            _checkpointer: stop_tx,
        })
    }

    pub(crate) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(TypedJob {
            work: Some(work),
            result: None,
            reply,
        });
        let writer = self.writer.clone();
        // The queue is bounded; wait for room on a blocking thread, never on the runtime.
        match writer.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || writer.send(job))
                    .await
                    .map_err(StoreError::backend)?
                    .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(StoreError::Unavailable("writer stopped".into()))
            }
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("writer dropped a job".into()))?
    }

    pub(crate) async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let _permit = pool.permits.acquire().await.map_err(StoreError::backend)?;
        let conn = pool.conns.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            // A connection is lost only if a read panicked; open a replacement.
            None => open_conn(&pool.path, true).map_err(StoreError::backend)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = work(&conn);
            (conn, r)
        })
        .await
        .map_err(StoreError::backend)?;
        pool.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        result
    }
}

// --- conversions -----------------------------------------------------------------

/// A UUID bound as the text SQLite stores ids as (hyphenated, lower case), formatted on
/// the stack: the writer binds about seventeen per payment, and `to_string` allocated each.
pub(crate) struct TextUuid([u8; 36]);

impl TextUuid {
    pub(crate) fn new(id: Uuid) -> Self {
        let mut text = [0u8; 36];
        id.hyphenated().encode_lower(&mut text);
        Self(text)
    }
}

impl rusqlite::ToSql for TextUuid {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Text(&self.0),
        ))
    }
}

pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    if unavailable(&e) {
        return StoreError::Unavailable(format!("SQLite: {e}"));
    }
    StoreError::backend(e)
}

/// Whether `e` is the database file being out of reach for now (the disk full or failing,
/// the file locked past the busy timeout, out of memory) rather than a refusal of what was
/// asked: answered 503, to be retried.
fn unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::DatabaseBusy
                | C::DatabaseLocked
                | C::DiskFull
                | C::SystemIoFailure
                | C::CannotOpen
                | C::OutOfMemory
        )
    )
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn ts(ms: i64) -> Timestamp {
    // Every stored time was written from a valid Timestamp, so it converts back.
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(crate) fn uuid_col(row: &Row, idx: usize) -> rusqlite::Result<Uuid> {
    let s: String = row.get(idx)?;
    Uuid::parse_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn opt_uuid_col(row: &Row, idx: usize) -> rusqlite::Result<Option<Uuid>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| Uuid::parse_str(&s)).transpose().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn parse_enum<T>(
    row: &Row,
    idx: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unexpected value {s:?}").into(),
        )
    })
}

pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

pub(crate) fn insert_audit(conn: &Connection, a: &Audit) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (id, tenant_id, actor, action, target_type, target_id, \
         request_id, at, detail) VALUES (?,?,?,?,?,?,?,?,?)",
    )
    .and_then(|mut st| {
        st.execute(params![
            a.id.to_string(),
            a.tenant_id.map(|t| t.to_string()),
            a.actor.as_string(),
            a.action,
            a.target_type,
            a.target_id,
            a.request_id,
            ms(a.at),
            a.detail.to_string(),
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// One statement that must change a row (`NotFound` when it changes none), and its
/// audit entry, inside the caller's write.
pub(crate) fn change_one(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    audit: &Audit,
) -> StoreResult<()> {
    if conn.execute(sql, params).map_err(db)? == 0 {
        return Err(StoreError::NotFound);
    }
    insert_audit(conn, audit)
}

/// The tenant's departments, by id.
fn departments_of(c: &Connection, tenant: TenantId) -> StoreResult<Vec<Department>> {
    let mut st = c
        .prepare_cached(
            "SELECT id, name, parent_id, created_at FROM departments \
             WHERE tenant_id = ? ORDER BY id",
        )
        .map_err(db)?;
    st.query_map([tenant.to_string()], |r| {
        Ok(Department {
            id: DepartmentId(uuid_col(r, 0)?),
            name: r.get(1)?,
            parent_id: opt_uuid_col(r, 2)?.map(DepartmentId),
            created_at: ts(r.get(3)?),
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(db)
}

/// `NotFound` unless row `id` of `table` is the tenant's; then `in_use(why)` for the
/// first of `holders` (a query of the id, `?1`, answering whether something holds the
/// row, and what to say) that finds something.
fn refuse_if_held(
    c: &Connection,
    table: &str,
    tenant: TenantId,
    id: Uuid,
    holders: &[(&str, &str)],
    in_use: fn(&str) -> StoreError,
) -> StoreResult<()> {
    let (id, tenant) = (id.to_string(), tenant.to_string());
    let ours: bool = c
        .query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?1 AND tenant_id = ?2)"),
            params![id, tenant],
            |r| r.get(0),
        )
        .map_err(db)?;
    if !ours {
        return Err(StoreError::NotFound);
    }
    for (sql, why) in holders {
        let held: bool = c.query_row(sql, [&id], |r| r.get(0)).map_err(db)?;
        if held {
            return Err(in_use(why));
        }
    }
    Ok(())
}

pub(crate) fn insert_token(conn: &Connection, t: &NewToken) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO tokens (hash, kind, tenant_id, subject_id, created_at) VALUES (?,?,?,?,?)",
    )
    .and_then(|mut st| {
        st.execute(params![
            &t.hash[..],
            t.kind.as_str(),
            t.tenant_id.map(|x| x.to_string()),
            t.subject_id.map(|x| x.to_string()),
            ms(t.created_at),
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// Checks that every id names a row of `table` in the tenant.
impl SqliteStore {
    /// One row of a tenant's table by its id (`NotFound` when absent, or another
    /// tenant's): read as `R` on the reader, then mapped.
    pub(crate) async fn tenant_row<R: Send + 'static, T: Send + 'static>(
        &self,
        cols: &'static str,
        table: &'static str,
        tenant: TenantId,
        id: Uuid,
        read: fn(&Row) -> rusqlite::Result<R>,
        map: fn(R) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.read(move |c| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {cols} FROM {table} WHERE tenant_id = ? AND id = ?"
                ))
                .and_then(|mut st| {
                    st.query_row([tenant.to_string(), id.to_string()], read)
                        .optional()
                })
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            map(row)
        })
        .await
    }

    /// Every row of one of a tenant's small named tables (groups, apps), by name.
    pub(crate) async fn tenant_rows_by_name<R: Send + 'static, T: Send + 'static>(
        &self,
        cols: &'static str,
        table: &'static str,
        tenant: TenantId,
        read: fn(&Row) -> rusqlite::Result<R>,
        map: fn(R) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {cols} FROM {table} WHERE tenant_id = ? ORDER BY name"
                ))
                .and_then(|mut st| {
                    st.query_map([tenant.to_string()], read)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)?;
            rows.into_iter().map(map).collect()
        })
        .await
    }
}

const APP_COLS: &str = "a.id, a.name, a.kind, a.description, a.logo_url, a.scopes, \
     a.secret_version, a.created_at, a.updated_at, a.webhook_url, a.webhook_events, \
     a.entry_url";
/// Columns after `APP_COLS` start here.
const APP_COLS_END: usize = 12;

struct AppRow {
    id: Uuid,
    name: String,
    kind: AppKind,
    description: Option<String>,
    logo_url: Option<String>,
    scopes: String,
    secret_version: i32,
    created_at: i64,
    updated_at: i64,
    webhook_url: Option<String>,
    webhook_events: String,
    entry_url: Option<String>,
}

fn app_row(r: &Row) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        id: uuid_col(r, 0)?,
        name: r.get(1)?,
        kind: parse_enum(r, 2, AppKind::parse)?,
        description: r.get(3)?,
        logo_url: r.get(4)?,
        scopes: r.get(5)?,
        secret_version: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        webhook_url: r.get(9)?,
        webhook_events: r.get(10)?,
        entry_url: r.get(11)?,
    })
}

fn app_from_row(r: AppRow) -> StoreResult<App> {
    Ok(App {
        id: AppId(r.id),
        name: r.name,
        kind: r.kind,
        description: r.description,
        logo_url: r.logo_url,
        scopes: from_json_text(&r.scopes)?,
        secret_version: r.secret_version,
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
        webhook_url: r.webhook_url,
        webhook_events: from_json_text(&r.webhook_events)?,
        entry_url: r.entry_url,
    })
}

const DELIVERY_COLS: &str = "id, app_id, event_id, kind, status, attempts, next_attempt_at, \
     give_up_at, last_attempt_at, last_status, last_error, delivered_at, event_at, created_at";

fn delivery_row(r: &Row) -> rusqlite::Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: DeliveryId(uuid_col(r, 0)?),
        app_id: AppId(uuid_col(r, 1)?),
        event_id: uuid_col(r, 2)?,
        kind: r.get(3)?,
        status: parse_enum(r, 4, DeliveryStatus::parse)?,
        attempts: r.get(5)?,
        next_attempt_at: r.get::<_, Option<i64>>(6)?.map(ts),
        give_up_at: ts(r.get(7)?),
        last_attempt_at: r.get::<_, Option<i64>>(8)?.map(ts),
        last_status: r.get(9)?,
        last_error: r.get(10)?,
        delivered_at: r.get::<_, Option<i64>>(11)?.map(ts),
        event_at: ts(r.get(12)?),
        created_at: ts(r.get(13)?),
    })
}

/// No other row of the tenant's `table` (groups, apps: PostgreSQL has a unique key for
/// each) has this name; `taken` is the refusal.
pub(crate) fn check_name_free(
    c: &Connection,
    table: &str,
    tenant: TenantId,
    id: Uuid,
    name: &str,
    taken: fn() -> StoreError,
) -> StoreResult<()> {
    let exists: bool = c
        .query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE tenant_id = ? AND name = ? \
                 AND id <> ?)"
            ),
            [tenant.to_string(), name.to_string(), id.to_string()],
            |r| r.get(0),
        )
        .map_err(db)?;
    if exists {
        return Err(taken());
    }
    Ok(())
}

const GROUP_COLS: &str = "id, name, grants, created_at, updated_at";

type GroupRow = (Uuid, String, String, i64, i64);

fn group_row(r: &Row) -> rusqlite::Result<GroupRow> {
    Ok((uuid_col(r, 0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn group_from_row((id, name, grants, created, updated): GroupRow) -> StoreResult<AdminGroup> {
    Ok(AdminGroup {
        id: AdminGroupId(id),
        name,
        grants: from_json_text(&grants)?,
        created_at: ts(created),
        updated_at: ts(updated),
    })
}

/// Every department and tag a group grants exists in the tenant.
fn check_group_refs(c: &Connection, tenant: TenantId, grants: &Grants) -> StoreResult<()> {
    let (departments, tags) = granted_ids(grants);
    check_refs(c, "departments", tenant, &departments, "departments")?;
    check_refs(c, "tags", tenant, &tags, "tags")
}

pub(crate) fn check_refs(
    conn: &Connection,
    table: &str,
    tenant: TenantId,
    ids: &[Uuid],
    field: &'static str,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = ? AND id IN ({})",
        placeholders(ids.len())
    );
    let mut values: Vec<String> = vec![tenant.to_string()];
    values.extend(ids.iter().map(|i| i.to_string()));
    let n: i64 = conn
        .query_row(&sql, rusqlite::params_from_iter(values.iter()), |r| {
            r.get(0)
        })
        .map_err(db)?;
    if n as usize != ids.len() {
        return Err(StoreError::InvalidReference {
            field,
            detail: format!("one or more {field} do not exist"),
        });
    }
    Ok(())
}

pub(crate) const TENANT_COLS: &str =
    "id, name, kind, edition, timezone, settings, created_at, group_id";

pub(crate) fn tenant_from_row(row: &Row) -> rusqlite::Result<Tenant> {
    let settings: String = row.get(5)?;
    Ok(Tenant {
        id: TenantId(uuid_col(row, 0)?),
        name: row.get(1)?,
        kind: parse_enum(row, 2, TenantKind::parse)?,
        edition: parse_enum(row, 3, Edition::parse)?,
        timezone: row.get(4)?,
        settings: serde_json::from_str(&settings).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: ts(row.get(6)?),
        group_id: row
            .get::<_, Option<String>>(7)?
            .map(|g| {
                g.parse().map(TenantGroupId).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        7,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
            })
            .transpose()?,
    })
}

pub(crate) fn load_tenant(conn: &Connection, id: TenantId) -> StoreResult<Tenant> {
    conn.prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?"))
        .and_then(|mut st| st.query_row([id.to_string()], tenant_from_row).optional())
        .map_err(db)?
        .ok_or(StoreError::NotFound)
}

pub(crate) const USER_COLS: &str =
    "id, name, number, phone, id_last4, identity, status, created_at, updated_at";

pub(crate) fn user_from_row(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: UserId(uuid_col(row, 0)?),
        name: row.get(1)?,
        number: row.get(2)?,
        phone: row.get(3)?,
        id_last4: row.get(4)?,
        identity: row.get(5)?,
        status: parse_enum(row, 6, UserStatus::parse)?,
        department_ids: Vec::new(),
        tag_ids: Vec::new(),
        created_at: ts(row.get(7)?),
        updated_at: ts(row.get(8)?),
    })
}

/// Fills in department and tag ids for a page of users with two queries.
fn attach_memberships(conn: &Connection, users: &mut [User]) -> StoreResult<()> {
    if users.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = users.iter().map(|u| u.id.to_string()).collect();
    let index: std::collections::HashMap<Uuid, usize> =
        users.iter().enumerate().map(|(i, u)| (u.id.0, i)).collect();
    for (table, col) in [
        ("user_departments", "department_id"),
        ("user_tags", "tag_id"),
    ] {
        let sql = format!(
            "SELECT user_id, {col} FROM {table} WHERE user_id IN ({}) ORDER BY user_id, {col}",
            placeholders(ids.len())
        );
        let mut st = conn.prepare(&sql).map_err(db)?;
        let mut rows = st
            .query(rusqlite::params_from_iter(ids.iter()))
            .map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let (uid, other) = (uuid_col(row, 0).map_err(db)?, uuid_col(row, 1).map_err(db)?);
            if let Some(&i) = index.get(&uid) {
                if col == "department_id" {
                    users[i].department_ids.push(DepartmentId(other));
                } else {
                    users[i].tag_ids.push(TagId(other));
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn load_user(conn: &Connection, tenant: TenantId, id: UserId) -> StoreResult<User> {
    let user = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLS} FROM users WHERE tenant_id = ? AND id = ?"
        ))
        .and_then(|mut st| {
            st.query_row([tenant.to_string(), id.to_string()], user_from_row)
                .optional()
        })
        .map_err(db)?;
    let mut users = vec![user.ok_or(StoreError::NotFound)?];
    attach_memberships(conn, &mut users)?;
    Ok(users.remove(0))
}

pub(crate) fn number_owner(
    conn: &Connection,
    tenant: TenantId,
    number: &str,
) -> StoreResult<Option<Uuid>> {
    conn.prepare_cached("SELECT id FROM users WHERE tenant_id = ? AND number = ?")
        .and_then(|mut st| {
            st.query_row([tenant.to_string(), number.to_string()], |r| uuid_col(r, 0))
                .optional()
        })
        .map_err(db)
}

pub(crate) fn number_taken() -> StoreError {
    StoreError::conflict(
        "number_taken",
        Some("number"),
        "another user already has this number",
    )
}

fn set_departments(conn: &Connection, user: UserId, ids: &[DepartmentId]) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM user_departments WHERE user_id = ?")
        .and_then(|mut st| st.execute([user.to_string()]))
        .map_err(db)?;
    let mut st = conn
        .prepare_cached("INSERT INTO user_departments (user_id, department_id) VALUES (?, ?)")
        .map_err(db)?;
    for d in dedup(ids) {
        st.execute([user.to_string(), d.to_string()]).map_err(db)?;
    }
    Ok(())
}

fn set_tags(conn: &Connection, user: UserId, ids: &[TagId]) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM user_tags WHERE user_id = ?")
        .and_then(|mut st| st.execute([user.to_string()]))
        .map_err(db)?;
    let mut st = conn
        .prepare_cached("INSERT INTO user_tags (user_id, tag_id) VALUES (?, ?)")
        .map_err(db)?;
    for t in dedup(ids) {
        st.execute([user.to_string(), t.to_string()]).map_err(db)?;
    }
    Ok(())
}

fn check_user_refs(
    conn: &Connection,
    tenant: TenantId,
    departments: &[DepartmentId],
    tags: &[TagId],
) -> StoreResult<()> {
    let d: Vec<Uuid> = dedup(departments).into_iter().map(|x| x.0).collect();
    let t: Vec<Uuid> = dedup(tags).into_iter().map(|x| x.0).collect();
    check_refs(conn, "departments", tenant, &d, "department_ids")?;
    check_refs(conn, "tags", tenant, &t, "tag_ids")
}

fn like_pattern(q: &str) -> String {
    q.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        // A store that can no longer make writes durable is not ready, though it reads.
        if self.broken.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(WAL_SYNC_FAILED.into()));
        }
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
            .await
    }

    async fn insert_root_token_if_none(&self, token: NewToken) -> StoreResult<bool> {
        self.write(move |c| {
            let exists: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE kind = 'root')",
                    [],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if exists {
                return Ok(false);
            }
            insert_token(c, &token)?;
            Ok(true)
        })
        .await
    }

    async fn lookup_token(&self, hash: [u8; 32]) -> StoreResult<Option<TokenRecord>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT t.kind, t.tenant_id, t.subject_id, a.role, n.edition, g.grants, i.manages \
                 FROM tokens t \
                 LEFT JOIN admins a ON t.kind = 'admin' AND a.id = t.subject_id \
                 LEFT JOIN admin_groups g ON g.id = a.group_id \
                 LEFT JOIN users u ON t.kind = 'cardholder' AND u.id = t.subject_id \
                 AND u.status = 'active' \
                 LEFT JOIN identity_types i ON i.tenant_id = u.tenant_id AND i.name = u.identity \
                 LEFT JOIN tenants n ON n.id = t.tenant_id WHERE t.hash = ?",
            )
            .and_then(|mut st| {
                st.query_row([&hash[..]], |r| {
                    let role: Option<String> = r.get(3)?;
                    let edition: Option<String> = r.get(4)?;
                    let grants: Option<String> = r.get(5)?;
                    let manages: Option<String> = r.get(6)?;
                    Ok((
                        TokenRecord {
                            kind: parse_enum(r, 0, TokenKind::parse)?,
                            tenant_id: opt_uuid_col(r, 1)?.map(TenantId),
                            subject_id: opt_uuid_col(r, 2)?,
                            role: role.as_deref().and_then(AdminRole::parse),
                            grants: None,
                            edition: edition.as_deref().and_then(Edition::parse),
                        },
                        grants,
                        manages,
                    ))
                })
                .optional()
            })
            .map_err(db)?
            .map(|(mut record, grants, manages)| {
                record.grants = match grants {
                    Some(g) => Some(from_json_text(&g)?),
                    None => crate::store::managed_grants(manages.as_deref())?,
                };
                Ok(record)
            })
            .transpose()
        })
        .await
    }

    async fn insert_token(&self, token: NewToken, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            insert_token(c, &token)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_id: AdminId,
        admin_token: NewToken,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO tenants ({TENANT_COLS}) VALUES (?,?,?,?,?,?,?,?)"),
                params![
                    tenant.id.to_string(),
                    tenant.name,
                    tenant.kind.as_str(),
                    tenant.edition.as_str(),
                    tenant.timezone,
                    serde_json::to_string(&tenant.settings).map_err(StoreError::backend)?,
                    ms(tenant.created_at),
                    tenant.group_id.map(|g| g.to_string()),
                ],
            )
            .map_err(db)?;
            c.execute(
                "INSERT INTO admins (id, tenant_id, user_id, role, status, created_at, bound_at) \
                 VALUES (?, ?, NULL, 'super_admin', 'active', ?, ?)",
                params![
                    admin_id.to_string(),
                    tenant.id.to_string(),
                    ms(tenant.created_at),
                    ms(tenant.created_at)
                ],
            )
            .map_err(db)?;
            insert_token(c, &admin_token)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant> {
        self.read(move |c| load_tenant(c, id)).await
    }

    async fn update_tenant(
        &self,
        id: TenantId,
        timezone: Option<String>,
        settings: Option<TenantSettings>,
        audit: Audit,
    ) -> StoreResult<Tenant> {
        self.write(move |c| {
            let mut t = load_tenant(c, id)?;
            if let Some(tz) = timezone {
                t.timezone = tz;
            }
            if let Some(s) = settings {
                t.settings = s;
            }
            c.execute(
                "UPDATE tenants SET timezone = ?, settings = ? WHERE id = ?",
                params![
                    t.timezone,
                    serde_json::to_string(&t.settings).map_err(StoreError::backend)?,
                    id.to_string()
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            Ok(t)
        })
        .await
    }

    async fn create_admin(&self, admin: NewAdmin, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_refs(c, "users", admin.tenant_id, &[admin.user_id.0], "user_id")?;
            if let Some(group) = admin.group_id {
                check_refs(c, "admin_groups", admin.tenant_id, &[group.0], "group_id")?;
            }
            let already: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM admins WHERE user_id = ?)",
                    [admin.user_id.to_string()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if already {
                return Err(StoreError::conflict(
                    "already_admin",
                    Some("user_id"),
                    "this user already is (or is being bound as) an admin",
                ));
            }
            c.execute(
                "INSERT INTO admins (id, tenant_id, user_id, role, group_id, status, created_at) \
                 VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                params![
                    admin.id.to_string(),
                    admin.tenant_id.to_string(),
                    admin.user_id.to_string(),
                    admin.role.as_str(),
                    admin.group_id.map(|g| g.to_string()),
                    ms(admin.created_at)
                ],
            )
            .map_err(db)?;
            c.execute(
                "INSERT INTO admin_bindings (hash, admin_id, expires_at) VALUES (?, ?, ?)",
                params![
                    &admin.binding_hash[..],
                    admin.id.to_string(),
                    ms(admin.expires_at)
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn bind_admin(
        &self,
        binding_hash: [u8; 32],
        mut token: NewToken,
        now: Timestamp,
        opener: Option<(TenantId, UserId)>,
        mut audit: Audit,
    ) -> StoreResult<(TenantId, AdminId)> {
        self.write(move |c| {
            let found = c
                .query_row(
                    "SELECT b.admin_id, b.expires_at, b.used_at, a.tenant_id, a.user_id \
                     FROM admin_bindings b JOIN admins a ON a.id = b.admin_id WHERE b.hash = ?",
                    [&binding_hash[..]],
                    |r| {
                        Ok((
                            uuid_col(r, 0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            uuid_col(r, 3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            let (admin, expires, used, tenant, user) = found.ok_or(StoreError::NotFound)?;
            if used.is_some() || ms(now) >= expires {
                return Err(StoreError::Gone);
            }
            let (admin, tenant) = (AdminId(admin), TenantId(tenant));
            if let Some((t, u)) = opener {
                if t != tenant || user.as_deref() != Some(u.to_string().as_str()) {
                    return Err(binding_not_yours());
                }
            }
            c.execute(
                "UPDATE admin_bindings SET used_at = ? WHERE hash = ?",
                params![ms(now), &binding_hash[..]],
            )
            .map_err(db)?;
            c.execute(
                "UPDATE admins SET status = 'active', bound_at = ? WHERE id = ?",
                params![ms(now), admin.to_string()],
            )
            .map_err(db)?;
            token.tenant_id = Some(tenant);
            token.subject_id = Some(admin.0);
            insert_token(c, &token)?;
            audit.tenant_id = Some(tenant);
            audit.target_id = admin.to_string();
            insert_audit(c, &audit)?;
            Ok((tenant, admin))
        })
        .await
    }

    async fn list_admins(
        &self,
        tenant: TenantId,
        page: PageReq<AdminId>,
    ) -> StoreResult<Page<Admin, AdminId>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, user_id, role, status, created_at, bound_at, group_id \
                     FROM admins WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
                )
                .map_err(db)?;
            let after = page.after.map(|a| a.to_string()).unwrap_or_default();
            let rows = st
                .query_map(params![tenant.to_string(), after, page.limit + 1], |r| {
                    Ok(Admin {
                        id: AdminId(uuid_col(r, 0)?),
                        user_id: opt_uuid_col(r, 1)?.map(UserId),
                        role: parse_enum(r, 2, AdminRole::parse)?,
                        group_id: opt_uuid_col(r, 6)?.map(AdminGroupId),
                        status: parse_enum(r, 3, AdminStatus::parse)?,
                        created_at: ts(r.get(4)?),
                        bound_at: r.get::<_, Option<i64>>(5)?.map(ts),
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |a| a.id))
        })
        .await
    }

    async fn delete_admin(&self, tenant: TenantId, id: AdminId, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let row = c
                .query_row(
                    "SELECT role, status FROM admins WHERE tenant_id = ? AND id = ?",
                    [tenant.to_string(), id.to_string()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(db)?;
            let (role, status) = row.ok_or(StoreError::NotFound)?;
            if role == "super_admin" && status == "active" {
                let supers: i64 = c
                    .query_row(
                        "SELECT count(*) FROM admins WHERE tenant_id = ? \
                         AND role = 'super_admin' AND status = 'active'",
                        [tenant.to_string()],
                        |r| r.get(0),
                    )
                    .map_err(db)?;
                if supers <= 1 {
                    return Err(StoreError::conflict(
                        "last_super_admin",
                        None,
                        "a tenant keeps at least one super admin",
                    ));
                }
            }
            c.execute(
                "DELETE FROM tokens WHERE kind = 'admin' AND subject_id = ?",
                [id.to_string()],
            )
            .map_err(db)?;
            c.execute("DELETE FROM admins WHERE id = ?", [id.to_string()])
                .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn create_admin_group(
        &self,
        tenant: TenantId,
        group: AdminGroup,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_group_refs(c, tenant, &group.grants)?;
            check_name_free(
                c,
                "admin_groups",
                tenant,
                group.id.0,
                &group.name,
                group_name_taken,
            )?;
            c.execute(
                "INSERT INTO admin_groups (id, tenant_id, name, grants, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    group.id.to_string(),
                    tenant.to_string(),
                    group.name,
                    to_json_text(&group.grants)?,
                    ms(group.created_at),
                    ms(group.updated_at)
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_admin_groups(&self, tenant: TenantId) -> StoreResult<Vec<AdminGroup>> {
        self.tenant_rows_by_name(
            GROUP_COLS,
            "admin_groups",
            tenant,
            group_row,
            group_from_row,
        )
        .await
    }

    async fn get_admin_group(&self, tenant: TenantId, id: AdminGroupId) -> StoreResult<AdminGroup> {
        self.tenant_row(
            GROUP_COLS,
            "admin_groups",
            tenant,
            id.0,
            group_row,
            group_from_row,
        )
        .await
    }

    async fn update_admin_group(
        &self,
        tenant: TenantId,
        group: AdminGroup,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            check_group_refs(c, tenant, &group.grants)?;
            check_name_free(
                c,
                "admin_groups",
                tenant,
                group.id.0,
                &group.name,
                group_name_taken,
            )?;
            let n = c
                .execute(
                    "UPDATE admin_groups SET name = ?, grants = ?, updated_at = ? \
                     WHERE tenant_id = ? AND id = ?",
                    params![
                        group.name,
                        to_json_text(&group.grants)?,
                        ms(group.updated_at),
                        tenant.to_string(),
                        group.id.to_string()
                    ],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            insert_audit(c, &audit)
        })
        .await
    }

    async fn delete_admin_group(
        &self,
        tenant: TenantId,
        id: AdminGroupId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let used: Option<bool> = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM admins WHERE group_id = g.id) \
                     FROM admin_groups g WHERE g.tenant_id = ? AND g.id = ?",
                    [tenant.to_string(), id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            match used {
                None => return Err(StoreError::NotFound),
                Some(true) => return Err(group_in_use()),
                Some(false) => {}
            }
            c.execute("DELETE FROM admin_groups WHERE id = ?", [id.to_string()])
                .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn create_app(&self, tenant: TenantId, app: App, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(c, "apps", tenant, app.id.0, &app.name, app_name_taken)?;
            c.execute(
                "INSERT INTO apps (id, tenant_id, name, kind, description, logo_url, scopes, \
                 secret_version, created_at, updated_at, webhook_url, webhook_events, \
                 entry_url) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                params![
                    app.id.to_string(),
                    tenant.to_string(),
                    app.name,
                    app.kind.as_str(),
                    app.description,
                    app.logo_url,
                    to_json_text(&app.scopes)?,
                    app.secret_version,
                    ms(app.created_at),
                    ms(app.updated_at),
                    app.webhook_url,
                    to_json_text(&app.webhook_events)?,
                    app.entry_url,
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_apps(&self, tenant: TenantId) -> StoreResult<Vec<App>> {
        self.tenant_rows_by_name(APP_COLS, "apps a", tenant, app_row, app_from_row)
            .await
    }

    async fn get_app(&self, tenant: TenantId, id: AppId) -> StoreResult<App> {
        self.tenant_row(APP_COLS, "apps a", tenant, id.0, app_row, app_from_row)
            .await
    }

    async fn update_app(&self, tenant: TenantId, app: App, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            check_name_free(c, "apps", tenant, app.id.0, &app.name, app_name_taken)?;
            change_one(
                c,
                "UPDATE apps SET name = ?, description = ?, logo_url = ?, scopes = ?, \
                 secret_version = ?, updated_at = ?, webhook_url = ?, webhook_events = ?, \
                 entry_url = ? WHERE tenant_id = ? AND id = ?",
                params![
                    app.name,
                    app.description,
                    app.logo_url,
                    to_json_text(&app.scopes)?,
                    app.secret_version,
                    ms(app.updated_at),
                    app.webhook_url,
                    to_json_text(&app.webhook_events)?,
                    app.entry_url,
                    tenant.to_string(),
                    app.id.to_string()
                ],
                &audit,
            )
        })
        .await
    }

    async fn delete_app(&self, tenant: TenantId, id: AppId, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let found: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM apps WHERE tenant_id = ? AND id = ?)",
                    [tenant.to_string(), id.to_string()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if !found {
                return Err(StoreError::NotFound);
            }
            for table in ["app_nonces", "webhook_deliveries"] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE app_id = ?"),
                    [id.to_string()],
                )
                .map_err(db)?;
            }
            c.execute("DELETE FROM apps WHERE id = ?", [id.to_string()])
                .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn put_app_launch(
        &self,
        app: AppId,
        tenant: TenantId,
        user: UserId,
        hash: [u8; 32],
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO app_launches (hash, app_id, user_id, tenant_id, expires_at) \
                 VALUES (?,?,?,?,?) ON CONFLICT (app_id, user_id) DO UPDATE \
                 SET hash = excluded.hash, expires_at = excluded.expires_at",
                params![
                    &hash[..],
                    app.to_string(),
                    user.to_string(),
                    tenant.to_string(),
                    ms(expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn redeem_app_launch(
        &self,
        app: AppId,
        hash: [u8; 32],
        now: Timestamp,
    ) -> StoreResult<(TenantId, UserId)> {
        self.write(move |c| {
            c.query_row(
                "DELETE FROM app_launches WHERE hash = ? AND app_id = ? AND expires_at > ? \
                 RETURNING tenant_id, user_id",
                params![&hash[..], app.to_string(), ms(now)],
                |r| Ok((TenantId(uuid_col(r, 0)?), UserId(uuid_col(r, 1)?))),
            )
            .optional()
            .map_err(db)?
            .ok_or(StoreError::Gone)
        })
        .await
    }

    async fn lookup_app(&self, id: AppId) -> StoreResult<Option<(TenantId, Edition, App)>> {
        self.read(move |c| {
            let found = c
                .prepare_cached(&format!(
                    "SELECT {APP_COLS}, a.tenant_id, n.edition FROM apps a \
                     JOIN tenants n ON n.id = a.tenant_id WHERE a.id = ?"
                ))
                .and_then(|mut st| {
                    st.query_row([id.to_string()], |r| {
                        Ok((
                            app_row(r)?,
                            uuid_col(r, APP_COLS_END)?,
                            parse_enum(r, APP_COLS_END + 1, Edition::parse)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db)?;
            found
                .map(|(row, tenant, edition)| Ok((TenantId(tenant), edition, app_from_row(row)?)))
                .transpose()
        })
        .await
    }

    async fn use_app_nonce(&self, app: AppId, nonce: String, at: Timestamp) -> StoreResult<bool> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "INSERT INTO app_nonces (app_id, nonce, seen_at) VALUES (?, ?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .and_then(|mut st| st.execute(params![app.to_string(), nonce, ms(at)]))
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn purge_app_nonces(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |c| {
            c.execute("DELETE FROM app_nonces WHERE seen_at < ?", [ms(before)])
                .map(|n| n as u64)
                .map_err(db)
        })
        .await
    }

    async fn webhook_subscriptions(&self) -> StoreResult<Vec<WebhookSubscription>> {
        self.read(move |c| {
            let mut st = c
                .prepare(
                    "SELECT a.tenant_id, n.edition, a.id, a.webhook_events, a.scopes, \
                     a.webhook_url, a.secret_version FROM apps a \
                     JOIN tenants n ON n.id = a.tenant_id WHERE a.webhook_url IS NOT NULL",
                )
                .map_err(db)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        uuid_col(r, 0)?,
                        parse_enum(r, 1, Edition::parse)?,
                        uuid_col(r, 2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i32>(6)?,
                    ))
                })
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(db)?;
            rows.into_iter()
                .map(
                    |(tenant, edition, app, events, scopes, url, secret_version)| {
                        Ok(WebhookSubscription {
                            tenant: TenantId(tenant),
                            edition,
                            app: AppId(app),
                            events: from_json_text(&events)?,
                            scopes: from_json_text(&scopes)?,
                            url,
                            secret_version,
                        })
                    },
                )
                .collect()
        })
        .await
    }

    async fn enqueue_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> StoreResult<Vec<DeliveryId>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |c| {
            let mut st = c
                .prepare_cached(
                    "INSERT INTO webhook_deliveries (id, tenant_id, app_id, event_id, kind, \
                     payload, event_at, give_up_at, created_at, next_attempt_at, attempts, \
                     status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') \
                     ON CONFLICT (app_id, event_id) DO NOTHING",
                )
                .map_err(db)?;
            let mut new = Vec::new();
            for d in deliveries {
                let n = st
                    .execute(params![
                        d.id.to_string(),
                        d.tenant.to_string(),
                        d.app.to_string(),
                        d.event_id.to_string(),
                        d.kind,
                        d.payload,
                        ms(d.event_at),
                        ms(d.give_up_at),
                        ms(d.created_at),
                        ms(d.lease_until.unwrap_or(d.created_at)),
                        i32::from(d.lease_until.is_some())
                    ])
                    .map_err(db)?;
                if n == 1 {
                    new.push(d.id);
                }
            }
            Ok(new)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
        per_app: usize,
        skip: Vec<AppId>,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let skip = to_json_text(&skip)?;
        // One writer: the claim's read and its update cannot interleave with another's.
        self.write(move |c| {
            let mut st = c
                .prepare_cached(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ? \
                     WHERE id IN (SELECT id FROM (SELECT id, next_attempt_at, row_number() \
                       OVER (PARTITION BY app_id ORDER BY next_attempt_at) AS n \
                       FROM webhook_deliveries \
                       WHERE status = 'pending' AND next_attempt_at <= ? \
                       AND app_id NOT IN (SELECT value FROM json_each(?))) \
                       WHERE n <= ? ORDER BY next_attempt_at LIMIT ?) \
                     RETURNING id, tenant_id, app_id, event_id, kind, payload, event_at, \
                     give_up_at, created_at, attempts, \
                     (SELECT webhook_url FROM apps a WHERE a.id = app_id), \
                     (SELECT secret_version FROM apps a WHERE a.id = app_id)",
                )
                .map_err(db)?;
            let args = params![ms(lease_until), ms(now), skip, per_app as i64, limit as i64];
            st.query_map(args, |r| {
                Ok(ClaimedDelivery {
                    delivery: NewDelivery {
                        id: DeliveryId(uuid_col(r, 0)?),
                        tenant: TenantId(uuid_col(r, 1)?),
                        app: AppId(uuid_col(r, 2)?),
                        event_id: uuid_col(r, 3)?,
                        kind: r.get(4)?,
                        payload: r.get(5)?,
                        event_at: ts(r.get(6)?),
                        give_up_at: ts(r.get(7)?),
                        created_at: ts(r.get(8)?),
                        lease_until: Some(lease_until),
                    },
                    attempt: r.get(9)?,
                    // An app whose address was removed after the event: the attempt
                    // fails and the retries wait for an address.
                    url: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                    secret_version: r.get::<_, Option<i32>>(11)?.unwrap_or(0),
                })
            })
            .and_then(Iterator::collect)
            .map_err(db)
        })
        .await
    }

    async fn finish_deliveries(&self, outcomes: Vec<DeliveryOutcome>) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.write(move |c| {
            let mut st = c
                .prepare_cached(
                    "UPDATE webhook_deliveries SET status = ?, last_attempt_at = ?, \
                     last_status = ?, last_error = ?, next_attempt_at = ?, \
                     delivered_at = CASE WHEN ?1 = 'delivered' THEN ?2 END \
                     WHERE id = ? AND attempts = ? AND status = 'pending'",
                )
                .map_err(db)?;
            for o in outcomes {
                st.execute(params![
                    o.status.as_str(),
                    ms(o.at),
                    o.http_status,
                    o.error,
                    o.retry_at.map(ms),
                    o.id.to_string(),
                    o.attempt
                ])
                .map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_deliveries(
        &self,
        tenant: TenantId,
        app: AppId,
        status: Option<DeliveryStatus>,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> StoreResult<Page<WebhookDelivery, DeliveryId>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_deliveries \
                     WHERE tenant_id = ?1 AND app_id = ?2 \
                     AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR id < ?4) \
                     ORDER BY id DESC LIMIT ?5"
                ))
                .map_err(db)?;
            let items = st
                .query_map(
                    params![
                        tenant.to_string(),
                        app.to_string(),
                        status.map(DeliveryStatus::as_str),
                        after.map(|a| a.to_string()),
                        i64::from(limit) + 1
                    ],
                    delivery_row,
                )
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(db)?;
            Ok(paginate(items, limit, |d| d.id))
        })
        .await
    }

    async fn redeliver(
        &self,
        tenant: TenantId,
        app: AppId,
        id: DeliveryId,
        now: Timestamp,
        give_up_at: Timestamp,
        audit: Audit,
    ) -> StoreResult<WebhookDelivery> {
        self.write(move |c| {
            let found = c
                .query_row(
                    &format!(
                        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, \
                         give_up_at = ?, delivered_at = NULL \
                         WHERE tenant_id = ? AND app_id = ? AND id = ? RETURNING {DELIVERY_COLS}"
                    ),
                    params![
                        ms(now),
                        ms(give_up_at),
                        tenant.to_string(),
                        app.to_string(),
                        id.to_string()
                    ],
                    delivery_row,
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            insert_audit(c, &audit)?;
            Ok(found)
        })
        .await
    }

    async fn webhook_backlog(&self) -> StoreResult<(u64, Option<Timestamp>)> {
        self.read(move |c| {
            c.query_row(
                "SELECT count(*), min(created_at) FROM webhook_deliveries \
                 WHERE status = 'pending'",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
            )
            .map(|(n, oldest)| (n.unsigned_abs(), oldest.map(ts)))
            .map_err(db)
        })
        .await
    }

    async fn purge_deliveries(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
                 WHERE created_at < ? AND status <> 'pending' LIMIT ?)",
                params![ms(before), limit as i64],
            )
            .map(|n| n as u64)
            .map_err(db)
        })
        .await
    }

    async fn create_department(
        &self,
        tenant: TenantId,
        dept: Department,
        max_depth: usize,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            if dept.parent_id.is_some() {
                let all = departments_of(c, tenant)?;
                crate::store::department_fits(&all, dept.id, dept.parent_id, max_depth)?;
            }
            let taken: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM departments WHERE tenant_id = ? \
                     AND coalesce(parent_id, '') = ? AND name = ?)",
                    params![
                        tenant.to_string(),
                        dept.parent_id.map(|p| p.to_string()).unwrap_or_default(),
                        dept.name
                    ],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if taken {
                return Err(StoreError::conflict(
                    "department_name_taken",
                    Some("name"),
                    "a sibling department already has this name",
                ));
            }
            c.execute(
                "INSERT INTO departments (id, tenant_id, parent_id, name, created_at) \
                 VALUES (?,?,?,?,?)",
                params![
                    dept.id.to_string(),
                    tenant.to_string(),
                    dept.parent_id.map(|p| p.to_string()),
                    dept.name,
                    ms(dept.created_at)
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_departments(&self, tenant: TenantId) -> StoreResult<Vec<Department>> {
        self.read(move |c| departments_of(c, tenant)).await
    }

    async fn update_department(
        &self,
        tenant: TenantId,
        id: DepartmentId,
        name: String,
        parent: Option<DepartmentId>,
        max_depth: usize,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let all = departments_of(c, tenant)?;
            crate::store::department_move_allowed(&all, id, parent, max_depth)?;
            if all
                .iter()
                .any(|d| d.id != id && d.parent_id == parent && d.name == name)
            {
                return Err(StoreError::conflict(
                    "department_name_taken",
                    Some("name"),
                    "a sibling department already has this name",
                ));
            }
            change_one(
                c,
                "UPDATE departments SET name = ?, parent_id = ? WHERE tenant_id = ? AND id = ?",
                params![
                    name,
                    parent.map(|p| p.to_string()),
                    tenant.to_string(),
                    id.to_string()
                ],
                &audit,
            )
        })
        .await
    }

    async fn delete_department(
        &self,
        tenant: TenantId,
        id: DepartmentId,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let holders = [
                (
                    "SELECT EXISTS (SELECT 1 FROM departments WHERE parent_id = ?1)",
                    "it has sub-departments",
                ),
                (
                    "SELECT EXISTS (SELECT 1 FROM user_departments WHERE department_id = ?1)",
                    "people belong to it",
                ),
                (
                    "SELECT EXISTS (SELECT 1 FROM admin_groups WHERE tenant_id = \
                     (SELECT tenant_id FROM departments WHERE id = ?1) \
                     AND instr(grants, ?1) > 0)",
                    "an admin group grants it",
                ),
                (
                    "SELECT EXISTS (SELECT 1 FROM identity_types WHERE tenant_id = \
                     (SELECT tenant_id FROM departments WHERE id = ?1) \
                     AND instr(manages, ?1) > 0)",
                    "an identity type manages it",
                ),
            ];
            refuse_if_held(
                c,
                "departments",
                tenant,
                id.0,
                &holders,
                crate::store::department_in_use,
            )?;
            change_one(
                c,
                "DELETE FROM departments WHERE tenant_id = ? AND id = ?",
                params![tenant.to_string(), id.to_string()],
                &audit,
            )
        })
        .await
    }

    async fn create_tag(&self, tenant: TenantId, tag: Tag, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let taken: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM tags WHERE tenant_id = ? AND name = ?)",
                    [tenant.to_string(), tag.name.clone()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if taken {
                return Err(StoreError::conflict(
                    "tag_name_taken",
                    Some("name"),
                    "a tag with this name exists",
                ));
            }
            c.execute(
                "INSERT INTO tags (id, tenant_id, name, created_at) VALUES (?,?,?,?)",
                params![
                    tag.id.to_string(),
                    tenant.to_string(),
                    tag.name,
                    ms(tag.created_at)
                ],
            )
            .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_tags(&self, tenant: TenantId) -> StoreResult<Vec<Tag>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, name, created_at FROM tags WHERE tenant_id = ? ORDER BY name",
                )
                .map_err(db)?;
            st.query_map([tenant.to_string()], |r| {
                Ok(Tag {
                    id: TagId(uuid_col(r, 0)?),
                    name: r.get(1)?,
                    created_at: ts(r.get(2)?),
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(db)
        })
        .await
    }

    async fn rename_tag(
        &self,
        tenant: TenantId,
        id: TagId,
        name: String,
        audit: Audit,
    ) -> StoreResult<Tag> {
        self.write(move |c| {
            check_name_free(c, "tags", tenant, id.0, &name, || {
                StoreError::conflict(
                    "tag_name_taken",
                    Some("name"),
                    "a tag with this name exists",
                )
            })?;
            change_one(
                c,
                "UPDATE tags SET name = ? WHERE tenant_id = ? AND id = ?",
                params![name, tenant.to_string(), id.to_string()],
                &audit,
            )?;
            let created_at: i64 = c
                .query_row(
                    "SELECT created_at FROM tags WHERE id = ?",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            Ok(Tag {
                id,
                name,
                created_at: ts(created_at),
            })
        })
        .await
    }

    async fn delete_tag(&self, tenant: TenantId, id: TagId, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let holders = [
                (
                    "SELECT EXISTS (SELECT 1 FROM user_tags WHERE tag_id = ?1)",
                    "people carry it",
                ),
                (
                    "SELECT EXISTS (SELECT 1 FROM admin_groups WHERE tenant_id = \
                     (SELECT tenant_id FROM tags WHERE id = ?1) AND instr(grants, ?1) > 0)",
                    "an admin group grants it",
                ),
            ];
            refuse_if_held(c, "tags", tenant, id.0, &holders, crate::store::tag_in_use)?;
            change_one(
                c,
                "DELETE FROM tags WHERE tenant_id = ? AND id = ?",
                params![tenant.to_string(), id.to_string()],
                &audit,
            )
        })
        .await
    }

    async fn create_user(
        &self,
        tenant: TenantId,
        user: NewUser,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<User> {
        self.write(move |c| {
            if number_owner(c, tenant, &user.number)?.is_some() {
                return Err(number_taken());
            }
            check_user_refs(c, tenant, &user.department_ids, &user.tag_ids)?;
            insert_user(c, tenant, &user, now)?;
            insert_audit(c, &audit)?;
            load_user(c, tenant, user.id)
        })
        .await
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> StoreResult<User> {
        self.read(move |c| load_user(c, tenant, id)).await
    }

    async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<User> {
        self.write(move |c| {
            let current = load_user(c, tenant, id)?;
            if let Some(was) = &patch.expect {
                check_unchanged(&[current], &[(id, was.clone())])?;
            }
            if let Some(number) = &patch.number {
                if number_owner(c, tenant, number)?.is_some_and(|owner| owner != id.0) {
                    return Err(number_taken());
                }
            }
            check_user_refs(
                c,
                tenant,
                patch.department_ids.as_deref().unwrap_or_default(),
                patch.tag_ids.as_deref().unwrap_or_default(),
            )?;
            let sid = id.to_string();
            if let Some(name) = &patch.name {
                c.execute("UPDATE users SET name = ? WHERE id = ?", params![name, sid])
                    .map_err(db)?;
            }
            if let Some(number) = &patch.number {
                c.execute(
                    "UPDATE users SET number = ? WHERE id = ?",
                    params![number, sid],
                )
                .map_err(db)?;
            }
            if let Some(phone) = &patch.phone {
                c.execute(
                    "UPDATE users SET phone = ? WHERE id = ?",
                    params![phone, sid],
                )
                .map_err(db)?;
            }
            if let Some(idn) = &patch.id_number {
                c.execute(
                    "UPDATE users SET id_hash = ?, id_last4 = ? WHERE id = ?",
                    params![
                        idn.as_ref().map(|i| i.hash.to_vec()),
                        idn.as_ref().map(|i| &i.last4),
                        sid
                    ],
                )
                .map_err(db)?;
            }
            if let Some(identity) = &patch.identity {
                c.execute(
                    "UPDATE users SET identity = ? WHERE id = ?",
                    params![identity, sid],
                )
                .map_err(db)?;
            }
            if let Some(status) = patch.status {
                c.execute(
                    "UPDATE users SET status = ? WHERE id = ?",
                    params![status.as_str(), sid],
                )
                .map_err(db)?;
            }
            if let Some(d) = &patch.department_ids {
                set_departments(c, id, d)?;
            }
            if let Some(t) = &patch.tag_ids {
                set_tags(c, id, t)?;
            }
            c.execute(
                "UPDATE users SET updated_at = ? WHERE id = ?",
                params![ms(now), sid],
            )
            .map_err(db)?;
            insert_audit(c, &audit)?;
            load_user(c, tenant, id)
        })
        .await
    }

    async fn delete_user(&self, tenant: TenantId, id: UserId, audit: Audit) -> StoreResult<()> {
        self.write(move |c| {
            let (is_admin, has_wallet): (bool, bool) = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM admins WHERE user_id = u.id), \
                     EXISTS (SELECT 1 FROM wallets WHERE user_id = u.id) \
                     FROM users u WHERE u.tenant_id = ? AND u.id = ?",
                    [tenant.to_string(), id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            check_deletable(is_admin, has_wallet)?;
            c.execute(
                "DELETE FROM tokens WHERE kind = 'cardholder' AND subject_id = ?",
                [id.to_string()],
            )
            .map_err(db)?;
            // The record leaves its person (a person left with one record is dissolved).
            let person: Option<String> = c
                .query_row(
                    "DELETE FROM person_links WHERE user_id = ? RETURNING person_id",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if let Some(p) = person.and_then(|p| p.parse().ok()) {
                crate::sqlite_persons::dissolve_lonely(c, &[PersonId(p)])?;
            }
            c.execute("DELETE FROM users WHERE id = ?", [id.to_string()])
                .map_err(db)?;
            insert_audit(c, &audit)
        })
        .await
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        filter: UserFilter,
        page: PageReq<UserId>,
    ) -> StoreResult<Page<User, UserId>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {USER_COLS} FROM users u WHERE tenant_id = ?");
            let mut values: Vec<String> = vec![tenant.to_string()];
            if let Some(after) = page.after {
                sql.push_str(" AND id > ?");
                values.push(after.to_string());
            }
            if let Some(status) = filter.status {
                sql.push_str(" AND status = ?");
                values.push(status.as_str().into());
            }
            if let Some(q) = &filter.q {
                let p = like_pattern(q);
                sql.push_str(" AND (name LIKE ? ESCAPE '\\' OR number LIKE ? ESCAPE '\\')");
                values.push(format!("%{p}%"));
                values.push(format!("{p}%"));
            }
            if let Some(d) = filter.department_id {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM user_departments m \
                     WHERE m.user_id = u.id AND m.department_id = ?)",
                );
                values.push(d.to_string());
            }
            if let Some(t) = filter.tag_id {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM user_tags m WHERE m.user_id = u.id AND m.tag_id = ?)",
                );
                values.push(t.to_string());
            }
            if let Some(within) = &filter.within {
                // Members of any of the departments, or holders of any of the tags.
                sql.push_str(&format!(
                    " AND (EXISTS (SELECT 1 FROM user_departments m WHERE m.user_id = u.id \
                     AND m.department_id IN ({})) OR EXISTS (SELECT 1 FROM user_tags m \
                     WHERE m.user_id = u.id AND m.tag_id IN ({})))",
                    placeholders(within.department_ids.len()),
                    placeholders(within.tag_ids.len()),
                ));
                values.extend(within.department_ids.iter().map(|d| d.to_string()));
                values.extend(within.tag_ids.iter().map(|t| t.to_string()));
            }
            if let Some(ids) = &filter.ids {
                sql.push_str(&format!(" AND id IN ({})", placeholders(ids.len())));
                values.extend(ids.iter().map(|u| u.to_string()));
            }
            sql.push_str(&format!(" ORDER BY id LIMIT {}", page.limit + 1));
            let mut st = c.prepare(&sql).map_err(db)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(values.iter()), user_from_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            let mut page = paginate(rows, page.limit, |u| u.id);
            attach_memberships(c, &mut page.items)?;
            Ok(page)
        })
        .await
    }

    async fn batch_update_users(
        &self,
        tenant: TenantId,
        update: BatchUserUpdate,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<u64> {
        self.write(move |c| {
            let ids = dedup(&update.user_ids);
            let raw: Vec<Uuid> = ids.iter().map(|u| u.0).collect();
            check_refs(c, "users", tenant, &raw, "user_ids")?;
            if let Some(expect) = &update.expect {
                let users = ids
                    .iter()
                    .map(|id| load_user(c, tenant, *id))
                    .collect::<StoreResult<Vec<_>>>()?;
                check_unchanged(&users, expect)?;
            }
            let mut all_tags = update.add_tag_ids.clone();
            all_tags.extend(&update.remove_tag_ids);
            check_user_refs(
                c,
                tenant,
                update.department_ids.as_deref().unwrap_or_default(),
                &all_tags,
            )?;
            let mut add_tag = c
                .prepare_cached("INSERT OR IGNORE INTO user_tags (user_id, tag_id) VALUES (?, ?)")
                .map_err(db)?;
            let mut remove_tag = c
                .prepare_cached("DELETE FROM user_tags WHERE user_id = ? AND tag_id = ?")
                .map_err(db)?;
            for id in &ids {
                let sid = id.to_string();
                if let Some(status) = update.status {
                    c.execute(
                        "UPDATE users SET status = ? WHERE id = ?",
                        params![status.as_str(), sid],
                    )
                    .map_err(db)?;
                }
                if let Some(identity) = &update.identity {
                    c.execute(
                        "UPDATE users SET identity = ? WHERE id = ?",
                        params![identity, sid],
                    )
                    .map_err(db)?;
                }
                if let Some(d) = &update.department_ids {
                    set_departments(c, *id, d)?;
                }
                for t in &update.add_tag_ids {
                    add_tag.execute([sid.clone(), t.to_string()]).map_err(db)?;
                }
                for t in &update.remove_tag_ids {
                    remove_tag
                        .execute([sid.clone(), t.to_string()])
                        .map_err(db)?;
                }
                c.execute(
                    "UPDATE users SET updated_at = ? WHERE id = ?",
                    params![ms(now), sid],
                )
                .map_err(db)?;
            }
            insert_audit(c, &audit)?;
            Ok(ids.len() as u64)
        })
        .await
    }

    async fn import_users(
        &self,
        tenant: TenantId,
        rows: Vec<NewUser>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<ImportOutcome> {
        self.write(move |c| {
            let mut outcome = ImportOutcome {
                imported: 0,
                created: 0,
                updated: 0,
            };
            let mut update = c
                .prepare_cached(
                    "UPDATE users SET name = ?, phone = coalesce(?, phone), \
                     id_hash = coalesce(?, id_hash), id_last4 = coalesce(?, id_last4), \
                     identity = coalesce(?, identity), updated_at = ? WHERE id = ?",
                )
                .map_err(db)?;
            for row in &rows {
                match number_owner(c, tenant, &row.number)? {
                    Some(existing) => {
                        let id = UserId(existing);
                        update
                            .execute(params![
                                row.name,
                                row.phone,
                                row.id_number.as_ref().map(|i| i.hash.to_vec()),
                                row.id_number.as_ref().map(|i| &i.last4),
                                row.identity,
                                ms(now),
                                id.to_string()
                            ])
                            .map_err(db)?;
                        // An empty cell leaves the user's memberships as they are.
                        if !row.department_ids.is_empty() {
                            set_departments(c, id, &row.department_ids)?;
                        }
                        if !row.tag_ids.is_empty() {
                            set_tags(c, id, &row.tag_ids)?;
                        }
                        outcome.updated += 1;
                    }
                    None => {
                        insert_user(c, tenant, row, now)?;
                        outcome.created += 1;
                    }
                }
            }
            outcome.imported = outcome.created + outcome.updated;
            insert_audit(c, &audit)?;
            Ok(outcome)
        })
        .await
    }

    async fn directory_stats(&self, tenant: TenantId) -> StoreResult<DirectoryStats> {
        self.read(move |c| {
            let t = tenant.to_string();
            let count_by = |sql: &str| -> StoreResult<Vec<CountBy>> {
                let mut st = c.prepare_cached(sql).map_err(db)?;
                st.query_map([&t], |r| {
                    Ok(CountBy {
                        key: r.get(0)?,
                        count: r.get::<_, i64>(1)? as u64,
                    })
                })
                .and_then(|rows| rows.collect())
                .map_err(db)
            };
            let users: i64 = c
                .query_row(
                    "SELECT count(*) FROM users WHERE tenant_id = ?",
                    [&t],
                    |r| r.get(0),
                )
                .map_err(db)?;
            Ok(DirectoryStats {
                users: users as u64,
                by_status: count_by(
                    "SELECT status, count(*) FROM users WHERE tenant_id = ? \
                     GROUP BY status ORDER BY status",
                )?,
                by_identity: count_by(
                    "SELECT identity, count(*) FROM users WHERE tenant_id = ? \
                     GROUP BY identity ORDER BY identity",
                )?,
                by_department: count_by(
                    "SELECT m.department_id, count(*) FROM user_departments m \
                     JOIN users u ON u.id = m.user_id WHERE u.tenant_id = ? \
                     GROUP BY m.department_id ORDER BY m.department_id",
                )?,
            })
        })
        .await
    }

    async fn write_audit(&self, audit: Audit) -> StoreResult<()> {
        self.write(move |c| insert_audit(c, &audit)).await
    }

    async fn list_audit(
        &self,
        tenant: Option<TenantId>,
        filter: AuditFilter,
        page: PageReq<AuditId>,
    ) -> StoreResult<Page<AuditEntry, AuditId>> {
        self.read(move |c| {
            let mut sql = String::from(
                "SELECT id, actor, action, target_type, target_id, request_id, at, detail \
                 FROM audit_log WHERE tenant_id IS ?",
            );
            let mut values: Vec<rusqlite::types::Value> =
                vec![tenant.map(|t| t.to_string()).into()];
            if let Some(after) = page.after {
                sql.push_str(" AND id < ?");
                values.push(after.to_string().into());
            }
            for (col, v) in [
                ("action", &filter.action),
                ("actor", &filter.actor),
                ("target_id", &filter.target_id),
            ] {
                if let Some(v) = v {
                    sql.push_str(&format!(" AND {col} = ?"));
                    values.push(v.clone().into());
                }
            }
            if let Some(from) = filter.from {
                sql.push_str(" AND at >= ?");
                values.push(ms(from).into());
            }
            if let Some(to) = filter.to {
                sql.push_str(" AND at < ?");
                values.push(ms(to).into());
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", page.limit + 1));
            let mut st = c.prepare(&sql).map_err(db)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                    let detail: String = r.get(7)?;
                    Ok(AuditEntry {
                        id: AuditId(uuid_col(r, 0)?),
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        target_type: r.get(3)?,
                        target_id: r.get(4)?,
                        request_id: r.get(5)?,
                        at: ts(r.get(6)?),
                        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            Ok(paginate(rows, page.limit, |a| a.id))
        })
        .await
    }

    async fn idem_begin(
        &self,
        scope: String,
        key: String,
        request_hash: [u8; 32],
        now: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<IdemBegin> {
        self.write(move |c| {
            let found = c
                .prepare_cached(
                    "SELECT request_hash, status, body, created_at FROM idempotency \
                     WHERE scope = ? AND key = ?",
                )
                .and_then(|mut st| {
                    st.query_row([&scope, &key], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, Option<i64>>(1)?,
                            r.get::<_, Option<Vec<u8>>>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db)?;
            let take = || {
                c.prepare_cached(
                    "INSERT INTO idempotency (scope, key, request_hash, created_at) \
                     VALUES (?, ?, ?, ?)",
                )
                .and_then(|mut st| st.execute(params![scope, key, &request_hash[..], ms(now)]))
                .map_err(db)
            };
            Ok(match found {
                None => {
                    take()?;
                    IdemBegin::New
                }
                Some((hash, ..)) if hash != request_hash => IdemBegin::Conflict,
                Some((_, None, _, at)) if at < ms(stale_before) => {
                    // Its request never finished (its node stopped): taken over, as a
                    // new row, so that the purge's walk in rowid order meets it in turn.
                    c.prepare_cached("DELETE FROM idempotency WHERE scope = ? AND key = ?")
                        .and_then(|mut st| st.execute([&scope, &key]))
                        .map_err(db)?;
                    take()?;
                    IdemBegin::New
                }
                Some((_, None, ..)) => IdemBegin::InProgress,
                Some((_, Some(status), body, _)) => IdemBegin::Replay {
                    status: status as u16,
                    body: body.unwrap_or_default(),
                },
            })
        })
        .await
    }

    async fn idem_finish(
        &self,
        scope: String,
        key: String,
        status: u16,
        body: Vec<u8>,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE idempotency SET status = ?, body = ? WHERE scope = ? AND key = ?",
            )
            .and_then(|mut st| st.execute(params![status, body, scope, key]))
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn idem_abort(&self, scope: String, key: String) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM idempotency WHERE scope = ? AND key = ? AND status IS NULL",
            )
            .and_then(|mut st| st.execute([scope, key]))
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn purge_idempotency(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write(move |c| purge_oldest(c, "idempotency", "created_at", before, limit))
            .await
    }
}

/// Deletes, of the `limit` oldest rows of `table` (a rowid table whose rows are written in
/// the order of their time `column`), those whose time is before `before`. Looking at the
/// oldest rows only, the statement never scans the table for rows that are not there, so
/// a purge with nothing to do costs a few page reads; a row written out of time order (a
/// clock step) waits until the rows before it go.
pub(crate) fn purge_oldest(
    c: &Connection,
    table: &'static str,
    column: &'static str,
    before: Timestamp,
    limit: usize,
) -> StoreResult<u64> {
    c.prepare_cached(&format!(
        "DELETE FROM {table} WHERE rowid IN \
         (SELECT rowid FROM (SELECT rowid, {column} FROM {table} ORDER BY rowid LIMIT ?2) \
          WHERE {column} < ?1)"
    ))
    .and_then(|mut st| st.execute(params![ms(before), limit as i64]))
    .map(|n| n as u64)
    .map_err(db)
}

pub(crate) fn insert_user(
    conn: &Connection,
    tenant: TenantId,
    u: &NewUser,
    now: Timestamp,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO users (id, tenant_id, name, number, phone, id_hash, id_last4, identity, \
         status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,'active',?,?)",
    )
    .and_then(|mut st| {
        st.execute(params![
            u.id.to_string(),
            tenant.to_string(),
            u.name,
            u.number,
            u.phone,
            u.id_number.as_ref().map(|i| i.hash.to_vec()),
            u.id_number.as_ref().map(|i| &i.last4),
            u.identity,
            ms(now),
            ms(now)
        ])
    })
    .map_err(db)?;
    let mut dept = conn
        .prepare_cached("INSERT INTO user_departments (user_id, department_id) VALUES (?, ?)")
        .map_err(db)?;
    for d in dedup(&u.department_ids) {
        dept.execute([u.id.to_string(), d.to_string()])
            .map_err(db)?;
    }
    let mut tag = conn
        .prepare_cached("INSERT INTO user_tags (user_id, tag_id) VALUES (?, ?)")
        .map_err(db)?;
    for t in dedup(&u.tag_ids) {
        tag.execute([u.id.to_string(), t.to_string()]).map_err(db)?;
    }
    Ok(())
}

/// Cuts a `limit + 1` result down to `limit` and says where the next page starts.
pub(crate) fn paginate<T, Id: Copy>(
    mut rows: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> Id,
) -> Page<T, Id> {
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(&id)
    } else {
        None
    };
    Page { items: rows, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(c: &Connection, name: &str) -> StoreResult<i64> {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(db)
    }

    /// Opens the store at `path`: its page size and its writer's checkpoint threshold.
    async fn pages_and_checkpoint(path: &Path) -> (i64, i64) {
        let store = SqliteStore::open(path, 1).await.unwrap();
        store
            .write(|c| Ok((pragma(c, "page_size")?, pragma(c, "wal_autocheckpoint")?)))
            .await
            .unwrap()
    }

    #[test]
    fn a_database_out_of_reach_is_unavailable_and_a_refused_write_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY); BEGIN EXCLUSIVE;")
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let locked = other
            .execute("INSERT INTO t (id) VALUES (1)", [])
            .unwrap_err();
        assert!(
            matches!(db(locked), StoreError::Unavailable(_)),
            "a file locked past the busy timeout"
        );
        holder
            .execute_batch("INSERT INTO t (id) VALUES (1); COMMIT;")
            .unwrap();
        let taken = other
            .execute("INSERT INTO t (id) VALUES (1)", [])
            .unwrap_err();
        assert!(
            matches!(db(taken), StoreError::Backend(_)),
            "a constraint is a refusal, not an outage"
        );
    }

    #[test]
    fn a_text_uuid_binds_as_the_id_text_stored_everywhere_else() {
        let c = Connection::open_in_memory().unwrap();
        let id = Uuid::now_v7();
        let (bound, same): (String, bool) = c
            .query_row(
                "SELECT ?1, ?1 = ?2",
                params![TextUuid::new(id), id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(bound, id.to_string());
        assert!(same);
    }

    /// `.cargo/config.toml` builds the bundled SQLite without memory statistics and with a
    /// page cache per connection, so no global mutex is taken per allocation or page.
    #[test]
    fn sqlite_is_built_without_memory_statistics_or_a_shared_page_cache() {
        let c = Connection::open_in_memory().unwrap();
        let options: Vec<String> = c
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "built with memory statistics (is LIBSQLITE3_FLAGS from .cargo/config.toml set?): {options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "built with a shared page cache: {options:?}"
        );
    }

    #[tokio::test]
    async fn a_new_database_has_2_kib_pages_and_its_wal_bound_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (page, ckpt) = pages_and_checkpoint(&dir.path().join("new.db")).await;
        assert_eq!(page, 2048);
        assert_eq!(ckpt, 131_072, "256 MiB of 2 KiB pages");
    }

    #[tokio::test]
    async fn an_older_database_keeps_its_4_kib_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE before_this_release (x);")
            .unwrap();
        let (page, ckpt) = pages_and_checkpoint(&path).await;
        assert_eq!(page, 4096);
        assert_eq!(ckpt, 65_536, "256 MiB of 4 KiB pages");
    }

    /// Migration V6 copies every idempotency record and finds it by its digest: the same
    /// key in two scopes stays two records, and a copied key is still taken.
    #[tokio::test]
    async fn migration_v6_keeps_every_idempotency_record_under_its_digest() {
        use crate::money_store::MoneyStore;
        use crate::wallet::MoneyRequest;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        let old = |scope: &str, status: u16, body: &[u8]| MoneyRequest {
            scope: scope.into(),
            key: "k1".into(),
            request_hash: [status as u8; 32],
            status,
            body: body.to_vec(),
        };
        let (till, user) = (
            old("terminal:t", 201, b"{\"a\":1}"),
            old("user:u", 200, b"{}"),
        );
        {
            let mut c = open_conn(&path, false).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(5))
                .run(&mut c)
                .unwrap();
            for (r, at) in [(&till, 1), (&user, 2)] {
                c.execute(
                    "INSERT INTO money_requests (scope, key, request_hash, status, body, created_at) \
                     VALUES (?,?,?,?,?,?)",
                    params![r.scope, r.key, &r.request_hash[..], r.status, r.body, at],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, 1).await.unwrap();
        for r in [&till, &user] {
            let found = store
                .find_money_request(r.scope.clone(), r.key.clone())
                .await
                .unwrap()
                .expect("the record survives the migration");
            assert_eq!(
                (found.request_hash, found.status, &found.body),
                (r.request_hash, r.status, &r.body)
            );
        }
        let missing = store.find_money_request("terminal:t".into(), "k2".into());
        assert!(missing.await.unwrap().is_none());
        let retry = till.clone();
        let inserted = store
            .write(move |c| {
                crate::sqlite_money::insert_request(c, &retry, Timestamp::UNIX_EPOCH).map_err(db)
            })
            .await
            .unwrap();
        assert!(!inserted, "a copied key is still taken");
        let digests: i64 = store
            .read(|c| {
                c.query_row(
                    "SELECT count(*) FROM money_requests WHERE length(key_digest) = 16",
                    [],
                    |r| r.get(0),
                )
                .map_err(db)
            })
            .await
            .unwrap();
        assert_eq!(digests, 2);
    }

    /// Migration V7 moves every wallet, with all its fields, into a table keyed by its
    /// cardholder alone (WITHOUT ROWID); the arrears index and the version fence still work.
    #[tokio::test]
    async fn migration_v7_keeps_every_wallet_in_a_table_without_rowids() {
        use crate::money_store::MoneyStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        let (tenant, owing, other) = (TenantId::new(), UserId::new(), UserId::new());
        {
            let mut c = migration_conn(&path).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(6))
                .run(&mut c)
                .unwrap();
            c.execute(
                "INSERT INTO tenants (id, name, kind, edition, timezone, settings, created_at) \
                 VALUES (?, 't', 'university', 'standard', 'Asia/Shanghai', '{}', 0)",
                params![tenant.0.to_string()],
            )
            .unwrap();
            for (n, user) in [owing, other].into_iter().enumerate() {
                c.execute(
                    "INSERT INTO users (id, tenant_id, name, number, status, created_at, updated_at) \
                     VALUES (?, ?, 'u', ?, 'active', 0, 0)",
                    params![user.0.to_string(), tenant.0.to_string(), n.to_string()],
                )
                .unwrap();
            }
            c.execute(
                "INSERT INTO wallets (user_id, tenant_id, balance, arrears, version, agreement_signed, \
                   frozen, frozen_until, freeze_count, reminded_on, updated_at) \
                 VALUES (?, ?, 0, 250, 7, 1, 1, 86400000, 2, '2026-11-30', 3000), \
                        (?, ?, 1200, 0, 3, 0, 0, NULL, 0, NULL, 4000)",
                params![
                    owing.0.to_string(),
                    tenant.0.to_string(),
                    other.0.to_string(),
                    tenant.0.to_string()
                ],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, 1).await.unwrap();
        let now = Timestamp::from_second(0).unwrap();
        let w = store.load_wallet(tenant, owing, now).await.unwrap().wallet;
        assert_eq!(
            (
                w.balance.0,
                w.arrears.0,
                w.version,
                w.agreement_signed,
                w.frozen
            ),
            (0, 250, 7, true, true)
        );
        assert_eq!(
            (
                w.frozen_until,
                w.freeze_count,
                w.reminded_on.as_deref(),
                w.updated_at
            ),
            (
                Some(Timestamp::from_second(86_400).unwrap()),
                2,
                Some("2026-11-30"),
                Timestamp::from_millisecond(3000).unwrap()
            )
        );
        let v = store.load_wallet(tenant, other, now).await.unwrap().wallet;
        assert_eq!((v.balance.0, v.version, v.frozen_until), (1200, 3, None));
        let in_arrears: Vec<_> = store
            .wallets_in_arrears()
            .await
            .unwrap()
            .into_iter()
            .map(|w| (w.tenant, w.user, w.reminded_on))
            .collect();
        assert_eq!(in_arrears, vec![(tenant, owing, Some("2026-11-30".into()))]);
        let (without_rowid, arrears_index): (i64, i64) = store
            .read(|c| {
                c.query_row(
                    "SELECT (SELECT wr FROM pragma_table_list WHERE name = 'wallets'), \
                            (SELECT count(*) FROM sqlite_schema WHERE name = 'wallets_arrears')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)
            })
            .await
            .unwrap();
        assert_eq!((without_rowid, arrears_index), (1, 1));
        // The fence: only the version after the stored one is written.
        let (stale, next) = (
            crate::wallet::WalletRow {
                version: 3,
                ..v.clone()
            },
            crate::wallet::WalletRow {
                version: 4,
                balance: crate::money::Money(1100),
                ..v
            },
        );
        let written = store
            .write(move |c| {
                let mut ok = Vec::new();
                for w in [&stale, &next] {
                    ok.push(crate::sqlite_money::upsert_wallet(c, w).map_err(db)?);
                }
                Ok(ok)
            })
            .await
            .unwrap();
        assert_eq!(written, vec![false, true]);
        let v = store.load_wallet(tenant, other, now).await.unwrap().wallet;
        assert_eq!((v.balance.0, v.version), (1100, 4));
    }

    /// Migration V8 keeps every payment and every ledger entry (with its id): payments are
    /// found by tenant and id, a refund's upsert still meets the row it changes, and new
    /// ledger entries take the ids after the last one.
    #[tokio::test]
    async fn migration_v8_keeps_every_payment_and_ledger_entry() {
        use crate::money_store::MoneyStore;
        use crate::wallet::PaymentStatus;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v7.db");
        let (tenant, user) = (TenantId::new(), UserId::new());
        let (merchant, terminal) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let (paid, declined, deferred) = (PaymentId::new(), PaymentId::new(), PaymentId::new());
        let (topup, t) = (uuid::Uuid::now_v7().to_string(), tenant.to_string());
        let (u, m, p) = (user.to_string(), merchant.to_string(), paid.to_string());
        {
            let mut c = migration_conn(&path).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(7))
                .run(&mut c)
                .unwrap();
            c.execute_batch(&format!(
                "INSERT INTO tenants (id, name, kind, edition, timezone, settings, created_at) \
                   VALUES ('{t}', 't', 'university', 'standard', 'Asia/Shanghai', '{{}}', 0); \
                 INSERT INTO users (id, tenant_id, name, number, status, created_at, updated_at) \
                   VALUES ('{u}', '{t}', 'u', '1', 'active', 0, 0); \
                 INSERT INTO merchants (id, tenant_id, parent_id, name, number, single_limit, depth, created_at) \
                   VALUES ('{m}', '{t}', NULL, 'canteen', 'M1', 5000, 1, 0); \
                 INSERT INTO terminals (id, tenant_id, merchant_id, name, created_at) \
                   VALUES ('{terminal}', '{t}', '{m}', 'till', 0); \
                 INSERT INTO wallets (user_id, tenant_id, balance, arrears, version, agreement_signed, \
                     frozen, frozen_until, freeze_count, reminded_on, updated_at) \
                   VALUES ('{u}', '{t}', 880, 0, 3, 0, 0, NULL, 0, NULL, 2000); \
                 INSERT INTO payments (id, tenant_id, user_id, merchant_id, terminal_id, amount, status, \
                     decline_reason, coupon_id, coupon_amount, subsidy_amount, balance_amount, \
                     deferred_amount, subsidy_parts, refunded, created_at, updated_at) \
                   VALUES ('{p}', '{t}', '{u}', '{m}', '{terminal}', 120, 'succeeded', NULL, NULL, \
                           0, 0, 120, 0, '[]', 0, 2000, 2000), \
                          ('{declined}', '{t}', '{u}', '{m}', '{terminal}', 9000, 'declined', \
                           'insufficient_funds', NULL, 0, 0, 0, 0, '[]', 0, 3000, 3000), \
                          ('{deferred}', '{t}', '{u}', '{m}', '{terminal}', 300, 'accepted', NULL, \
                           NULL, 0, 0, 0, 300, '[]', 0, 3500, 3500); \
                 INSERT INTO ledger_entries (tenant_id, tx_id, account, ref_id, amount, payment_id, created_at) \
                   VALUES ('{t}', '{topup}', 'cash', '{u}', 1000, NULL, 1000), \
                          ('{t}', '{topup}', 'topup_clearing', NULL, -1000, NULL, 1000), \
                          ('{t}', '{p}', 'cash', '{u}', -120, '{p}', 2000), \
                          ('{t}', '{p}', 'merchant_receivable', '{m}', 120, '{p}', 2000);"
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path, 1).await.unwrap();
        let got = store.get_payment(tenant, paid).await.unwrap();
        assert_eq!(
            (
                got.amount.0,
                got.status,
                got.breakdown.balance.0,
                got.user_id
            ),
            (120, PaymentStatus::Succeeded, 120, Some(user))
        );
        let listed = store
            .list_payments(
                tenant,
                Default::default(),
                PageReq {
                    after: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        let ids: Vec<PaymentId> = listed.items.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![deferred, declined, paid], "newest first");
        // A wallet's load finds its open payment through the open payments' index.
        let at = Timestamp::from_second(4).unwrap();
        let open = store
            .load_wallet(tenant, user, at)
            .await
            .unwrap()
            .open_payments;
        assert_eq!(
            open.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![deferred]
        );
        let check = store.ledger_check(tenant).await.unwrap();
        assert!(
            check.balanced && check.mismatched_wallets.is_empty(),
            "{check:?}"
        );
        assert_eq!(check.entries, 4);

        let (ids, next_id, key, sequence, tenant_index, refunded, plan) = store
            .write(move |c| {
                // A refund's upsert meets the stored row through the new key.
                let mut refunded = got.clone();
                refunded.status = PaymentStatus::PartiallyRefunded;
                refunded.refunded = crate::money::Money(20);
                crate::sqlite_money::upsert_payment(c, &refunded).map_err(db)?;
                c.execute(
                    "INSERT INTO ledger_entries (tenant_id, tx_id, account, ref_id, amount, payment_id, created_at) \
                     VALUES (?1, ?2, 'topup_clearing', NULL, 0, NULL, 4000)",
                    params![t, topup],
                )
                .map_err(db)?;
                let one = |sql: &str| c.query_row(sql, [], |r| r.get::<_, String>(0)).map_err(db);
                Ok((
                    one("SELECT group_concat(id) FROM (SELECT id FROM ledger_entries WHERE amount <> 0 ORDER BY id)")?,
                    c.last_insert_rowid(),
                    one("SELECT group_concat(name) FROM (SELECT name FROM pragma_table_info('payments') \
                         WHERE pk > 0 ORDER BY pk)")?,
                    one("SELECT '' || count(*) FROM sqlite_sequence WHERE name = 'ledger_entries'")?,
                    one("SELECT '' || count(*) FROM sqlite_schema WHERE name = 'payments_tenant'")?,
                    one("SELECT count(*) || ' ' || sum(refunded) FROM payments")?,
                    c.prepare(&format!("EXPLAIN QUERY PLAN {}", *crate::sqlite_money::OPEN_PAYMENTS))
                        .and_then(|mut st| {
                            st.query_map(["u"], |r| r.get::<_, String>(3))?.collect::<Result<Vec<_>, _>>()
                        })
                        .map_err(db)?
                        .join("; "),
                ))
            })
            .await
            .unwrap();
        assert_eq!(ids, "1,2,3,4");
        assert_eq!(next_id, 5);
        assert_eq!(key, "tenant_id,id");
        assert_eq!((sequence.as_str(), tenant_index.as_str()), ("0", "0"));
        assert_eq!(
            refunded, "3 20",
            "the upsert changed the row, not added one"
        );
        assert!(plan.contains("USING INDEX payments_user_open"), "{plan}");
    }

    /// A job that answers on `rx` with what the syncer says.
    fn job() -> (Box<dyn WriteJob>, oneshot::Receiver<StoreResult<()>>) {
        let (reply, rx) = oneshot::channel();
        let job = TypedJob {
            work: None::<fn(&Connection) -> StoreResult<()>>,
            result: Some(Ok(())),
            reply,
        };
        (Box::new(job), rx)
    }

    #[tokio::test]
    async fn the_syncer_answers_after_syncing_and_refuses_all_once_a_sync_failed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        std::fs::write(dir.path().join("s.db-wal"), b"frames").unwrap();
        let wal = WalFile::open(&db).unwrap();
        let broken = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = broken.clone();
        let syncer = std::thread::spawn(move || syncer_loop(wal, rx, flag));

        let (a, a_rx) = job();
        let (b, b_rx) = job();
        tx.send(vec![a, b]).unwrap();
        assert!(a_rx.await.unwrap().is_ok());
        assert!(b_rx.await.unwrap().is_ok());

        // What a failed sync leaves behind: nothing is answered as durable any more.
        broken.store(true, Ordering::Release);
        let (c, c_rx) = job();
        tx.send(vec![c]).unwrap();
        let err = c_rx.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("restart the server"), "{err}");
        drop(tx);
        syncer.join().unwrap();
    }

    #[test]
    fn a_replaced_wal_file_is_the_one_synced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let path = dir.path().join("r.db-wal");
        std::fs::write(&path, b"first").unwrap();
        let mut wal = WalFile::open(&db).unwrap();
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, b"second").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        let held = |wal: &WalFile| {
            same_file(
                &wal.file.metadata().unwrap(),
                &std::fs::metadata(&path).unwrap(),
            )
        };
        assert!(!held(&wal));
        wal.sync().unwrap();
        assert!(held(&wal), "the syncer now holds the file at the path");
    }

    #[tokio::test]
    async fn a_broken_store_refuses_writes_is_not_ready_and_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("b.db"), 1)
            .await
            .unwrap();
        assert!(store.ping().await.is_ok());
        store.broken.store(true, Ordering::Release);
        let err = store.ping().await.unwrap_err().to_string();
        assert!(err.contains("restart the server"), "{err}");
        let err = store.write(|_| Ok(())).await.unwrap_err().to_string();
        assert!(err.contains("restart the server"), "{err}");
        let one: i64 = store
            .read(|c| c.query_row("SELECT 1", [], |r| r.get(0)).map_err(db))
            .await
            .unwrap();
        assert_eq!(one, 1);
    }

    /// Migration V20 rebuilds `tokens` to admit the `verifier` kind: every token issued
    /// before it (the root's, a till's, a cardholder's) still signs in, and nothing else
    /// is admitted by the new constraint.
    #[tokio::test]
    async fn migration_v20_keeps_every_token_and_admits_verifiers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v19.db");
        let (tenant, till, user) = (TenantId::new(), Uuid::now_v7(), Uuid::now_v7());
        let kinds = [
            ([1u8; 32], "root", None, None),
            ([2u8; 32], "terminal", Some(tenant), Some(till)),
            ([3u8; 32], "cardholder", Some(tenant), Some(user)),
        ];
        {
            let mut c = migration_conn(&path).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(19))
                .run(&mut c)
                .unwrap();
            c.execute(
                "INSERT INTO tenants (id, name, kind, edition, timezone, settings, created_at) \
                 VALUES (?, 't', 'university', 'standard', 'Asia/Shanghai', '{}', 0)",
                params![tenant.0.to_string()],
            )
            .unwrap();
            for (hash, kind, tenant, subject) in &kinds {
                c.execute(
                    "INSERT INTO tokens (hash, kind, tenant_id, subject_id, created_at) \
                     VALUES (?,?,?,?,0)",
                    params![
                        &hash[..],
                        kind,
                        tenant.map(|t| t.to_string()),
                        subject.map(|s| s.to_string())
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, 1).await.unwrap();
        for (hash, kind, tenant, subject) in kinds {
            let t = store
                .lookup_token(hash)
                .await
                .unwrap()
                .expect("still there");
            assert_eq!(
                (t.kind.as_str(), t.tenant_id, t.subject_id),
                (kind, tenant, subject)
            );
        }
        let verifier = NewToken {
            hash: [4u8; 32],
            kind: TokenKind::Verifier,
            tenant_id: Some(tenant),
            subject_id: Some(Uuid::now_v7()),
            created_at: Timestamp::UNIX_EPOCH,
        };
        store
            .write(move |c| insert_token(c, &verifier))
            .await
            .unwrap();
        let refused = store
            .write(|c| {
                c.execute(
                    "INSERT INTO tokens (hash, kind, tenant_id, created_at) \
                     VALUES (x'05', 'nobody', NULL, 0)",
                    [],
                )
                .map_err(db)
            })
            .await;
        assert!(refused.is_err(), "the kind is still checked");
        assert!(store.lookup_token([4u8; 32]).await.unwrap().is_some());
    }

    /// Migrations V37 and V38 fill the withdrawal and top-up registers with the payouts
    /// and credits made before them, from their ledger entries (the holder from the cash
    /// entry), each register with its own kind alone.
    #[tokio::test]
    async fn migrations_v37_and_v38_register_the_movements_made_before_them() {
        use crate::money_store::MoneyStore;
        use crate::wallet::{RegisterFilter, RegisterKind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v36.db");
        let (tenant, user) = (TenantId::new(), UserId::new());
        let (paid_out, topped_up) = (Uuid::now_v7(), Uuid::now_v7());
        {
            let mut c = migration_conn(&path).unwrap();
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(36))
                .run(&mut c)
                .unwrap();
            c.execute(
                "INSERT INTO tenants (id, name, kind, edition, timezone, settings, created_at) \
                 VALUES (?, 't', 'university', 'standard', 'Asia/Shanghai', '{}', 0)",
                params![tenant.0.to_string()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO users (id, tenant_id, name, number, status, created_at, updated_at) \
                 VALUES (?, ?, 'Graduate', 'G-1', 'left', 0, 0)",
                params![user.0.to_string(), tenant.0.to_string()],
            )
            .unwrap();
            let entries = [
                (topped_up, "cash", Some(user.0), 800),
                (topped_up, "topup_clearing", None, -800),
                (paid_out, "cash", Some(user.0), -500),
                (paid_out, "withdrawal_clearing", None, 500),
            ];
            for (tx, account, ref_id, amount) in entries {
                c.execute(
                    "INSERT INTO ledger_entries (tenant_id, tx_id, account, ref_id, amount, created_at) \
                     VALUES (?, ?, ?, ?, ?, 86400000)",
                    params![
                        tenant.0.to_string(),
                        tx.to_string(),
                        account,
                        ref_id.map(|r| r.to_string()),
                        amount
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, 1).await.unwrap();
        let page = PageReq {
            limit: 10,
            after: None,
        };
        let at = Timestamp::from_second(86_400).unwrap();
        let who = (user, "Graduate".to_string(), "G-1".to_string());
        for (kind, tx, amount) in [
            (RegisterKind::Withdrawal, paid_out, 500),
            (RegisterKind::TopUp, topped_up, 800),
        ] {
            let found = store
                .list_register(tenant, kind, RegisterFilter::default(), page)
                .await
                .unwrap();
            let seen: Vec<_> = found
                .items
                .into_iter()
                .map(|w| {
                    let who = (w.user_id, w.name, w.number);
                    (w.id, who, w.amount.0, w.reference, w.by, w.at)
                })
                .collect();
            assert_eq!(
                seen,
                [(tx, who.clone(), amount, None, None, at)],
                "{kind:?}"
            );
        }
    }
}
