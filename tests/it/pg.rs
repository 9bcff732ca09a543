//! A real PostgreSQL for the tests: one server per run of the test binary, started on
//! first use (initdb on a temporary directory, the server on a free 127.0.0.1 port with
//! its unix socket in that directory, TLS on with a CA made here), one fresh database
//! per test. The server runs as the `postgres` user when the tests run as root, dies
//! with the test process (parent-death signal), and is stopped and removed at exit.
//!
//! The binaries are looked up the way `.ci/run` decides whether to install the
//! `postgresql` package: `initdb` in `PATH`, else in `/usr/lib/postgresql/*/bin`
//! (newest version first); `postgres` and `pg_ctl` are taken from initdb's directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shared server, or why it could not start (every test that needs it fails with it).
static SERVER: OnceLock<Result<Shared, String>> = OnceLock::new();
/// Taken out and dropped (stopping the server) by the exit handler.
static RUNNING: Mutex<Option<PgServer>> = Mutex::new(None);
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// What tests need to reach the shared server.
#[derive(Clone, Debug)]
pub struct Shared {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate (for `sslmode=require` tests).
    pub ca_pem: String,
}

/// A fresh, empty database on the shared server.
pub struct TestDb {
    pub name: String,
    pub port: u16,
}

impl TestDb {
    /// `postgres://postgres@127.0.0.1:PORT/NAME?sslmode=disable` (trust authentication;
    /// the server offers TLS, whose certificate only `Shared::ca_pem` makes trusted).
    pub fn url(&self) -> String {
        format!("{}?sslmode=disable", self.url_with_tls_mode_unset())
    }

    pub fn url_with_tls_mode_unset(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

/// Connects without TLS and drives the connection on its own task.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The shared server, started on first use.
pub fn server() -> &'static Shared {
    match SERVER.get_or_init(start_shared) {
        Ok(shared) => shared,
        Err(why) => panic!("cannot start the test PostgreSQL: {why}"),
    }
}

/// Creates a new database for one test (named after the test, made unique).
pub async fn fresh_db(tag: &str) -> TestDb {
    let shared = server();
    let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
    let clean: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    let name = format!("t_{clean}_{n}").to_ascii_lowercase();
    let admin = connect(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        shared.port
    ))
    .await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    TestDb {
        name,
        port: shared.port,
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("initdb"))
            .find(|p| p.is_file())
    });
    let initdb = match in_path {
        Some(p) => p,
        None => {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path().join("bin/initdb")))
                .filter(|p| p.is_file())
                .collect();
            // Newest major version first ("15" before "9.6").
            versions.sort_by_key(|p| {
                let version = p
                    .parent()
                    .and_then(Path::parent)
                    .and_then(Path::file_name)
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('.').next()?.parse::<u32>().ok())
                    .unwrap_or(0);
                std::cmp::Reverse(version)
            });
            versions.into_iter().next()?
        }
    };
    // /usr/local/bin/initdb may be a link into the version's directory, where `postgres` is.
    let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    let dir = initdb.parent()?.to_path_buf();
    dir.join("postgres").is_file().then_some(dir)
}

/// One PostgreSQL server on a temporary directory; stopped and removed on drop.
pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    child: Child,
    owner: Option<(u32, u32)>,
}

