//! A real Prometheus for tests: history backfilled with `promtool tsdb
//! create-blocks-from openmetrics` into a temporary data dir, then `prometheus`
//! started on a free loopback port. Killed on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// OpenMetrics text built series by series; samples of one family are kept together,
/// as the format requires.
#[derive(Default)]
pub struct OpenMetrics {
    families: BTreeMap<String, String>,
    pub samples: usize,
}

impl OpenMetrics {
    /// Add one series: `labels` like `namespace="a",pod="b"`, samples (unix seconds, value).
    pub fn series(
        &mut self,
        metric: &str,
        labels: &str,
        samples: impl IntoIterator<Item = (u64, f64)>,
    ) {
        use std::fmt::Write as _;
        let out = self.families.entry(metric.to_string()).or_default();
        for (t, v) in samples {
            let _ = writeln!(out, "{metric}{{{labels}}} {v} {t}");
            self.samples += 1;
        }
    }

    /// Drop the metric families `drop` names (e.g. a cluster without kube-state-metrics).
    pub fn drop_families(&mut self, drop: impl Fn(&str) -> bool) {
        self.families.retain(|name, _| !drop(name));
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for (name, body) in &self.families {
            s.push_str(&format!("# TYPE {name} gauge\n"));
            s.push_str(body);
        }
        s.push_str("# EOF\n");
        s
    }
}

pub struct TestProm {
    child: Option<Child>,
    /// `--web.config.file` (TLS, basic auth) when set.
    pub web_config: Option<PathBuf>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TestProm {
    /// Backfill `om` and start Prometheus on it.
    pub fn start_with(om: &OpenMetrics) -> TestProm {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("history.om");
        std::fs::write(&file, om.render()).expect("write openmetrics");
        Self::start_with_file(dir, &file)
    }

    /// Backfill an OpenMetrics file already written into `dir`, then start.
    pub fn start_with_file(dir: tempfile::TempDir, file: &std::path::Path) -> TestProm {
        let mut p = Self::backfill(dir, file);
        p.start();
        p
    }

    fn backfill(dir: tempfile::TempDir, file: &std::path::Path) -> TestProm {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let out = Command::new("promtool")
            .args([
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--max-block-duration=24h",
            ])
            .arg(file)
            .arg(&data)
            .output()
            .expect("promtool runs (install the Debian package prometheus)");
        assert!(
            out.status.success(),
            "promtool failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(file).ok();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            "global:\n  scrape_interval: 1m\n",
        )
        .expect("config");
        TestProm {
            child: None,
            web_config: None,
            port: free_port(),
            dir,
        }
    }

    /// Backfill `om` and start with a web config (files it names must be in `dir`).
    pub fn start_with_web(om: &OpenMetrics, dir: tempfile::TempDir, web_yml: &str) -> TestProm {
        let web = dir.path().join("web.yml");
        std::fs::write(&web, web_yml).expect("web config");
        let file = dir.path().join("history.om");
        std::fs::write(&file, om.render()).expect("write openmetrics");
        let mut p = Self::backfill(dir, &file);
        p.web_config = Some(web);
        p.start();
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)start on the same port and data dir; waits until ready.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", self.data().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--storage.tsdb.retention.time=60d")
            .arg("--log.level=warn")
            .args(
                self.web_config
                    .iter()
                    .map(|w| format!("--web.config.file={}", w.display())),
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join("prometheus.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("prometheus starts (install the Debian package prometheus)");
        stop_with_the_test_binary(child.id(), self.dir.path());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "prometheus did not become ready on port {}: {}",
            self.port,
            self.log()
        );
    }

    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.web_config.is_some() {
            // TLS and auth in front: an open port is enough (the client retries 503s).
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /-/ready HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200")
    }

    /// What Prometheus logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestProm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus held by a static fixture is never dropped: a shell beside it stops it and
/// removes its directory once the test binary has exited (and ends by itself as soon as
/// Prometheus stops first, the usual case).
fn stop_with_the_test_binary(child: u32, dir: &std::path::Path) {
    let parent = std::process::id();
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 1; done; \
         if ! kill -0 {parent} 2>/dev/null; then kill {child} 2>/dev/null; sleep 1; rm -rf '{}'; fi",
        dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
