//! The mesh binaries as separate processes, for the tests that run them
//! the way an agency does: [`binary`] builds and finds one, [`Process`]
//! starts it with a config file and a clean environment and kills it when
//! the test ends, [`free_port`] picks a loopback port for its config.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A workspace binary, built (or found up to date) by cargo first: a
/// workspace test run builds the binaries of a package only for its own
/// integration tests, and these belong to other packages. Cargo-nextest,
/// the suite's runner, holds no build lock while tests run.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target = dir.parent().unwrap();
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "yrd-node", "-p", "yrd-gateway", "--bins"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building the binaries failed");
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A free loopback port, for a config that must name one. The port is
/// free when picked; the kernel hands out ports at random from the
/// ephemeral range, so two picks here rarely meet, where fixed numbers
/// collide with whatever else the machine runs.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The environment variables the binaries read: removed, so that only the
/// config file of a test decides.
const OVERRIDES: [&str; 11] = [
    "YRD_NODE_CONFIG",
    "YRD_GATEWAY_CONFIG",
    "YRD_REGION",
    "YRD_LISTEN",
    "YRD_STORE_PATH",
    "YRD_PAGE_TOKEN_SECRET",
    "YRD_LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
];

/// A mesh process, killed if a test leaves it running.
pub struct Process {
    /// The command line, for messages.
    pub name: String,
    pub child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `binary_name --config <config> <extra…>`, its stderr in
    /// `<dir>/<config stem>.stderr`.
    pub fn start(binary_name: &str, config: &Path, extra: &[&str], dir: &Path) -> Self {
        Self::start_path(&binary(binary_name), config, extra, dir)
    }

    /// [`Process::start`] of the binary at `path`.
    pub fn start_path(path: &Path, config: &Path, extra: &[&str], dir: &Path) -> Self {
        let binary_name = path.file_name().and_then(|s| s.to_str()).unwrap_or("binary");
        let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("config");
        let log = dir.join(format!("{stem}.stderr"));
        let mut command = Command::new(path);
        command
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for var in OVERRIDES {
            command.env_remove(var);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary_name}: {e}"));
        Self {
            name: format!("{binary_name} --config {}", config.display()),
            child,
            log,
        }
    }

    /// What the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.name);
    }

    /// The exit status and how long it took, or `None` if still running
    /// after `limit` (for synchronous tests; it polls with a thread
    /// sleep, as there is no exit notification without a process reaper).
    pub fn exit_within(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
