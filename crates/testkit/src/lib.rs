//! Shared helpers for DeltaForge's integration tests: running the real
//! binary, killing it, waiting for conditions, reading what the file sink wrote, and
//! starting the real servers through the
//! repository's own scripts (`scripts/services/*.sh`).
//!
//! Nothing here fakes a server; helpers for fakes do not belong here. The
//! [`fault_proxy`] forwards to a real server and only misbehaves on the
//! network between it and DeltaForge.

pub mod fault_proxy;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod fuzz;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// Starts a server with `scripts/services/{name}.sh` (idempotent) and
/// returns its connection string (the script's last stdout line).
///
/// # Panics
/// If the script fails; its stderr is in the message.
pub fn service(name: &str) -> String {
    let script = repo_root().join("scripts/services").join(format!("{name}.sh"));
    let out =
        Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

/// The CA certificate that signed the test PostgreSQL server's certificate
/// (for `sslrootcert=`), which `scripts/services/postgres.sh` keeps at the
/// fixed path `${DELTAFORGE_SERVICES_DIR:-<repo>/.services}/postgres/tls/ca.crt`.
/// The server certificate is valid for `localhost` and `127.0.0.1`.
///
/// # Panics
/// If the file is missing: call [`service`]`("postgres")` first.
pub fn pg_tls_ca() -> PathBuf {
    let base = std::env::var_os("DELTAFORGE_SERVICES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".services"));
    let ca = base.join("postgres/tls/ca.crt");
    ca.canonicalize().unwrap_or_else(|e| panic!("{}: {e} (has scripts/services/postgres.sh run?)", ca.display()))
}

/// Runs `scripts/services/{name}.sh {action}` (`stop`, `start`, ...) for
/// tests that take a shared server down and bring it back. Tests doing so
/// must serialise with the other tests of their binary that use the server.
///
/// # Panics
/// If the script fails; its stderr is in the message.
pub fn service_action(name: &str, action: &str) {
    let script = repo_root().join("scripts/services").join(format!("{name}.sh"));
    let out = Command::new("bash")
        .arg(&script)
        .arg(action)
        .output()
        .unwrap_or_else(|e| panic!("running {} {action}: {e}", script.display()));
    assert!(out.status.success(), "{} {action} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
}

/// Runs `scripts/services/{name}.sh {action}` with extra environment `envs`
/// (e.g. a services folder and ports of the test's own, for a server only
/// that test uses) and returns the script's last stdout line (the
/// connection string for `start`).
///
/// # Panics
/// If the script fails; its stderr is in the message.
pub fn service_env(name: &str, action: &str, envs: &[(String, String)]) -> String {
    let script = repo_root().join("scripts/services").join(format!("{name}.sh"));
    let out = Command::new("bash")
        .arg(&script)
        .arg(action)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("running {} {action}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {action} failed: {}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

/// Drops what a PostgreSQL test pipeline named after its table leaves on
/// the shared server: the replication slot and publication called `table`
/// (a forgotten slot holds WAL for ever) and the table itself.
pub fn pg_cleanup(url: &str, table: &str) {
    pg_sql(
        url,
        &format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{table}'; \
             DROP PUBLICATION IF EXISTS {table}; DROP TABLE IF EXISTS {table}"
        ),
    );
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `deltaforge` process whose stderr goes to a log file.
pub struct Deltaforge {
    /// The child process.
    pub child: Child,
    /// Where its logs go.
    pub log: PathBuf,
}

impl Deltaforge {
    /// Starts `bin` with `args`, logging to `log` (appended).
    pub fn start(bin: &Path, args: &[&str], log: &Path, envs: &[(&str, &str)]) -> Self {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Deltaforge { child, log: log.to_path_buf() }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// Waits for exit up to `timeout`; returns the exit code (None: still running or signalled).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_for(timeout, || self.child.try_wait().ok().flatten()).and_then(|s| s.code())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for `needle` to appear in the log.
    ///
    /// # Panics
    /// When it does not, with the log in the message.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(timeout, || self.log_text().contains(needle).then_some(()))
            .unwrap_or_else(|| panic!("{needle:?} did not appear in the log within {timeout:?}\n{}", self.log_text()));
    }

    /// Waits until the PostgreSQL source logs that it streams (its slot
    /// exists, so changes committed from now on are read).
    pub fn wait_pg_streaming(&self) {
        self.wait_log("streaming changes from PostgreSQL", Duration::from_secs(30));
    }

    /// Waits until the initial snapshot is over: every table was read and
    /// its rows delivered. The snapshot runs beside the stream, so a row
    /// written before this may arrive twice (its change, then a read);
    /// tests that count exact events wait for this first.
    pub fn wait_snapshot_over(&self) {
        // The same text as `deltaforge_core::snapshot::SNAPSHOT_OVER_LOG`;
        // testkit does not depend on the core.
        self.wait_log("initial snapshot over: every table read and delivered", Duration::from_secs(60));
    }
}

impl Drop for Deltaforge {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// Reads a JSON Lines file, ignoring a last line without its newline (a
/// write in progress). A missing file reads as empty.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => &bytes[..=i],
        None => return Vec::new(),
    };
    complete
        .lines()
        .map(|l| {
            let l = l.expect("utf-8 line");
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON line in {}: {e}: {l}", path.display()))
        })
        .collect()
}

/// A small deterministic random generator (xorshift64*), seeded per test
/// and printed so that a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    /// Seeds from `DELTAFORGE_TEST_SEED` or the clock, printing the seed.
    pub fn from_env() -> Self {
        let seed = std::env::var("DELTAFORGE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        });
        eprintln!("random seed: {seed} (set DELTAFORGE_TEST_SEED to repeat)");
        Rng(seed.max(1))
    }

    /// Next value in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo).max(1))
    }
}

/// Runs SQL on a MariaDB/MySQL server through the `mariadb` command-line
/// client (installed by `scripts/services/mariadb.sh`), as the user of
/// `url` (`mysql://user:pass@host:port/db`). Returns stdout in batch form:
/// one line per row, tab-separated, no column names.
///
/// # Panics
/// If the client fails; its stderr is in the message.
pub fn mariadb_sql(url: &str, sql: &str) -> String {
    let out = mariadb_command(url).arg("-e").arg(sql).output().expect("running the mariadb client");
    assert!(out.status.success(), "mariadb client failed on {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `mariadb` client command for `url` (batch mode, no column names),
/// ready for more arguments or a piped stdin.
pub fn mariadb_command(url: &str) -> Command {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (auth, hostpart) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "3306"));
    let mut cmd = Command::new("mariadb");
    cmd.args(["--protocol=TCP", "-h", host, "-P", port, "-u", user, "-N", "-B", "--default-character-set=utf8mb4"]);
    if !pass.is_empty() {
        cmd.arg(format!("-p{pass}"));
    }
    if !db.is_empty() {
        cmd.arg(db);
    }
    cmd
}

/// Runs SQL on PostgreSQL through `psql` (installed by
/// `scripts/services/postgres.sh`) against `url`, stopping at the first
/// error. Returns stdout unaligned: one line per row, `|`-separated, no
/// column names.
///
/// # Panics
/// If `psql` fails; its stderr is in the message.
pub fn pg_sql(url: &str, sql: &str) -> String {
    let out = pg_command(url).arg("-c").arg(sql).output().expect("running psql");
    assert!(out.status.success(), "psql failed on {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `psql` command for `url` (quiet, unaligned, tuples only, stop on
/// error), ready for more arguments or a piped stdin.
pub fn pg_command(url: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args([url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    cmd
}

impl Rng {
    /// A generator with a fixed seed (e.g. one drawn from [`Rng::from_env`]
    /// for a second, independent stream in another thread).
    pub fn seeded(seed: u64) -> Self {
        Rng(seed.max(1))
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race with
/// other processes is possible).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// A minimal blocking HTTP/1.1 client for API tests: sends `method path`
/// to `addr` (`127.0.0.1:PORT`) with optional bearer `token` and `body`,
/// and returns the status code and the body text. A body goes with the
/// Content-Type the API requires: `application/json` when it starts with
/// `{` or `[`, else `application/yaml`. Errors (connection refused,
/// timeout) come back as `Err` so callers can poll.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if let Some(b) = body {
        let json = b.trim_start().starts_with(['{', '[']);
        headers.push(("Content-Type", if json { "application/json" } else { "application/yaml" }));
    }
    http_raw(addr, method, path, &headers, body)
}

/// Like [`http`], with exactly the request headers given (plus
/// `Connection: close`, `Content-Length` and, unless given, `Host: {addr}`):
/// for tests of what the API does with foreign `Host`, `Origin` or
/// `Content-Type` headers, as a browser or another client would send them.
pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok((status, body))
}

/// Decodes a chunked HTTP body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Like [`http`], parsing the body as JSON (`Value::Null` when it is not JSON).
pub fn http_json(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let (status, text) = http(addr, method, path, token, body)?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The value of a Prometheus sample in a `/metrics` text, e.g.
/// `metric_value(text, "deltaforge_events_read_total", &[("pipeline", "p")])`;
/// the labels given must all match (others may be present).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let all = labels.iter().all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// A suffix unique to this process and moment (`{pid}x{nanos}`: ASCII
/// digits and `x` only), for table, topic, stream, subject and slot names
/// that must not collide with other tests running against the same
/// servers.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("{}x{}", std::process::id(), nanos % 1_000_000_000)
}

/// Parses a PostgreSQL LSN (`16/B374D848`) into its 64-bit value.
///
/// # Panics
/// If `s` is not of the form `X/Y` with hexadecimal halves.
pub fn pg_lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').unwrap_or_else(|| panic!("not an LSN: {s:?}"));
    let part = |h: &str| u64::from_str_radix(h, 16).unwrap_or_else(|_| panic!("not an LSN: {s:?}"));
    (part(hi) << 32) | part(lo)
}
