//! `loadtest`: drives real HTTP load at a OneCard server and prints what it measured.
//!
//! It speaks to the server only over HTTP. Give it `--url` of a running server, or
//! `--spawn <path to onecard>` to start one on a free port (with `--database-url` to pick
//! the engine) and stop it afterwards, so that one command measures one configuration.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

mod apps;
mod checkin;
mod collect;
mod conn;
mod hooks;
mod online;
mod pay;
mod ws;

/// The loader shares the machine with the server it measures, so its own CPU per request
/// counts against every target: the same allocator as the server (glibc's malloc took
/// ~15 % of the loader's samples under `loadtest pay`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load and timing runs against a OneCard server"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time user imports: a fresh tenant per run, a CSV of --rows users, median of --runs.
    Import {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Time a subsidy rule's approval: a fresh tenant per run with --people students
    /// imported, one rule for them all, approved by a second admin; median of --runs.
    Grant {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        people: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Time a batch withdrawal: a fresh tenant per run with --people students imported and
    /// topped up, then the whole class's balances paid out in one request; median of --runs.
    Withdraw {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        people: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Time top-ups from a file: a fresh tenant per run with --people students imported,
    /// then one file crediting each of them; then, side by side in another fresh tenant,
    /// the same file with a bank reference on each row, and that file uploaded again under
    /// a new key (every row already credited); medians of --runs.
    Topups {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        people: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Online top-ups beside the admin API's: a fresh tenant with --people, everyone
    /// topped up by the admin, then online with the provider's notice, then online with
    /// the notice lost and the phone asking, --phones at a time; every wallet and the
    /// register checked after.
    Online {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 2_000)]
        people: usize,
        #[arg(long, default_value_t = 64)]
        phones: usize,
    },
    /// Time a notice to everyone: a fresh tenant per run with --people imported (each with
    /// a phone), texts through the sandbox gateway at a limit above the run's rate, from
    /// the send to the last delivery recorded; median of --runs.
    Notify {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        people: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// End-to-end payments over HTTP: tills paying with prefetched codes of random
    /// cardholders. `--hot` puts every till at one stall.
    Pay {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 64)]
        tills: usize,
        #[arg(long, default_value_t = 10_000)]
        cardholders: usize,
        #[arg(long, default_value_t = 60_000)]
        payments: usize,
        #[arg(long)]
        hot: bool,
        /// Write every payment's start (µs since the payments began) and latency (µs) to
        /// this CSV file, to see when the slow ones happened.
        #[arg(long)]
        latency_log: Option<std::path::PathBuf>,
        /// Register an app (advanced edition) whose webhook wants every
        /// `payment.succeeded`, at a receiver inside the loader that answers 200, and
        /// report how the deliveries kept up.
        #[arg(long)]
        webhook: bool,
    },
    /// The naive peer: one SQL transaction per payment (SELECT … FOR UPDATE, UPDATE,
    /// INSERT, COMMIT) straight on PostgreSQL, at several concurrencies.
    Naive {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 10_000)]
        cardholders: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, value_delimiter = ',', default_value = "8,16,32,64")]
        clients: Vec<usize>,
        /// Every payment also updates one merchant's totals row.
        #[arg(long)]
        hot: bool,
    },
    /// Websockets on one node: hold --connections (client sockets bound to several
    /// 127.0.0.x), report RSS per connection, then the 201-to-event latency at tills under
    /// --rate payments/s and the fan-out of single events to --dashboards subscribers.
    Ws {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 50_000)]
        connections: usize,
        #[arg(long, default_value_t = 4)]
        source_ips: u8,
        #[arg(long, default_value_t = 64)]
        tills: usize,
        /// Payments per second during the latency phase (half the measured maximum).
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 10_000)]
        dashboards: usize,
        #[arg(long, default_value_t = 20)]
        fanout_events: usize,
    },
    /// An app's signed read against an admin's bearer read of the same user, side by
    /// side: bearer, signed, bearer.
    Apps {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// A lecture hall checking in to one event at once, then scanning again.
    Checkin {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 5000)]
        people: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// A canteen's lunch: everyone pays once at a till, then once at a stall's collection
    /// code from their phone, then is counted at the door; the two payment rates side by
    /// side.
    Collect {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 5000)]
        people: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// The HTTP ceiling: how fast this loader can get `/healthz` answered.
    Healthz {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(Args, Clone)]
