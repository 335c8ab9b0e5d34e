//! A VFS over SQLite's default one that writes a transaction's WAL frames in a few system
//! calls instead of two per frame.
//!
//! SQLite appends each WAL frame as two writes, its 24-byte header and then its page, so a
//! group commit of ~30 payments made ~180 `pwrite` calls, and the writer thread spent as
//! much time in the kernel as in SQLite (docs/BENCHMARKS.md). This VFS holds the appended
//! frames of the WAL file in memory and writes them, in runs of up to `HOLD_MAX` bytes,
//! once the commit frame (the one whose header carries the database size) is complete.
//! Every other file, and every other operation on the WAL, goes straight to the default
//! VFS.
//!
//! Why this keeps SQLite's guarantees:
//! - Nothing committed is held. SQLite writes a commit's frames (`walFrames`), and only
//!   after the last of them publishes the commit in the WAL index; the commit frame is
//!   the last frame appended, and its page completes the run, which is then written
//!   before the write call returns. So readers and the checkpointer, which read frames
//!   through handles of their own, only ever look at frames that have reached the file,
//!   and when the writer thread hands a batch to the syncer (`sqlite.rs`), the WAL file
//!   already holds all of it.
//! - Only appends in SQLite's own pattern are held: a run starts with the WAL header (32
//!   bytes at offset 0) or a frame header that is not a commit's, and grows only by writes
//!   that continue it. Anything else (a page rewritten in place, a checksum rewritten
//!   after a spill, a commit frame's header when nothing is held) first writes out what
//!   is held and then goes through as it came, so the file sees the same bytes in the
//!   same order, merely in fewer calls.
//! - Every other operation on the WAL (read, sync, truncate, size, close, file control)
//!   first writes out what is held. Frames of a transaction still open (a spilled page
//!   cache) may be held until then; no reader may use them before their commit anyway.
//! - A failed write of a held run is reported by the call that wrote it: the commit frame's
//!   page (so the commit fails) or the operation that flushed it.

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open the store's files with.
pub(crate) const NAME: &CStr = c"onecard-wal";

const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
/// At most this much is held before it is written, so a big transaction (a 10,000-user
/// import) goes out in runs of this size. Below 128 KiB: the default Unix VFS writes at
/// most 128 KiB - 1 bytes a call (`seekAndWriteFd` masks the length with 0x1ffff, and a
/// write it cuts to nothing reads as a full disk).
const HOLD_MAX: usize = 127 << 10;

#[cfg(test)]
thread_local! {
    /// Writes this thread passed to the default VFS for WAL files (held runs and direct
    /// writes), for the tests to see the gathering at work.
    static WAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Of those, writes that were not appends in SQLite's pattern and went through as
    /// they came (pages and checksums rewritten in place).
    static WAL_DIRECT_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The default VFS this one wraps, and whether registering succeeded.
static REGISTERED: OnceLock<Result<usize, c_int>> = OnceLock::new();

/// Registers the VFS (once per process) on top of SQLite's default VFS.
pub(crate) fn register() -> rusqlite::Result<()> {
    let registered = REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are thread-safe in the
        // bundled build (SQLITE_THREADSAFE=1). The copied VFS is leaked, so it lives as
        // long as the process, as SQLite requires of a registered VFS.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs: ffi::sqlite3_vfs = *base;
            vfs.zName = NAME.as_ptr();
            vfs.szOsFile = c_int::try_from(real_offset() + (*base).szOsFile as usize)
                .map_err(|_| ffi::SQLITE_ERROR)?;
            vfs.xOpen = Some(open);
            vfs.pNext = std::ptr::null_mut();
            let vfs = Box::leak(Box::new(vfs));
            match ffi::sqlite3_vfs_register(vfs, 0) {
                ffi::SQLITE_OK => Ok(base as usize),
                rc => Err(rc),
            }
        }
    });
    match registered {
        Ok(_) => Ok(()),
        Err(rc) => Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(*rc),
            Some("registering the WAL-gathering VFS failed".into()),
        )),
    }
}

fn base_vfs() -> *mut ffi::sqlite3_vfs {
    match REGISTERED.get() {
        Some(Ok(base)) => *base as *mut ffi::sqlite3_vfs,
        _ => std::ptr::null_mut(),
    }
}

/// A WAL file opened through this VFS. SQLite allocates `szOsFile` bytes for it: this
/// struct, then the default VFS's own file object at `real_offset()`.
#[repr(C)]
struct GatheringWal {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Bytes appended but not yet written, which belong at `held_at` in the file.
    held: Vec<u8>,
    held_at: i64,
    /// Where the page of a held commit frame will land, if its header is held.
    commit_page_at: Option<i64>,
}

