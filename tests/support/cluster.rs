//! A real Kubernetes v1.20.2 control plane (etcd, kube-apiserver, kube-controller-manager)
//! on loopback for end-to-end tests, and `rightsizer serve` as a local process the
//! apiserver calls through a MutatingWebhookConfiguration with a `url` clientConfig.
//!
//! The control plane comes from `tests/cluster/up.sh` (binaries built once by
//! `tests/cluster/build.sh`). Every long-lived child runs in its own process group, which
//! is stopped on drop; `up.sh` and `tether.sh` also stop on their own when the test binary
//! exits, because statics shared by all tests are never dropped.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The webhook's identity: the shipped ServiceAccount (deploy/base).
pub const WEBHOOK_USER: &str = "system:serviceaccount:rightsizer-system:rightsizer";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in a workspace")
        .to_path_buf()
}

fn script(name: &str) -> PathBuf {
    repo_root().join("tests/cluster").join(name)
}

/// Where `build.sh` puts the binaries (same default as the script).
pub fn k8s_cache_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RIGHTSIZER_K8S_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/rightsizer-k8s/v1.20.2")
}

/// Why the control plane cannot run here, if a prerequisite is missing.
pub fn missing_prerequisite() -> Option<String> {
    let cache = k8s_cache_dir();
    if !cache.join(".built").exists() {
        return Some(format!(
            "no kube-apiserver build in {} (run tests/cluster/build.sh)",
            cache.display()
        ));
    }
    for tool in ["etcd", "kubectl", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "{tool} is not installed (run tests/cluster/build.sh)"
            ));
        }
    }
    None
}

/// In CI a missing control plane is a failure, never a silent skip.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// A child in its own process group; the whole group is stopped on drop.
pub struct Group {
    child: Child,
    name: String,
}

impl Group {
    pub fn spawn(name: &str, mut cmd: Command) -> std::io::Result<Group> {
        cmd.process_group(0);
        let child = cmd.spawn()?;
        Ok(Group {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// TERM to the group, then KILL after 10 s.
    pub fn stop(&mut self) {
        if self.exited() {
            // The leader is gone; make sure nothing of its group lingers.
            self.signal_group("-KILL");
            return;
        }
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{}: still running after 10 s, killing", self.name);
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running control plane.
pub struct ControlPlane {
    group: Group,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
    /// Seconds from start to a usable plane (apiserver ready, `default` ServiceAccount there).
    pub startup: Duration,
}

impl ControlPlane {
    /// Start `tests/cluster/up.sh` and wait for its `KUBECONFIG=` line. Tries twice: the
    /// script picks free ports, and another process may take one before it is bound.
    pub fn start() -> Result<ControlPlane, String> {
        Self::start_with_env(&[])
    }

    /// `start` with extra environment for up.sh (e.g. `RIGHTSIZER_CLUSTER_NODE=1`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Result<ControlPlane, String> {
        match Self::start_once(env) {
            Ok(p) => Ok(p),
            Err(first) => {
                eprintln!("control plane failed to start, retrying once:\n{first}");
                Self::start_once(env)
            }
        }
    }

    fn start_once(env: &[(&str, &str)]) -> Result<ControlPlane, String> {
        let started = Instant::now();
        // up.sh's own progress lines; its components log into the cluster directory.
        let stderr_file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let stderr = stderr_file.reopen().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(script("up.sh"));
        cmd.env("RIGHTSIZER_K8S_BIN", k8s_cache_dir().join("bin"))
            .env(
                "RIGHTSIZER_CLUSTER_PARENT_PID",
                std::process::id().to_string(),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut group = Group::spawn("up.sh", cmd).map_err(|e| format!("starting up.sh: {e}"))?;
        let stdout = group
            .child
            .stdout
            .take()
            .ok_or("up.sh has no stdout pipe")?;
        let mut kubeconfig = None;
        let mut dir = None;
        // up.sh bounds its own wait (RIGHTSIZER_CLUSTER_TIMEOUT) and closes stdout on failure.
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(v) = line.strip_prefix("CLUSTER_DIR=") {
                dir = Some(PathBuf::from(v));
            }
            if let Some(v) = line.strip_prefix("KUBECONFIG=") {
                kubeconfig = Some(PathBuf::from(v));
                break;
            }
        }
        match (kubeconfig, dir) {
            (Some(kubeconfig), Some(dir)) => Ok(ControlPlane {
                group,
                kubeconfig,
                dir,
                startup: started.elapsed(),
            }),
            _ => {
                group.stop();
                let log = fs::read_to_string(stderr_file.path()).unwrap_or_default();
                Err(format!("tests/cluster/up.sh did not come up:\n{log}"))
            }
        }
    }

    /// Run kubectl against this plane; `stdin` is piped in when given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("stdin piped");
            w.write_all(input.as_bytes())
                .expect("writing kubectl stdin");
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Apply what `deploy/base` ships except the webhook itself: the Namespace, the
    /// Rightsizing CRD, the ServiceAccount and its RBAC, exactly as rendered. Waits
    /// until the CRD is served.
    pub fn install_shipped(&self) {
        self.install_base(&repo_root().join("deploy/base"));
    }

    /// `install_shipped` from another tree's `deploy/base` (the previous version's, in
    /// upgrade_e2e.rs): applied over what is there, as `kubectl apply` does.
    pub fn install_base(&self, base: &Path) {
        const KINDS: [&str; 7] = [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ];
        let rendered = self.kubectl_ok(&["kustomize", &base.display().to_string()], None);
        let docs: Vec<&str> = rendered
            .split("\n---\n")
            .filter(|d| {
                d.lines()
                    .any(|l| KINDS.iter().any(|k| l.trim_end() == format!("kind: {k}")))
            })
            .collect();
        assert_eq!(docs.len(), KINDS.len(), "rendered deploy/base:\n{rendered}");
        self.kubectl_ok(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=established",
                "--timeout=30s",
                "crd/rightsizings.rightsizer.io",
            ],
            None,
        );
    }

    /// A kubeconfig that impersonates `user` with the admin credentials: the apiserver
    /// authorizes every request as `user` (e.g. the webhook's ServiceAccount).
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let text = fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let mut doc: serde_norway::Value = serde_norway::from_str(&text).expect("kubeconfig YAML");
        for u in doc["users"].as_sequence_mut().expect("users") {
            u["user"]["as"] = serde_norway::Value::String(user.to_string());
        }
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self.dir.join(format!("kubeconfig-as-{safe}"));
        fs::write(&path, serde_norway::to_string(&doc).expect("YAML")).expect("writing kubeconfig");
        path
    }

    /// A kube client acting as `user` (impersonation, see `kubeconfig_as`).
    pub async fn client_as(&self, user: &str) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig_as(user)).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// A kube client for this plane (one per test: a client belongs to its runtime).
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }
}

