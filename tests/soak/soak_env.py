"""The soak's world: the real control plane and node (tests/cluster/up.sh, node.sh), a real
Prometheus behind a delaying proxy, and two `rightsizer serve` replicas as processes with
the shipped Deployment's flags, behind the shipped Service (Endpoints kept by the harness
the way the endpoints controller keeps them from the readiness probe)."""

import base64
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S_BIN = os.path.join(os.environ.get("RIGHTSIZER_K8S_CACHE", os.path.expanduser(
    "~/.cache/rightsizer-k8s/v1.20.2")), "bin")
NS = "rightsizer-system"
SA_USER = "system:serviceaccount:rightsizer-system:rightsizer"
SVC_HOST = "rightsizer.rightsizer-system.svc"


def log(msg):
    print(time.strftime("%H:%M:%S ") + "soak: " + msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(proc, last_key, what):
    """KEY=VALUE lines of a starting script's stdout, up to `last_key`."""
    out = {}
    for line in proc.stdout:
        k, _, v = line.decode().strip().partition("=")
        out[k] = v
        if k == last_key:
            return out
    raise RuntimeError(what + " did not come up")


class Kube:
    """The apiserver's REST API with the admin token (or impersonating `as_user`)."""

    def __init__(self, kubeconfig):
        text = open(kubeconfig).read()
        self.server = re.search(r"server: (\S+)", text).group(1)
        self.token = re.search(r"token: (\S+)", text).group(1)
        ca = base64.b64decode(re.search(r"certificate-authority-data: (\S+)", text).group(1))
        self.ctx = ssl.create_default_context(cadata=ca.decode())
        self.kubeconfig = kubeconfig

    def call(self, method, path, body=None, timeout=10, ctype="application/json"):
        """(status, parsed JSON or text); status 0 with the error when unreachable."""
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": "Bearer " + self.token, "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        except (OSError, ssl.SSLError) as e:
            return 0, str(e)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def kubectl(self, *args, stdin=None, check=True):
        r = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, "--request-timeout=20s",
                            *args], input=stdin and stdin.encode(), capture_output=True)
        if check and r.returncode:
            raise RuntimeError("kubectl %s: %s" % (" ".join(args), r.stderr.decode()))
        return r.stdout.decode()

    def kubeconfig_as(self, user, path):
        """The admin kubeconfig impersonating `user` (the webhook's ServiceAccount)."""
        text = open(self.kubeconfig).read()
        text = text.replace("    token: ", '    as: "%s"\n    token: ' % user, 1)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path