impl PgServer {
    /// initdb, then the server in the foreground (our child), waiting until it accepts
    /// connections. `ssl` is (certificate PEM, key PEM) to turn TLS on.
    pub fn start(ssl: Option<(&str, &str)>) -> Result<PgServer, String> {
        let bin = bin_dir().ok_or(
            "no initdb found in PATH or /usr/lib/postgresql/*/bin (install the postgresql package)",
        )?;
        let dir = std::env::temp_dir().join(format!(
            "llmtap-pg-{}-{}",
            std::process::id(),
            llmtap::ids::new_id("", llmtap::timefmt::now_unix_us())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let owner = postgres_user();
        let set_owner = |path: &Path| -> Result<(), String> {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
            Ok(())
        };
        set_owner(&dir)?;
        let data = dir.join("data");
        let log = dir.join("server.log");
        let initdb = run_as(Command::new(bin.join("initdb")), owner)
            .args(["-D", &data.to_string_lossy()])
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_string(),
            format!("unix_socket_directories={}", dir.display()),
            // Test data is disposable: no fsync, small memory, enough connections for
            // several llmtap instances with their pools.
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            "max_connections=300".into(),
            "shared_buffers=64MB".into(),
            "log_min_messages=warning".into(),
        ];
        if let Some((cert, key)) = ssl {
            for (name, text) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                set_owner(&path)?;
            }
            settings.push("ssl=on".into());
        }
        // A port that was free a moment ago; another process may take it first, so try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            let log_file = std::fs::File::create(&log).map_err(|e| format!("log: {e}"))?;
            set_owner(&log)?;
            let mut command = Command::new(bin.join("postgres"));
            command
                .args(["-D", &data.to_string_lossy(), "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            for s in &settings {
                command.args(["-c", s]);
            }
            let mut child = run_as(command, owner)
                .spawn()
                .map_err(|e| format!("start postgres: {e}"))?;
            match wait_ready(&mut child, &data, Duration::from_secs(60)) {
                Ok(()) => {
                    return Ok(PgServer {
                        port,
                        dir,
                        bin,
                        child,
                        owner,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!(
                        "{e}; server log: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // pg_ctl's fast shutdown: roll back open transactions, close sessions, stop.
        let data = self.dir.join("data");
        let stopped = run_as(Command::new(self.bin.join("pg_ctl")), self.owner)
            .args(["stop", "-m", "fast", "-w", "-t", "20", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_shared() -> Result<Shared, String> {
    let pki = super::util::TestPki::new("llmtap test PostgreSQL CA");
    // The parent-death signal follows the thread that spawned the server, and each test
    // runs on a thread of its own: spawn it from a thread that lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    let (cert, key) = (pki.cert_pem.clone(), pki.key_pem.clone());
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let _ = tx.send(PgServer::start(Some((&cert, &key))));
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let server = rx
        .recv()
        .map_err(|_| "the server thread died".to_string())??;
    let shared = Shared {
        port: server.port,
        ca_pem: pki.ca_pem,
    };
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
    // Statics are never dropped: stop the server when the test binary exits.
    extern "C" fn stop_at_exit() {
        if let Ok(mut running) = RUNNING.lock() {
            running.take();
        }
    }
    // SAFETY: registers a plain function with no arguments; it only takes a lock.
    unsafe {
        libc::atexit(stop_at_exit);
    }
    Ok(shared)
}

/// The `postgres` user's uid and gid when we are root (PostgreSQL refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd entry.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// Drops to `owner` (when root) in the child, and asks the kernel to stop the child
/// (SIGQUIT: immediate shutdown) when this process dies, however it dies.
fn run_as(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = owner {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After the uid change, which clears the parent-death signal.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            if libc::getppid() != parent {
                return Err(std::io::Error::other("test process already gone"));
            }
            Ok(())
        });
    }
    command
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits for `postmaster.pid`'s status line to say "ready", as `pg_ctl start -w` does.
fn wait_ready(child: &mut Child, data: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("postgres exited with {status}"));
        }
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        if pid_file.lines().nth(7).map(str::trim) == Some("ready") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("postgres did not become ready in time".into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[tokio::test]
async fn each_test_gets_its_own_empty_database_on_one_server() {
    let a = fresh_db("harness_a").await;
    let b = fresh_db("harness_b").await;
    assert_eq!(a.port, b.port, "one server per test binary run");
    assert_ne!(a.name, b.name);
    let ca = a.connect().await;
    ca.batch_execute("CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (1)")
        .await
        .unwrap();
    let cb = b.connect().await;
    let found: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 0, "databases are isolated");
    // The server is a real PostgreSQL, not run as root, listening on loopback only.
    let row = ca
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('listen_addresses'), \
             (SELECT usename FROM pg_user WHERE usesysid = (SELECT datdba FROM pg_database WHERE datname = 'postgres'))",
            &[],
        )
        .await
        .unwrap();
    let version: i32 = row.get(0);
    assert!(version >= 120000, "PostgreSQL {version}");
    assert_eq!(row.get::<_, String>(1), "127.0.0.1");
    assert_eq!(row.get::<_, String>(2), "postgres");
}