struct Target {
    /// Base URL of a running server.
    #[arg(long, conflicts_with = "spawn")]
    url: Option<String>,
    /// Root token of that server (with --url).
    #[arg(long, env = "ONECARD_ROOT_TOKEN")]
    root_token: Option<String>,
    /// Start this onecard binary on a free local port for the run.
    #[arg(long)]
    spawn: Option<String>,
    /// With --spawn: the database (default: SQLite in a temporary directory).
    #[arg(long)]
    database_url: Option<String>,
}

/// A server this run started; stopped (SIGTERM, then kill) when dropped.
struct Spawned {
    child: Child,
    pid: u32,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

struct Server {
    base: String,
    root: String,
    /// The spawned server uses a PostgreSQL on this machine: its CPU is reported too.
    local_postgres: bool,
    _spawned: Option<Spawned>,
}

/// CPU time (user + system) a process has used so far, in seconds, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, as on every Linux this runs on).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of each PostgreSQL process on this machine (`comm` is `postgres`), by pid:
/// the database's share of a run whose PostgreSQL is local, as every benchmark here is.
fn local_postgres_cpu() -> Option<BTreeMap<String, f64>> {
    let mut by_pid = BTreeMap::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres")
        {
            if let Some(s) = cpu_seconds(pid) {
                by_pid.insert(pid.to_string(), s);
            }
        }
    }
    (!by_pid.is_empty()).then_some(by_pid)
}

/// The machine's CPU time so far from the `cpu` line of `/proc/stat`, in clock ticks: all
/// of it, the idle part, and the part the hypervisor gave to other guests (steal).
#[derive(Clone, Copy)]
struct MachineTicks {
    total: u64,
    idle: u64,
    steal: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (f.len() == 8).then(|| MachineTicks {
        total: f.iter().sum(),
        idle: f[3] + f[4],
        steal: f[7],
    })
}

/// CPU seconds of the server (when this run started it), of a local PostgreSQL (when the
/// server uses one) and of this loader, to report the CPU each side spent per request;
/// and the machine's ticks, to report how much of the cores stood idle or were taken by
/// the hypervisor meanwhile.
#[derive(Clone)]
struct CpuMark {
    server: Option<f64>,
    database: Option<BTreeMap<String, f64>>,
    loader: Option<f64>,
    machine: Option<MachineTicks>,
}

impl CpuMark {
    /// A mark of this loader and the local PostgreSQL only (the naive peer).
    fn database_and_loader() -> Self {
        CpuMark {
            server: None,
            database: local_postgres_cpu(),
            loader: cpu_seconds("self"),
            machine: machine_ticks(),
        }
    }

    /// The span from this mark to now, to divide once the count of requests is known.
    fn per_database_later(self) -> CpuSpan {
        CpuSpan {
            from: self,
            to: Self::database_and_loader(),
        }
    }

    /// "server X µs[, PostgreSQL Y µs], loader Z µs of CPU per <what>" from this mark to now.
    fn per(&self, server: &Server, n: u64, what: &str) -> String {
        CpuSpan {
            from: self.clone(),
            to: server.cpu_mark(),
        }
        .per(n, what)
    }
}

/// CPU spent between two marks.
struct CpuSpan {
    from: CpuMark,
    to: CpuMark,
}

