//! A real node for end-to-end tests: `tests/cluster/node.sh` (containerd, runc, a CNI
//! bridge, kubelet, kube-proxy, kube-scheduler) joined to a control plane started with
//! `RIGHTSIZER_CLUSTER_NODE=1`; the rightsizer image built from the binary under test by
//! `tests/image/build.sh`; and a real Prometheus scraping the kubelet's cAdvisor endpoint.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{k8s_cache_dir, repo_root, ControlPlane, Group};

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Why a node cannot run here, if something is missing (tests/run installs the packages;
/// tests/cluster/build.sh builds the binaries).
pub fn missing_prerequisite() -> Option<String> {
    if let Some(why) = super::cluster::missing_prerequisite() {
        return Some(why);
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("a node needs root (cgroups, mounts, network)".into());
    }
    for bin in ["kubelet", "kube-proxy", "kube-scheduler"] {
        if !k8s_cache_dir().join("bin").join(bin).exists() {
            return Some(format!("no {bin} build (run tests/cluster/build.sh)"));
        }
    }
    for tool in [
        "containerd",
        "ctr",
        "runc",
        "iptables",
        "busybox",
        "prometheus",
        "setsid",
        "flock",
    ] {
        if !found(tool) {
            return Some(format!("{tool} is not installed (tests/run installs it)"));
        }
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        return Some("containernetworking-plugins is not installed (tests/run installs it)".into());
    }
    None
}

/// A running node; torn down (by node.sh itself, on TERM) when stopped or dropped.
pub struct Node {
    child: Child,
    pub name: String,
    pub ip: String,
    pub kubelet_port: u16,
    /// From start to Node Ready.
    pub startup: Duration,
    pub logs: PathBuf,
    stderr: PathBuf,
}

impl Node {
    /// Start a node for `plane` (started with `RIGHTSIZER_CLUSTER_NODE=1`) and load the
    /// given image archives besides the busybox and pause images.
    pub fn start(plane: &ControlPlane, images: &[PathBuf]) -> Result<Node, String> {
        let started = Instant::now();
        let stderr = plane.dir.join("node.stderr");
        let err = std::fs::File::create(&stderr).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(repo_root().join("tests/cluster/node.sh"));
        cmd.arg(&plane.dir)
            .args(images)
            .env("RIGHTSIZER_K8S_BIN", k8s_cache_dir().join("bin"))
            .env(
                "RIGHTSIZER_CLUSTER_PARENT_PID",
                std::process::id().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err);
        // Its own group: a Ctrl-C of the test run reaches the test binary only, and
        // node.sh tears down when it sees that process gone.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| format!("starting node.sh: {e}"))?;
        let stdout = child.stdout.take().ok_or("node.sh has no stdout")?;
        let (mut name, mut ip, mut port) = (None, None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(v) = line.strip_prefix("NODE_NAME=") {
                name = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("NODE_IP=") {
                ip = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("KUBELET_PORT=") {
                port = v.parse().ok();
                break;
            }
        }
        let node = match (name, ip, port) {
            (Some(name), Some(ip), Some(kubelet_port)) => Node {
                child,
                name,
                ip,
                kubelet_port,
                startup: started.elapsed(),
                logs: plane.dir.join("node"),
                stderr,
            },
            _ => {
                let _ = child.wait();
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                return Err(format!("tests/cluster/node.sh did not come up:\n{log}"));
            }
        };
        Ok(node)
    }

    /// TERM to node.sh, which stops everything and restores the machine; returns how
    /// long that took.
    pub fn stop(&mut self) -> Duration {
        let t = Instant::now();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(120);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("node.sh still tearing down after 120 s; leaving it");
            }
        }
        t.elapsed()
    }

    /// node.sh's own progress and teardown lines.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The kubelet's cAdvisor endpoint, as Prometheus scrapes it.
    pub fn cadvisor_target(&self) -> String {
        format!("{}:{}", self.ip, self.kubelet_port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The rightsizer image built from the binary under test (the same filesystem and
/// config as the Dockerfile's, see tests/image/), as a docker-archive in `dir`.
pub fn build_image(reference: &str, dir: &Path) -> Result<PathBuf, String> {
    let out = dir.join("rightsizer-image.tar");
    let res = Command::new(repo_root().join("tests/image/build.sh"))
        .arg(&out)
        .env("RIGHTSIZER_BINARY", crate::exe::rightsizer())
        .env("RIGHTSIZER_IMAGE", reference)
        .output()
        .map_err(|e| format!("tests/image/build.sh: {e}"))?;
    if !res.status.success() {
        return Err(format!(
            "tests/image/build.sh failed:\n{}",
            String::from_utf8_lossy(&res.stderr)
        ));
    }
    Ok(out)
}

/// A real Prometheus scraping the kubelet's `/metrics/cadvisor` every `interval`,
/// listening on the node's address so Pods reach it too. Stopped on drop.
pub struct ScrapingProm {
    group: Group,
    pub url: String,
    dir: tempfile::TempDir,
}

impl ScrapingProm {
    pub fn start(node: &Node, interval: &str) -> Result<ScrapingProm, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: kubelet-cadvisor\n    scheme: https\n    \
             metrics_path: /metrics/cadvisor\n    tls_config:\n      insecure_skip_verify: true\n    \
             static_configs:\n      - targets: ['{}']\n",
            node.cadvisor_target()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).map_err(|e| e.to_string())?;
        let port = super::cluster::free_port();
        let addr = format!("{}:{port}", node.ip);
        let log =
            std::fs::File::create(dir.path().join("prometheus.log")).map_err(|e| e.to_string())?;
        // Through tether.sh: gone with the test binary even when it exits without drops.
        let mut cmd = Command::new(repo_root().join("tests/cluster/tether.sh"));
        cmd.arg(std::process::id().to_string())
            .arg("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut group =
            Group::spawn("prometheus", cmd).map_err(|e| format!("starting prometheus: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(body) = http_get(&addr, "/-/ready") {
                if body.contains("Ready") {
                    break;
                }
            }
            if group.exited() || Instant::now() > deadline {
                group.stop();
                let text =
                    std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
                return Err(format!("prometheus did not start:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(ScrapingProm {
            group,
            url: format!("http://{addr}"),
            dir,
        })
    }

    /// An instant query; the result vector as JSON.
    pub fn query(&self, promql: &str) -> Result<serde_json::Value, String> {
        let addr = self.url.trim_start_matches("http://");
        let body = http_get(addr, &format!("/api/v1/query?query={}", urlencode(promql)))?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(v["data"]["result"].clone())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain-HTTP GET (HTTP/1.0, so the body ends at close); the body when the status is 2xx.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let sock = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
    let mut s =
        TcpStream::connect_timeout(&sock, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    let (head, body) = buf.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(body.to_string())
    } else {
        Err(format!("GET {path}: {head}"))
    }
}

/// Poll `f` every second until it returns Some, or panic after `secs` with `what`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Stage timings of a node test, printed as they go and again at the end.
pub struct Stages {
    title: &'static str,
    done: Vec<(String, Duration)>,
    started: Instant,
}

impl Stages {
    pub fn new(title: &'static str) -> Stages {
        Stages {
            title,
            done: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn run<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        eprintln!("--- {name}");
        let t = Instant::now();
        let out = f();
        eprintln!("--- {name}: {:.1} s", t.elapsed().as_secs_f64());
        self.done.push((name.to_string(), t.elapsed()));
        out
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        eprintln!("{} stages:", self.title);
        for (n, d) in &self.done {
            eprintln!("  {:>6.1} s  {n}", d.as_secs_f64());
        }
        eprintln!("  {:>6.1} s  total", self.started.elapsed().as_secs_f64());
    }
}