class Plane:
    """up.sh (with RIGHTSIZER_CLUSTER_NODE=1) and node.sh, each in its own session."""

    def __init__(self, work):
        env = dict(os.environ, RIGHTSIZER_CLUSTER_NODE="1", RIGHTSIZER_K8S_BIN=K8S_BIN,
                   RIGHTSIZER_CLUSTER_PARENT_PID=str(os.getpid()))
        self.up = subprocess.Popen([os.path.join(ROOT, "tests/cluster/up.sh")], env=env,
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   stderr=open(os.path.join(work, "up.stderr"), "w"),
                                   start_new_session=True)
        got = read_until(self.up, "KUBECONFIG", "tests/cluster/up.sh")
        self.dir, self.kubeconfig = got["CLUSTER_DIR"], got["KUBECONFIG"]
        self.kube = Kube(self.kubeconfig)
        self.node = None
        for attempt in range(6):
            err = os.path.join(work, "node.stderr")
            node = subprocess.Popen([os.path.join(ROOT, "tests/cluster/node.sh"), self.dir],
                                    env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    stderr=open(err, "w"), start_new_session=True)
            try:
                got = read_until(node, "KUBELET_PORT", "tests/cluster/node.sh")
                self.node = node
                break
            except RuntimeError:
                node.wait()
                text = open(err).read()
                if "another node still runs" not in text or attempt == 5:
                    self.stop()
                    raise RuntimeError("tests/cluster/node.sh failed:\n" + text[-3000:])
                log("another node still runs on this machine; waiting")
        self.node_ip, self.kubelet_port = got["NODE_IP"], int(got["KUBELET_PORT"])

    def restart_apiserver(self):
        os.kill(self.up.pid, signal.SIGUSR1)

    def apiserver_ready(self):
        return self.kube.call("GET", "/readyz", timeout=2)[0] == 200

    def logs(self):
        names = ["apiserver.log", "controller-manager.log", "etcd.log"]
        out = [os.path.join(self.dir, n) for n in names]
        node = os.path.join(self.dir, "node")
        if os.path.isdir(node):
            out += [os.path.join(node, n) for n in sorted(os.listdir(node))]
        return out

    def stop(self):
        for p in (self.node, self.up):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=150)
                except subprocess.TimeoutExpired:
                    log("pid %d still tearing down after 150 s; leaving it" % p.pid)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Tls:
    """A CA and serving pairs for the Service name, laid out as the kubelet mounts a Secret
    (tls.crt -> ..data/tls.crt, ..data -> a timestamped dir, swapped by rename)."""

    def __init__(self, work, node_ip):
        self.dir = os.path.join(work, "tls")
        self.pki = os.path.join(work, "pki")
        os.makedirs(self.dir)
        os.makedirs(self.pki)
        self.node_ip = node_ip
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt", "-subj",
                "/CN=soak-ca", "-addext", "basicConstraints=critical,CA:TRUE", cwd=self.pki)
        self.ca = os.path.join(self.pki, "ca.crt")
        self.rotations = 0
        self.rotate()
        for f in ("tls.crt", "tls.key"):
            os.symlink(os.path.join("..data", f), os.path.join(self.dir, f))

    def rotate(self):
        """A new key and certificate from the same CA, swapped in atomically."""
        self.rotations += 1
        n = self.rotations
        with open(os.path.join(self.pki, "ext%d" % n), "w") as f:
            f.write("subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1,IP:%s\n"
                    "extendedKeyUsage=serverAuth\n" % (SVC_HOST, self.node_ip))
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", "k%d" % n, "-out", "r%d" % n, "-subj", "/CN=" + SVC_HOST,
                cwd=self.pki)
        openssl("x509", "-req", "-in", "r%d" % n, "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "ext%d" % n, "-out", "c%d" % n,
                cwd=self.pki)
        data = os.path.join(self.dir, "..%d" % n)
        os.makedirs(data)
        os.replace(os.path.join(self.pki, "c%d" % n), os.path.join(data, "tls.crt"))
        os.replace(os.path.join(self.pki, "k%d" % n), os.path.join(data, "tls.key"))
        tmp = os.path.join(self.dir, "..data_tmp")
        os.symlink("..%d" % n, tmp)
        os.replace(tmp, os.path.join(self.dir, "..data"))

    def ca_b64(self):
        return base64.b64encode(open(self.ca, "rb").read()).decode()


class DelayProxy:
    """TCP proxy in front of Prometheus; `delay` seconds are added before each chunk the
    analyzer sends (so before every query), to play a slow Prometheus."""

    def __init__(self, upstream):
        self.upstream, self.delay = upstream, 0.0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self.pipe, args=(c,), daemon=True).start()

    def pipe(self, c):
        try:
            u = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            c.close()
            return
        try:
            while True:
                r, _, _ = select.select([c, u], [], [], 300)
                if not r:
                    break
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is c and self.delay:
                        time.sleep(self.delay)
                    (u if s is c else c).sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            u.close()