impl CpuSpan {
    fn per(&self, n: u64, what: &str) -> String {
        let mut parts = Vec::new();
        if self.from.server.is_some() {
            parts.push(format!(
                "server {}",
                us_per(self.from.server, self.to.server, n)
            ));
        }
        if let (Some(a), Some(b)) = (&self.from.database, &self.to.database) {
            // Per process: one that started meanwhile counts whole, and one that ended
            // meanwhile (a backend of an earlier round still exiting at the first mark)
            // drops out instead of subtracting its whole life.
            let spent: f64 = b
                .iter()
                .map(|(pid, s)| s - a.get(pid).copied().unwrap_or(0.0))
                .sum();
            parts.push(format!("PostgreSQL {}", us_per(Some(0.0), Some(spent), n)));
        }
        parts.push(format!(
            "loader {}",
            us_per(self.from.loader, self.to.loader, n)
        ));
        let mut line = format!("CPU per {what}: {}", parts.join(", "));
        if let (Some(a), Some(b)) = (self.from.machine, self.to.machine) {
            let total = b.total.saturating_sub(a.total).max(1) as f64;
            let share = |x: u64, y: u64| 100.0 * y.saturating_sub(x) as f64 / total;
            line.push_str(&format!(
                "; the cores meanwhile: {:.1} % idle, {:.1} % stolen by the hypervisor",
                share(a.idle, b.idle),
                share(a.steal, b.steal)
            ));
        }
        line
    }
}

fn us_per(a: Option<f64>, b: Option<f64>, n: u64) -> String {
    match (a, b) {
        (Some(a), Some(b)) if n > 0 => format!("{:.0} µs", (b - a) * 1e6 / n as f64),
        _ => "?".to_string(),
    }
}

impl Server {
    /// The URL of `path` on the server, for the set-up's reqwest client.
    fn url(&self, path: &str) -> Result<reqwest::Url> {
        Ok(reqwest::Url::parse(&format!("{}{path}", self.base))?)
    }

    fn cpu_mark(&self) -> CpuMark {
        CpuMark {
            server: self
                ._spawned
                .as_ref()
                .and_then(|s| cpu_seconds(&s.pid.to_string())),
            database: if self.local_postgres {
                local_postgres_cpu()
            } else {
                None
            },
            loader: cpu_seconds("self"),
            machine: machine_ticks(),
        }
    }

