//! The end-to-end test harness: starts the real `sidecar` and demo
//! binaries on `127.0.0.1:0`, learns their bound addresses from what they
//! print, talks to them with real clients (curl, Python grpcio and
//! websockets, redis-cli), and kills every child it started, by PID, when
//! the test ends, even on failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A workspace binary, built by `cargo build --workspace` (the test command does it first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-… → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A child process killed (by its PID) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Takes charge of a child started elsewhere (stderr collected if piped).
    pub fn adopt(name: &str, mut child: Child) -> Proc {
        let log = collect_stderr(&mut child);
        Proc {
            name: name.into(),
            child,
            log,
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `HUP`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Lines the process wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `needle`; returns that line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no log line with {needle:?}; log:\n{}",
                self.name,
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (pid {}) stderr ---\n{}",
                self.name,
                self.child.id(),
                self.log().join("\n")
            );
        }
    }
}

fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    if let Some(stderr) = child.stderr.take() {
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
    }
    log
}

/// Starts a demo service binary; returns it and the address it reports
/// on its first stdout line, `{"listening":"127.0.0.1:PORT"}`.
pub fn service(name: &str, args: &[&str]) -> (Proc, SocketAddr) {
    announced(name, Command::new(bin(name)).args(args))
}

/// Starts the Python test server `tests/py/<script>` with `args`; returns
/// it and the address it reports like [`service`].
pub fn py_service(script: &str, args: &[&str]) -> (Proc, SocketAddr) {
    announced(
        script,
        Command::new("python3")
            .arg(root().join("tests/py").join(script))
            .args(args),
    )
}

/// Starts `command`, which reports `{"listening":"127.0.0.1:PORT"}` on its
/// first stdout line; returns it and that address.
pub fn announced(name: &str, command: &mut Command) -> (Proc, SocketAddr) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let proc = Proc::adopt(name, child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let value: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{name} printed {line:?}: {e}; {:?}", proc.log()));
    let addr = value["listening"].as_str().unwrap().parse().unwrap();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (proc, addr)
}

/// `yaml` written to `sidecar.yaml` in a new temporary directory, which
/// lives as long as the returned guard.
pub fn config_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// [`sidecar_check`] on a config given as text.
pub fn sidecar_check_yaml(yaml: &str) -> (Option<i32>, String) {
    let (_dir, config) = config_file(yaml);
    sidecar_check(&config)
}

/// `sidecar check <config>`: its exit code and what it printed (stdout,
/// then stderr).
pub fn sidecar_check(config: &Path) -> (Option<i32>, String) {
    let output = Command::new(bin("sidecar"))
        .arg("check")
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("run sidecar check: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// The headless Chromium binary (Debian's `chromium-headless-shell`).
pub fn chromium() -> PathBuf {
    let installed = PathBuf::from("/usr/lib/chromium/chromium-headless-shell");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("chromium-headless-shell")
}

/// The DOM of `url` once its scripts ran for `budget_ms` of virtual time
/// (headless Chromium, bounded by a watchdog that kills it by PID); panics
/// unless the DOM contains `ready`.
pub fn dump_dom(url: &str, budget_ms: u32, ready: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium-headless-shell is installed (scripts/test installs it)");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(u64::from(budget_ms) + 25_000));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains(ready),
        "{url} never showed {ready:?}: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// redis-server on `port` (nothing saved to disk), once it accepts connections.
pub fn start_redis(port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    let redis = Proc::adopt("redis-server", child);
    wait_until(Duration::from_secs(10), "redis-server", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    redis
}

/// A temporary directory with the JWT test keys of `tests/py/jwt_tokens.py`
/// (RSA, EC and Ed25519, public halves in `jwks.json`).
pub fn jwt_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    assert_eq!(python("jwt_tokens.py", &["keys", path])["ok"], true);
    dir
}

/// Good and forged tokens signed with the keys in `dir`, by name.
pub fn jwt_tokens(dir: &Path) -> Value {
    python("jwt_tokens.py", &["tokens", dir.to_str().unwrap()])
}

/// A running sidecar with its config file in a temporary directory.
pub struct Sidecar {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Writes `yaml` to a file and runs `sidecar run` on it.
    pub fn start(yaml: &str) -> Sidecar {
        Sidecar::start_with(yaml, &[])
    }

    /// [`start`](Self::start) with more `sidecar run` arguments.
    pub fn start_with(yaml: &str, args: &[&str]) -> Sidecar {
        let (dir, config) = config_file(yaml);
        let mut child = Command::new(bin("sidecar"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config)
            .args(args)
            .env("MESH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sidecar");
        let log = collect_stderr(&mut child);
        let proc = Proc {
            name: "sidecar".into(),
            child,
            log,
        };
        let line = proc.wait_log("\"message\":\"listening\"", Duration::from_secs(10));
        let value: Value = serde_json::from_str(&line).unwrap();
        let admin = value["admin"].as_str().unwrap().parse().unwrap();
        Sidecar {
            proc,
            admin,
            config,
            _dir: dir,
        }
    }

    /// GET on the admin API, parsed as JSON.
    pub fn admin_json(&self, path: &str) -> Value {
        let (status, body) = http(self.admin, "GET", path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics").1
    }

    /// The value of one metric series (its full name and labels, as printed), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// The bound address of the listener of `kind` (and `upstream`, for outbound ports).
    pub fn listener(&self, kind: &str, upstream: Option<&str>) -> SocketAddr {
        let listeners = self.admin_json("/listeners");
        let found = listeners
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == kind && upstream.is_none_or(|u| l["upstream"] == u));
        found.unwrap_or_else(|| panic!("no {kind} listener {upstream:?} in {listeners}"))["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Rewrites the config file (the watcher picks it up).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).unwrap();
    }
}

/// A minimal HTTP/1.0 request (admin API only; traffic tests use real clients).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: admin\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs curl with `args` (silent, with a 20 s cap).
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed")
}

/// A successful curl's body, parsed as JSON.
pub fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// Runs a Python client from tests/py and parses the one JSON line it prints.
pub fn python(script: &str, args: &[&str]) -> Value {
    let output = Command::new("python3")
        .arg(root().join("tests/py").join(script))
        .args(args)
        .output()
        .expect("python3 is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{script} {args:?} printed {stdout:?}, stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Polls `check` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