class Prom:
    """A real Prometheus scraping the kubelet's cAdvisor and the replicas' admin ports."""

    def __init__(self, work, node_ip, kubelet_port, replica_admins):
        self.work, self.port = work, free_port()
        cfg = os.path.join(work, "prometheus.yml")
        targets = ", ".join("'%s'" % a for a in replica_admins)
        with open(cfg, "w") as f:
            f.write("global: {scrape_interval: 5s, evaluation_interval: 5s}\nscrape_configs:\n"
                    "  - job_name: kubelet-cadvisor\n    scheme: https\n"
                    "    metrics_path: /metrics/cadvisor\n"
                    "    tls_config: {insecure_skip_verify: true}\n"
                    "    static_configs: [{targets: ['%s:%d']}]\n"
                    "  - job_name: rightsizer\n    static_configs: [{targets: [%s]}]\n"
                    % (node_ip, kubelet_port, targets))
        self.args = ["prometheus", "--config.file=" + cfg,
                     "--storage.tsdb.path=" + os.path.join(work, "prom-data"),
                     "--web.listen-address=127.0.0.1:%d" % self.port]
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.work, "prometheus.log"), "a"),
                                     start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.port, timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("prometheus did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Replica:
    """`rightsizer serve` with the shipped Deployment's args and env (deploy/base, with
    deploy/components/pod-watch: no kube-state-metrics here). A restart is a new Pod: a new
    holder identity, the same ports."""

    def __init__(self, exe, work, name, node_ip, kubeconfig, prom_url, interval):
        self.exe, self.work, self.base = exe, work, name
        self.node_ip, self.kubeconfig, self.prom_url = node_ip, kubeconfig, prom_url
        self.interval = interval
        self.port, self.admin_port = free_port(), free_port()
        self.generation, self.proc, self.started = 0, None, 0.0
        self.logs = []

    @property
    def name(self):
        return "%s-%d" % (self.base, self.generation)

    @property
    def admin(self):
        return "%s:%d" % (self.node_ip, self.admin_port)

    def start(self, tls_dir):
        self.generation += 1
        logf = os.path.join(self.work, self.name + ".log")
        self.logs.append(logf)
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, RUST_LOG="info",
                   RIGHTSIZER_PROMETHEUS_URL=self.prom_url,
                   RIGHTSIZER_KUBE_STATE_METRICS="never", POD_NAMESPACE=NS,
                   POD_NAME=self.name, RIGHTSIZER_ENFORCEMENT="true",
                   RIGHTSIZER_ANALYZER_INTERVAL="%ds" % self.interval)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(k, None)
        self.proc = subprocess.Popen(
            [self.exe, "serve", "--listen", "%s:%d" % (self.node_ip, self.port),
             "--tls-cert", os.path.join(tls_dir, "tls.crt"),
             "--tls-key", os.path.join(tls_dir, "tls.key"),
             "--admin-listen", self.admin],
            env=env, stdout=open(logf, "w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.time()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path, timeout=3):
        try:
            with urllib.request.urlopen("http://%s%s" % (self.admin, path), timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError as e:
            return 0, str(e)

    def ready(self):
        return self.alive() and self.get("/readyz")[0] == 200

    def metric(self, family):
        """Sum of a family's samples from /metrics (None when unreachable)."""
        status, text = self.get("/metrics", timeout=5)
        if status != 200:
            return None
        total = None
        for line in text.splitlines():
            if line.startswith(family + " ") or line.startswith(family + "{"):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return total

    def usage(self):
        """(RSS MiB, open descriptors) of the live process, or None."""
        if not self.alive():
            return None
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
            return rss, len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except (OSError, StopIteration):
            return None


class Endpoints(threading.Thread):
    """The endpoints controller's part: a replica is in the Service's Endpoints while its
    readiness probe passes (/readyz, every 5 s, out after 2 failures; out at once when the
    process is gone, as the kubelet reports a dead container)."""

    def __init__(self, kube, replicas, stop):
        super().__init__(daemon=True)
        self.kube, self.replicas, self.stop = kube, replicas, stop
        self.fails = {r.base: 0 for r in replicas}
        self.ready = {r.base: False for r in replicas}
        self.last_probe = 0.0
        self.published = None

    def run(self):
        while not self.stop.is_set():
            probe = time.time() - self.last_probe >= 5
            if probe:
                self.last_probe = time.time()
            for r in self.replicas:
                if not r.alive():
                    self.ready[r.base], self.fails[r.base] = False, 2
                elif probe or not self.ready[r.base]:
                    ok = r.ready()
                    self.fails[r.base] = 0 if ok else self.fails[r.base] + 1
                    if ok:
                        self.ready[r.base] = True
                    elif self.fails[r.base] >= 2:
                        self.ready[r.base] = False
            self.publish()
            self.stop.wait(1)

    def publish(self):
        want = [r for r in self.replicas if self.ready[r.base]]
        key = [(r.port, r.admin_port) for r in want]
        if key == self.published:
            return
        subsets = [{"addresses": [{"ip": r.node_ip}],
                    "ports": [{"name": "https", "port": r.port, "protocol": "TCP"},
                              {"name": "metrics", "port": r.admin_port, "protocol": "TCP"}]}
                   for r in want]
        body = {"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "rightsizer", "namespace": NS}, "subsets": subsets}
        path = "/api/v1/namespaces/%s/endpoints/rightsizer" % NS
        status, _ = self.kube.call("PUT", path, body)
        if status == 404:
            status, _ = self.kube.call("POST", "/api/v1/namespaces/%s/endpoints" % NS, body)
        if status in (200, 201):
            self.published = key