    /// Resident memory of a server this run started, in KiB.
    fn rss_kib(&self) -> Option<u64> {
        let pid = self._spawned.as_ref()?.pid;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

fn connect(target: &Target) -> Result<Server> {
    if let Some(url) = &target.url {
        let root = target
            .root_token
            .clone()
            .context("--root-token (or ONECARD_ROOT_TOKEN) is needed with --url")?;
        return Ok(Server {
            base: url.trim_end_matches('/').to_string(),
            root,
            local_postgres: false,
            _spawned: None,
        });
    }
    let Some(bin) = &target.spawn else {
        bail!("give --url or --spawn")
    };
    let dir = std::env::temp_dir().join(format!("onecard-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let root = format!("loadtest-root-{:032x}", rand_u128());
    let mut cmd = Command::new(bin);
    cmd.env("ONECARD_DATA_DIR", &dir)
        .env("ONECARD_BIND", "127.0.0.1:0")
        .env("ONECARD_LOG_FORMAT", "json")
        .env("ONECARD_ROOT_TOKEN", &root)
        .env(
            "ONECARD_MASTER_KEY",
            format!("loadtest-master-key-{:032x}", rand_u128()),
        )
        // The loader is one client with one token: lift the per-token limit.
        .env("ONECARD_RATE_LIMIT_PER_S", "1000000")
        .env("ONECARD_RATE_LIMIT_BURST", "1000000")
        .env("RUST_LOG", "warn,onecard::startup=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(db) = &target.database_url {
        cmd.env("ONECARD_DATABASE_URL", db);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {bin}"))?;
    let stderr = child.stderr.take().context("server stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let Some(line) = lines.next() else {
            bail!("the server exited before listening")
        };
        let line = line?;
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["message"] == "OneCard listening" {
                break v["port"].as_u64().context("port in the listening line")?;
            }
        }
    };
    // Keep draining the server's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(Server {
        base: format!("http://127.0.0.1:{port}"),
        root,
        local_postgres: target.database_url.as_deref().is_some_and(|u| {
            u.starts_with("postgres") && (u.contains("@127.0.0.1") || u.contains("@localhost"))
        }),
        _spawned: Some(Spawned {
            pid: child.id(),
            child,
            _dir: tempdir::Dir(dir),
        }),
    })
}

/// Latencies in µs, from 1 µs to a minute, to three significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn rand_u128() -> u128 {
    rand::random()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// An import file of `rows` students.
fn students_csv(rows: usize) -> String {
    let mut csv = String::from(
        "onecard-users-template,v1\nname,number,phone,id_number,department,tags,identity\n",
    );
    for i in 0..rows {
        csv.push_str(&format!(
            "Student {i},S{i:07},138{i:08},110105{i:012},,,student\n"
        ));
    }
    csv
}

/// A fresh tenant of `edition`: its admin's token.
async fn new_tenant(
    server: &Server,
    client: &reqwest::Client,
    name: &str,
    edition: &str,
) -> Result<String> {
    let tenant = pay::post(
        client,
        server.url("/api/v1/tenants")?.to_string(),
        &server.root,
        json!({"name": name, "kind": "university", "edition": edition}),
        None,
    )
    .await?;
    Ok(tenant["admin_token"]
        .as_str()
        .context("admin token")?
        .to_string())
}

/// A fresh standard tenant with the students of `csv` imported: its admin's token.
async fn students_tenant(
    server: &Server,
    client: &reqwest::Client,
    name: &str,
    csv: &str,
) -> Result<String> {
    let admin = new_tenant(server, client, name, "standard").await?;
    import_csv(server, client, &admin, csv).await?;
    Ok(admin)
}

/// Imports `csv` as `admin`: the answer's body, once it says 201.
async fn import_csv(
    server: &Server,
    client: &reqwest::Client,
    admin: &str,
    csv: &str,
) -> Result<Value> {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(csv.as_bytes().to_vec()).file_name("users.csv"),
    );
    let res = client
        .post(server.url("/api/v1/users/import")?)
        .bearer_auth(admin)
        .multipart(form)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    if status != 201 {
        bail!("import failed: {status} {body}");
    }
    Ok(body)
}

/// The tenant's ledger check, once it says the ledger balances and every wallet equals its
/// entries; `after` names what was just done, for the error otherwise.
async fn ledger_balances(
    server: &Server,
    client: &reqwest::Client,
    admin: &str,
    after: &str,
) -> Result<Value> {
    let check: Value = client
        .get(server.url("/api/v1/ledger/check")?)
        .bearer_auth(admin)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if check["balanced"] != true
        || check["mismatched_wallets"] != json!([])
        || check["mismatched_registers"] != json!([])
    {
        bail!("the ledger check failed after {after}: {check}");
    }
    Ok(check)
}

