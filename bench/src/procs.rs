//! The mesh's processes: started from their config files, each logging to
//! a file of its own, killed when the harness ends; and what `/proc` says
//! about them (CPU time, resident memory), and their CPU affinity.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Environment variables the node and gateway read that would override
/// the harness's configs.
const OVERRIDES: [&str; 7] = [
    "YRD_REGION",
    "YRD_LISTEN",
    "YRD_STORE_PATH",
    "YRD_PAGE_TOKEN_SECRET",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// One process of the mesh, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, stderr and stdout to `<dir>/<name>.log`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(
        name: &str,
        program: &Path,
        args: &[S],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for var in OVERRIDES {
            command.env_remove(var);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails with the log when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// CPU time (user + system) used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of(self.pid())
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no VmRSS in {path}"))
    }

    /// Pins every thread of the process to `cpus` (a `taskset` list such as
    /// `1` or `0-1`).
    pub fn pin(&self, cpus: &str) -> anyhow::Result<()> {
        pin(self.pid(), cpus)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Pins every thread of process `pid` to `cpus`.
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// CPU time of process `pid` so far: the run time of each of its threads
/// from `/proc/<pid>/task/*/schedstat`, in nanoseconds (the tick-counted
/// times of `/proc/<pid>/stat` are too coarse for one query). A thread that
/// has ended keeps counting with the time it had when last seen, so the
/// figure never goes back; what such a thread ran after the last reading
/// is lost, and the threads that end here are ones idle for seconds (the
/// runtime's spare blocking threads).
pub fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
    static SEEN: std::sync::Mutex<Option<std::collections::HashMap<u32, Threads>>> = std::sync::Mutex::new(None);
    let dir = format!("/proc/{pid}/task");
    let mut now = std::collections::HashMap::new();
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        // A thread may end while the folder is read.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            now.insert(tid, ns);
        }
    }
    let mut seen = SEEN
        .lock()
        .map_err(|_| anyhow::anyhow!("the CPU bookkeeping is poisoned"))?;
    let threads = seen.get_or_insert_with(Default::default).entry(pid).or_default();
    for (tid, ns) in &threads.last {
        if !now.contains_key(tid) {
            threads.ended += ns;
        }
    }
    threads.last = now;
    Ok(Duration::from_nanos(threads.ended + threads.last.values().sum::<u64>()))
}

/// The threads of one process as last seen, and the time of those ended.
#[derive(Debug, Default)]
struct Threads {
    last: std::collections::HashMap<u32, u64>,
    ended: u64,
}

/// A free TCP port on loopback (the harness's processes listen on these).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, procs: &mut [&mut Proc], limit: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    loop {
        let probe = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await;
        if matches!(probe, Ok(Ok(_))) {
            return Ok(());
        }
        for p in procs.iter_mut() {
            p.check_running()?;
        }
        if Instant::now() > until {
            bail!("nothing listens on {addr} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of every sample of the Prometheus metric `name` served at
/// `admin`'s `/metrics`, none when it cannot be read.
pub async fn metric_sum(admin: SocketAddr, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(admin))
        .await
        .ok()?
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.take(16 << 20).read_to_end(&mut body))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&body);
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        sum += rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    Some(sum)
}