/// A CA and a serving certificate for 127.0.0.1/localhost, written to `dir`.
pub struct TlsFiles {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn generate_tls(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "rightsizer e2e CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let files = TlsFiles {
        ca_pem: issuer.pem(),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    fs::write(&files.cert, &files.cert_pem).unwrap();
    fs::write(&files.key, &files.key_pem).unwrap();
    files
}

/// A free loopback port (bound and released; the caller binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `rightsizer serve` as a local process, stopped on drop.
pub struct Webhook {
    group: Group,
    pub addr: SocketAddr,
    /// The plain-HTTP admin port (`/metrics`, `/recommendations`: not on the TLS port).
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Webhook {
    /// Start the webhook on `addr` with the given extra arguments and environment, and wait
    /// until it accepts connections.
    pub fn start(
        addr: SocketAddr,
        tls: &TlsFiles,
        kubeconfig: &Path,
        extra_args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Webhook, String> {
        let mut args = vec![
            "--tls-cert".to_string(),
            tls.cert.display().to_string(),
            "--tls-key".to_string(),
            tls.key.display().to_string(),
        ];
        args.extend(extra_args.iter().cloned());
        Self::start_serving(addr, kubeconfig, &args, env, log)
    }

    /// `start` with the serving certificate's arguments in `args` (e.g.
    /// `--certificate-secret NAME`).
    pub fn start_serving(
        addr: SocketAddr,
        kubeconfig: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Webhook, String> {
        Self::start_exe(crate::exe::rightsizer(), addr, kubeconfig, args, env, log)
    }

    /// `start_serving` with another `rightsizer` binary (the previous version's, in
    /// upgrade_e2e.rs).
    pub fn start_exe(
        exe: &Path,
        addr: SocketAddr,
        kubeconfig: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Webhook, String> {
        let out = fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .map_err(|e: std::net::AddrParseError| e.to_string())?;
        let mut cmd = Command::new(script("tether.sh"));
        cmd.arg(std::process::id().to_string())
            .arg(exe)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut group =
            Group::spawn("rightsizer serve", cmd).map_err(|e| format!("starting serve: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(Webhook {
                    group,
                    addr,
                    admin,
                    log,
                });
            }
            if group.exited() || Instant::now() > deadline {
                let text = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("rightsizer serve did not start:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        self.group.stop();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// GET a path of the webhook over HTTPS, trusting `ca_pem`.
pub async fn webhook_get(addr: SocketAddr, ca_pem: &str, path: &str) -> Result<String, String> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(format!("https://{addr}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    resp.text().await.map_err(|e| e.to_string())
}

/// GET a path of the webhook's plain-HTTP admin port (`/metrics`).
pub async fn admin_get(admin: SocketAddr, path: &str) -> Result<String, String> {
    admin_status(admin, path).await.map(|(_, body)| body)
}

/// GET a path of the webhook's plain-HTTP admin port: status and body (`/readyz`).
pub async fn admin_status(admin: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.map_err(|e| e.to_string())?))
}

/// Status code of a GET on the webhook over HTTPS, trusting `ca_pem`.
pub async fn webhook_status(addr: SocketAddr, ca_pem: &str, path: &str) -> Result<u16, String> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(format!("https://{addr}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// Sum of a counter family's samples whose labels contain every `key="value"` given.
pub fn counter_sum(metrics_text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    metrics_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, rest) = match name_labels.split_once('{') {
                Some((n, r)) => (n, r),
                None => (name_labels, ""),
            };
            if name != family {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if all {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}