async fn grant(target: Target, people: usize, runs: usize) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let csv = students_csv(people);
    println!(
        "grant: one subsidy rule for {people} students, {runs} runs against {}",
        server.base
    );
    let mut times = Vec::new();
    for run in 1..=runs {
        let admin = students_tenant(&server, &client, &format!("Grant {run}"), &csv).await?;
        // Maker–checker: the rule's creator may not approve it.
        let staff = pay::post(
            &client,
            server.url("/api/v1/users")?.to_string(),
            &admin,
            json!({"name": "Finance", "number": "F0000001", "identity": "staff"}),
            None,
        )
        .await?;
        let binding = pay::post(
            &client,
            server.url("/api/v1/admins")?.to_string(),
            &admin,
            json!({"user_id": staff["id"], "role": "super_admin"}),
            None,
        )
        .await?;
        let bound: Value = client
            .post(server.url("/api/v1/admins/bind")?)
            .json(&json!({"binding_token": binding["binding_token"]}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let checker = bound["token"].as_str().context("second admin's token")?;
        let rule = pay::post(
            &client,
            server.url("/api/v1/subsidy-rules")?.to_string(),
            &admin,
            json!({"name": "Winter", "amount": 500, "targets": {"identities": ["student"]}}),
            None,
        )
        .await?;
        let id = rule["id"].as_str().context("rule id")?;
        let start = Instant::now();
        let done = pay::post(
            &client,
            server
                .url(&format!("/api/v1/subsidy-rules/{id}/approve"))?
                .to_string(),
            checker,
            json!({}),
            None,
        )
        .await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if done["credited_users"].as_u64() != Some(people as u64) {
            bail!(
                "approval credited {} of {people}: {done}",
                done["credited_users"]
            );
        }
        let check = ledger_balances(&server, &client, &admin, "the grant").await?;
        println!(
            "  run {run}: {ms:.0} ms, ledger balanced ({} entries)",
            check["entries"]
        );
        times.push(ms);
    }
    summary("grant", people, "people", times);
    Ok(())
}

/// Credits `amount` fen to each of the first `people` students (`students_csv`) with one
/// file (`POST /wallets/topups`), each row with the reference `{prefix}-{i}` when
/// `references` names a prefix: the milliseconds it took and its answer. Checks that
/// every row was answered: credited now, or (`again`) credited before.
#[allow(clippy::too_many_arguments)]
async fn top_up_file(
    server: &Server,
    client: &reqwest::Client,
    admin: &str,
    people: usize,
    amount: i64,
    key: &str,
    references: Option<&str>,
    again: bool,
) -> Result<(f64, Value)> {
    let mut file = match references {
        Some(_) => String::from("number,amount_fen,reference\n"),
        None => String::from("number,amount_fen\n"),
    };
    for i in 0..people {
        match references {
            Some(prefix) => file.push_str(&format!("S{i:07},{amount},{prefix}-{i}\n")),
            None => file.push_str(&format!("S{i:07},{amount}\n")),
        }
    }
    let start = Instant::now();
    let res = client
        .post(server.url("/api/v1/wallets/topups")?)
        .bearer_auth(admin)
        .header("content-type", "text/csv")
        .header("idempotency-key", key)
        .body(file)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if status != 200 {
        bail!("top-up file: {status} {body}");
    }
    let (credited, before) = match again {
        false => (amount * people as i64, 0),
        true => (0, people),
    };
    if body["rows"].as_u64() != Some(people as u64)
        || body["total"].as_i64() != Some(credited)
        || body["already_credited"].as_array().map(Vec::len) != Some(before)
    {
        bail!(
            "the file of {people} rows answered {} rows, {} fen credited, {} credited before",
            body["rows"],
            body["total"],
            body["already_credited"].as_array().map_or(0, Vec::len)
        );
    }
    Ok((ms, body))
}

async fn topups(target: Target, people: usize, runs: usize) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let csv = students_csv(people);
    println!(
        "topups: a file crediting {people} students, {runs} runs against {}",
        server.base
    );
    let (mut plain, mut referenced, mut again) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let admin = students_tenant(&server, &client, &format!("Top-ups {run}"), &csv).await?;
        let key = format!("file-{run}");
        let plain_file = top_up_file(&server, &client, &admin, people, 1_234, &key, None, false);
        let (ms, _) = plain_file.await?;
        ledger_balances(&server, &client, &admin, "the file").await?;
        plain.push(ms);
        let admin = students_tenant(&server, &client, &format!("Top-ups ref {run}"), &csv).await?;
        let refs = Some("BANK");
        let first = top_up_file(&server, &client, &admin, people, 1_234, &key, refs, false);
        let (ms_ref, _) = first.await?;
        let key = format!("file-{run}-again");
        let second = top_up_file(&server, &client, &admin, people, 1_234, &key, refs, true);
        let (ms_again, _) = second.await?;
        let check = ledger_balances(&server, &client, &admin, "the files").await?;
        println!(
            "  run {run}: {ms:.0} ms without references, {ms_ref:.0} ms with them, \
             {ms_again:.0} ms for the same file again (nothing credited); ledger balanced \
             ({} entries)",
            check["entries"]
        );
        referenced.push(ms_ref);
        again.push(ms_again);
    }
    summary("topups", people, "rows", plain);
    summary("topups with references", people, "rows", referenced);
    summary("the referenced file again", people, "rows", again);
    Ok(())
}