fn real_offset() -> usize {
    std::mem::size_of::<GatheringWal>().next_multiple_of(16)
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: a WAL file is never memory-mapped and has no shared memory of its own.
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Opens WAL files as `GatheringWal`s; every other file is the default VFS's own object
/// at the start of the allocation, untouched.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = base_vfs();
    let Some(base_open) = base.as_ref().and_then(|b| b.xOpen) else {
        (*file).pMethods = std::ptr::null();
        return ffi::SQLITE_ERROR;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        return base_open(base, name, file, flags, out_flags);
    }
    let real = file
        .cast::<u8>()
        .add(real_offset())
        .cast::<ffi::sqlite3_file>();
    let rc = base_open(base, name, real, flags, out_flags);
    // SQLite calls xClose whenever pMethods is set, even after a failed open; the default
    // VFS's object decides that, and this one follows it.
    if (*real).pMethods.is_null() {
        (*file).pMethods = std::ptr::null();
        return rc;
    }
    file.cast::<GatheringWal>().write(GatheringWal {
        base: ffi::sqlite3_file {
            pMethods: &WAL_METHODS,
        },
        real,
        held: Vec::new(),
        held_at: 0,
        commit_page_at: None,
    });
    rc
}

/// SAFETY (for every method below): SQLite calls them only with a file `open` set up as a
/// `GatheringWal` (their table is set on nothing else), from one thread at a time per file.
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut GatheringWal {
    &mut *file.cast::<GatheringWal>()
}

unsafe fn methods(w: &GatheringWal) -> &ffi::sqlite3_io_methods {
    &*(*w.real).pMethods
}

/// Writes what is held, if anything.
unsafe fn flush(w: &mut GatheringWal) -> c_int {
    if w.held.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Ok(len) = c_int::try_from(w.held.len()) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let rc = real_write(w, w.held.as_ptr().cast(), len, w.held_at);
    w.held.clear();
    w.commit_page_at = None;
    rc
}

unsafe fn real_write(w: &GatheringWal, data: *const c_void, amt: c_int, offset: i64) -> c_int {
    #[cfg(test)]
    WAL_WRITES.with(|n| n.set(n.get() + 1));
    match methods(w).xWrite {
        Some(f) => f(w.real, data, amt, offset),
        None => ffi::SQLITE_IOERR_WRITE,
    }
}

/// A frame header whose "database size after commit" field is set marks a commit frame.
fn is_commit_header(bytes: &[u8]) -> bool {
    bytes.len() == FRAME_HEADER && bytes[4..8] != [0; 4]
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    let w = wal(file);
    let Ok(len) = usize::try_from(amt) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
    if !w.held.is_empty() {
        let continues = offset == w.held_at + w.held.len() as i64;
        if !continues || w.held.len() + len > HOLD_MAX {
            let rc = flush(w);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
    }
    let commit_header = is_commit_header(bytes);
    if w.held.is_empty() {
        let starts_run =
            (offset == 0 && len == WAL_HEADER) || (len == FRAME_HEADER && !commit_header);
        if !starts_run {
            #[cfg(test)]
            WAL_DIRECT_WRITES.with(|n| n.set(n.get() + 1));
            return real_write(w, data, amt, offset);
        }
        w.held_at = offset;
    }
    let completes_commit = w.commit_page_at == Some(offset);
    w.held.extend_from_slice(bytes);
    w.commit_page_at = commit_header.then_some(offset + FRAME_HEADER as i64);
    if completes_commit {
        return flush(w);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let w = wal(file);
    let flushed = flush(w);
    let closed = match methods(w).xClose {
        Some(f) => f(w.real),
        None => ffi::SQLITE_OK,
    };
    std::ptr::drop_in_place(file.cast::<GatheringWal>());
    (*file).pMethods = std::ptr::null();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

/// Generates a method that writes out what is held and then forwards the call.
macro_rules! flush_then_forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            let w = wal(file);
            let rc = flush(w);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            match methods(w).$method {
                Some(f) => f(w.real, $($arg),*),
                None => ffi::SQLITE_IOERR,
            }
        }
    };
}

/// Generates a method that only forwards the call (locks and device properties, which do
/// not touch the file's bytes).
macro_rules! forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            let w = wal(file);
            match methods(w).$method {
                Some(f) => f(w.real, $($arg),*),
                None => $missing,
            }
        }
    };
}