async fn withdraw(target: Target, people: usize, runs: usize) -> Result<()> {
    const TOP_UP: i64 = 1_234;
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let csv = students_csv(people);
    println!(
        "withdraw: {people} students' balances paid out in one batch, {runs} runs against {}",
        server.base
    );
    let mut times = Vec::new();
    for run in 1..=runs {
        let admin = students_tenant(&server, &client, &format!("Withdraw {run}"), &csv).await?;
        top_up_file(
            &server,
            &client,
            &admin,
            people,
            TOP_UP,
            &format!("file-{run}"),
            None,
            false,
        )
        .await?;
        let start = Instant::now();
        let done = pay::post(
            &client,
            server.url("/api/v1/wallets/withdrawals")?.to_string(),
            &admin,
            json!({"targets": {"identities": ["student"]}, "reference": format!("RUN-{run}")}),
            Some(format!("withdraw-{run}")),
        )
        .await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let paid = done["paid"].as_array().map_or(0, Vec::len);
        if paid != people || done["total"].as_i64() != Some(TOP_UP * people as i64) {
            bail!("the batch paid {paid} of {people}, {} fen", done["total"]);
        }
        ledger_balances(&server, &client, &admin, "the batch").await?;
        println!("  run {run}: {ms:.0} ms, {paid} paid out, ledger balanced");
        times.push(ms);
    }
    summary("withdraw", people, "people", times);
    Ok(())
}

async fn notify(target: Target, people: usize, runs: usize) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let csv = students_csv(people);
    println!(
        "notify: one notice to {people} people by text, {runs} runs against {}",
        server.base
    );
    let mut times = Vec::new();
    for run in 1..=runs {
        let admin = students_tenant(&server, &client, &format!("Notify {run}"), &csv).await?;
        let channels = json!({"channels": [
            {"channel": "sms", "enabled": true, "per_minute": 100_000},
            {"channel": "official_account", "enabled": false, "per_minute": 1},
            {"channel": "messenger", "enabled": false, "per_minute": 1},
        ]});
        client
            .put(server.url("/api/v1/notification-settings")?)
            .bearer_auth(&admin)
            .json(&channels)
            .send()
            .await?
            .error_for_status()?;
        let start = Instant::now();
        let notice = pay::post(
            &client,
            server.url("/api/v1/notices")?.to_string(),
            &admin,
            json!({"title": "Drill", "body": "Fire drill at 10:00.", "audience": {"all": true}}),
            None,
        )
        .await?;
        let accepted_ms = start.elapsed().as_secs_f64() * 1000.0;
        let url = server.url(&format!(
            "/api/v1/notices/{}",
            notice["id"].as_str().context("notice id")?
        ))?;
        let done = loop {
            let n: Value = client
                .get(url.clone())
                .bearer_auth(&admin)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if n["status"] == "sent" {
                break n;
            }
            if start.elapsed() > Duration::from_secs(600) {
                bail!("the notice was not sent within 10 minutes: {n}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if done["counts"]["sent"].as_u64() != Some(people as u64) {
            bail!("sent to {} of {people}: {done}", done["counts"]["sent"]);
        }
        println!(
            "  run {run}: accepted in {accepted_ms:.0} ms, all {people} sent in {ms:.0} ms \
             ({:.0} deliveries/s)",
            people as f64 / (ms / 1000.0)
        );
        times.push(ms);
    }
    summary("notify", people, "people", times);
    Ok(())
}

/// Prints the median, min and max of `times` (ms).
fn summary(what: &str, n: usize, unit: &str, times: Vec<f64>) {
    let runs = times.len();
    let (min, max) = times
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
    let med = median(times);
    println!("{what} {n} {unit}: median {med:.0} ms (min {min:.0}, max {max:.0}) over {runs} runs");
}

async fn import(target: Target, rows: usize, runs: usize) -> Result<()> {
    let server = connect(&target)?;
    let client = reqwest::Client::new();
    let csv = students_csv(rows);
    println!(
        "import: {rows} rows ({} KiB CSV), {runs} runs against {}",
        csv.len() / 1024,
        server.base
    );
    let mut times = Vec::new();
    for run in 1..=runs {
        let admin = new_tenant(&server, &client, &format!("Load {run}"), "standard").await?;
        let start = Instant::now();
        let body = import_csv(&server, &client, &admin, &csv).await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if body["created"].as_u64() != Some(rows as u64) {
            bail!("import created {} of {rows}: {body}", body["created"]);
        }
        println!("  run {run}: {ms:.0} ms");
        times.push(ms);
    }
    summary("import", rows, "rows", times);
    Ok(())
}

async fn healthz(target: Target, connections: usize, seconds: u64) -> Result<()> {
    let server = connect(&target)?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu = server.cpu_mark();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut conn = conn::Conn::new(&server.base, None)?;
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match conn.get("/healthz").await {
                    Ok((status, _)) if status.is_success() => {
                        h.saturating_record(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    let mut all = latency_histogram();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        all.add(h)?;
        errors += e;
    }
    println!(
        "healthz: {connections} connections, {seconds} s: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {errors}",
        all.len() as f64 / seconds as f64,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("{}", cpu.per(&server, all.len(), "request"));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // Built in the workspace, reqwest carries the server's `rustls-no-provider` feature
    // and needs a provider before its first client, though the loader speaks plain HTTP.
    #[allow(deprecated)] // ring offers no post-quantum key exchange; not needed here
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Cmd::Import { target, rows, runs } => import(target, rows, runs).await,
        Cmd::Grant {
            target,
            people,
            runs,
        } => grant(target, people, runs).await,
        Cmd::Notify {
            target,
            people,
            runs,
        } => notify(target, people, runs).await,
        Cmd::Withdraw {
            target,
            people,
            runs,
        } => withdraw(target, people, runs).await,
        Cmd::Topups {
            target,
            people,
            runs,
        } => topups(target, people, runs).await,
        Cmd::Online {
            target,
            people,
            phones,
        } => online::run(target, people, phones).await,
        Cmd::Healthz {
            target,
            connections,
            seconds,
        } => healthz(target, connections, seconds).await,
        Cmd::Apps {
            target,
            connections,
            seconds,
        } => apps::run(target, connections, seconds).await,
        Cmd::Checkin {
            target,
            people,
            connections,
        } => checkin::run(target, people, connections).await,
        Cmd::Collect {
            target,
            people,
            connections,
        } => collect::run(target, people, connections).await,
        Cmd::Pay {
            target,
            tills,
            cardholders,
            payments,
            hot,
            latency_log,
            webhook,
        } => {
            pay::run(
                target,
                tills,
                cardholders,
                payments,
                hot,
                latency_log.as_deref(),
                webhook,
            )
            .await
        }
        Cmd::Ws {
            target,
            connections,
            source_ips,
            tills,
            rate,
            seconds,
            dashboards,
            fanout_events,
        } => {
            ws::run(
                target,
                ws::WsArgs {
                    connections,
                    source_ips,
                    tills,
                    rate,
                    seconds,
                    dashboards,
                    fanout_events,
                },
            )
            .await
        }
        Cmd::Naive {
            database_url,
            cardholders,
            seconds,
            clients,
            hot,
        } => pay::naive(&database_url, cardholders, seconds, &clients, hot).await,
    }
}