flush_then_forward!(read, xRead, (data: *mut c_void, amt: c_int, offset: i64));
flush_then_forward!(truncate, xTruncate, (size: i64));
flush_then_forward!(sync, xSync, (flags: c_int));
flush_then_forward!(file_size, xFileSize, (size: *mut i64));
flush_then_forward!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
forward!(lock, xLock, (level: c_int), ffi::SQLITE_OK);
forward!(unlock, xUnlock, (level: c_int), ffi::SQLITE_OK);
forward!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_OK);
forward!(sector_size, xSectorSize, (), 4096);
forward!(device_characteristics, xDeviceCharacteristics, (), 0);

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    fn open(path: &std::path::Path) -> Connection {
        register().unwrap();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let c = Connection::open_with_flags_and_vfs(path, flags, NAME).unwrap();
        c.execute_batch(
            "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0;",
        )
        .unwrap();
        c
    }

    /// A fresh database in its own directory, with `setup` run on it.
    fn fresh(name: &str, setup: &str) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let c = open(&path);
        c.execute_batch(setup).unwrap();
        (dir, path, c)
    }

    /// What a crash right now would leave: the database and WAL files as they are,
    /// copied aside and opened with SQLite's default VFS (which recovers from the WAL).
    fn crash_copy(dir: &std::path::Path, path: &std::path::Path) -> Connection {
        let copy = dir.join("copy.db");
        std::fs::copy(path, &copy).unwrap();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut copy_wal = copy.as_os_str().to_owned();
        copy_wal.push("-wal");
        std::fs::copy(&wal, &copy_wal).unwrap();
        Connection::open(&copy).unwrap()
    }

    fn contents(c: &Connection) -> Vec<(i64, String)> {
        let mut s = c.prepare("SELECT id, body FROM t ORDER BY id").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn every_commit_is_in_the_wal_file_when_it_returns_in_few_writes() {
        let (dir, path, c) = fresh(
            "gather.db",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        );
        let before = WAL_WRITES.with(|n| n.get());
        for round in 0..20_i64 {
            let tx = c.unchecked_transaction().unwrap();
            // ~100 rows of 300 bytes: a transaction of ~20 frames.
            for i in 0..100 {
                tx.execute(
                    "INSERT OR REPLACE INTO t (id, body) VALUES (?1, ?2)",
                    rusqlite::params![
                        i * 7 % 150 + round % 3,
                        format!("{round}:{i}:{}", "x".repeat(290))
                    ],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            // Each commit must be whole in the files the moment it returns.
            let copy = crash_copy(dir.path(), &path);
            assert_eq!(contents(&copy), contents(&c), "after round {round}");
            let ok: String = copy
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok");
        }
        let frames: i64 = c
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap();
        let writes = WAL_WRITES.with(|n| n.get()) - before;
        assert!(frames > 200, "{frames} frames");
        assert!(
            writes < frames as u64 / 2,
            "{writes} writes for {frames} frames"
        );
    }

    #[test]
    fn a_transaction_that_spills_and_rewrites_pages_is_whole_after_commit() {
        let (dir, path, c) = fresh(
            "spill.db",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             PRAGMA cache_size = 10;",
        );
        let direct_before = WAL_DIRECT_WRITES.with(|n| n.get());
        let tx = c.unchecked_transaction().unwrap();
        // Far more pages than the cache holds: SQLite spills frames to the WAL
        // mid-transaction, then writes some of the same pages again (rewritten in place,
        // with the frames' checksums recomputed at commit).
        for pass in 0..3 {
            for i in 0..2_000_i64 {
                tx.execute(
                    "INSERT OR REPLACE INTO t (id, body) VALUES (?1, ?2)",
                    rusqlite::params![i, format!("{pass}:{i}:{}", "y".repeat(200))],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        // The in-place path ran: spilled pages written again, and their checksums.
        assert!(WAL_DIRECT_WRITES.with(|n| n.get()) > direct_before);
        let copy = crash_copy(dir.path(), &path);
        let rows = contents(&copy);
        assert_eq!(rows.len(), 2_000);
        assert!(rows.iter().all(|(i, b)| b.starts_with(&format!("2:{i}:"))));
        assert_eq!(rows, contents(&c));
        let ok: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }

    #[test]
    fn a_rolled_back_transaction_leaves_the_last_commit() {
        let (dir, path, c) = fresh(
            "rollback.db",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             PRAGMA cache_size = 10;
             INSERT INTO t VALUES (1, 'kept');",
        );
        {
            let tx = c.unchecked_transaction().unwrap();
            for i in 2..3_000_i64 {
                tx.execute(
                    "INSERT INTO t VALUES (?1, ?2)",
                    rusqlite::params![i, "z".repeat(300)],
                )
                .unwrap();
            }
            tx.rollback().unwrap();
        }
        c.execute("INSERT INTO t VALUES (2, 'after')", []).unwrap();
        let copy = crash_copy(dir.path(), &path);
        assert_eq!(
            contents(&copy),
            vec![(1, "kept".to_string()), (2, "after".to_string())]
        );
    }
}
