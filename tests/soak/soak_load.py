"""What the soak installs and the load it runs: the shipped objects, the workloads
(a Deployment scaled up and down, a CronJob every minute, bare Pods created and deleted),
the policies (one rewritten every 5 s, one in five invalid), and synthetic AdmissionReviews
at a steady rate through the Service, each one timed."""

import copy
import http.client
import json
import os
import random
import socket
import ssl
import threading
import time

from soak_env import NS, ROOT, SVC_HOST, log

WORK_NS = "soak"  # the Deployment, under an enforce policy: values get committed
CRON_NS = "soak-cron"  # the CronJob, under the policy that is rewritten every 5 s
PODS_NS = "soak-pods"  # bare Pods the harness creates and deletes, each POST timed
DEPLOYMENT = "web"
CRONJOB = "tick"
IMAGE = "rightsizer.test/busybox:1"

ENFORCE_POLICY = """precedence: 20
selector:
  namespaces: ["soak"]
mode: enforce
target: pods
recommender: seed
rules:
  evidence: {minSamples: 6, minHistorySeconds: 0}
  safeguards: {maxStepRatio: 4, cooldownSeconds: 0}
"""


def policy_cm(name, text):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"rightsizer.io/policy": "true"}},
            "data": {"policy.yaml": text}}


def churn_policy(n, rng):
    """The n-th rewrite of the churned policy: every fifth one is invalid."""
    if n % 5 == 4:
        return rng.choice([
            "precedence: 15\nmode: sometimes\n",  # an unknown mode
            "precedence: [15\nmode: enforce\n",  # not YAML
            "precedence: 15\nselector: {namespaces: 7}\nmode: observe\n",  # wrong type
            "precedence: 15\nrules: {safeguards: {maxStepRatio: -3}}\nmode: enforce\n",
        ])
    mode = rng.choice(["observe", "enforce"])
    return ("precedence: 15\nselector:\n  namespaces: [\"soak-cron\"]\nmode: %s\n"
            "target: pods\nrecommender: seed\nrules:\n  evidence: {minSamples: %d}\n"
            "  safeguards: {maxStepRatio: %d, cooldownSeconds: %d}\n"
            % (mode, rng.randint(3, 12), rng.randint(2, 4), rng.choice([0, 60, 600])))


def install(kube, tls):
    """deploy/base with deploy/components/pod-watch, except the Deployment (the replicas
    are processes) and the PodDisruptionBudget; the Service without its selector (the
    harness keeps its Endpoints); the webhook configuration with the CA."""
    kdir = os.path.join(os.path.dirname(tls.dir), "kustomize")
    os.makedirs(kdir)
    with open(os.path.join(kdir, "kustomization.yaml"), "w") as f:
        f.write("resources:\n- %s\ncomponents:\n- %s\n" % (
            os.path.relpath(os.path.join(ROOT, "deploy/base"), kdir),
            os.path.relpath(os.path.join(ROOT, "deploy/components/pod-watch"), kdir)))
    rendered = kube.kubectl("kustomize", kdir)
    keep = [d for d in rendered.split("\n---\n")
            if not any(line in ("kind: Deployment", "kind: PodDisruptionBudget")
                       for line in d.splitlines())]
    kube.kubectl("apply", "-f", "-", stdin="\n---\n".join(keep))
    kube.kubectl("-n", NS, "patch", "service", "rightsizer", "--type", "json", "-p",
                 '[{"op":"remove","path":"/spec/selector"}]')
    kube.kubectl("patch", "mutatingwebhookconfiguration", "rightsizer", "--type", "json", "-p",
                 json.dumps([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle",
                              "value": tls.ca_b64()}]))
    kube.kubectl("wait", "--for=condition=established", "--timeout=30s",
                 "crd/rightsizings.rightsizer.io")
    for ns in (WORK_NS, CRON_NS, PODS_NS):
        kube.kubectl("create", "namespace", ns)
        kube.kubectl("label", "namespace", ns, "rightsizer.io/enabled=true")
    for name, text in (("soak-enforce", ENFORCE_POLICY),
                       ("soak-churn", churn_policy(0, random.Random(0)))):
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(policy_cm(name, text)))


def workloads(kube):
    container = {"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["/bin/sh", "-c", "while true; do sleep 5; done"],
                 "resources": {"requests": {"memory": "32Mi", "cpu": "10m"},
                               "limits": {"memory": "64Mi"}}}
    pod = {"terminationGracePeriodSeconds": 1, "containers": [container]}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": DEPLOYMENT, "namespace": WORK_NS},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": DEPLOYMENT}},
                    "template": {"metadata": {"labels": {"app": DEPLOYMENT}}, "spec": pod}}}
    job_pod = dict(pod, restartPolicy="Never",
                   containers=[dict(container, command=["/bin/sh", "-c", "sleep 20"])])
    cron = {"apiVersion": "batch/v1beta1", "kind": "CronJob",
            "metadata": {"name": CRONJOB, "namespace": CRON_NS},
            "spec": {"schedule": "*/1 * * * *", "concurrencyPolicy": "Allow",
                     "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
                     "jobTemplate": {"spec": {"backoffLimit": 0, "template": {
                         "metadata": {"labels": {"app": CRONJOB}}, "spec": job_pod}}}}}
    for obj in (dep, cron):
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(obj))


class Loop(threading.Thread):
    """A paced background activity; `step` is called every `period` seconds."""

    def __init__(self, stop, period):
        super().__init__(daemon=True)
        self.stop, self.period = stop, period

    def run(self):
        nxt = time.time()
        while not self.stop.is_set():
            try:
                self.step()
            except Exception as e:  # a harness bug must not end the soak silently
                log("%s: %r" % (type(self).__name__, e))
            nxt += self.period
            self.stop.wait(max(0.0, nxt - time.time()))


class Scaler(Loop):
    """The Deployment scaled between 1 and 4 replicas every 20 s."""

    def __init__(self, stop, kube, rng):
        super().__init__(stop, 20)
        self.kube, self.rng, self.scales = kube, rng, 0

    def step(self):
        n = self.rng.randint(1, 4)
        path = "/apis/apps/v1/namespaces/%s/deployments/%s/scale" % (WORK_NS, DEPLOYMENT)
        st, _ = self.kube.call("PATCH", path, {"spec": {"replicas": n}},
                               ctype="application/merge-patch+json")
        self.scales += st == 200


class PodChurn(Loop):
    """A bare Pod created every 3 s (the POST timed: it waits on the webhook) and deleted
    20 s later."""

    def __init__(self, stop, kube):
        super().__init__(stop, 3)
        self.kube, self.n, self.live = kube, 0, []
        self.creates = []  # (t, seconds, status, message)

    def step(self):
        self.n += 1
        name = "bare-%d" % self.n
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": PODS_NS},
                "spec": {"terminationGracePeriodSeconds": 0, "restartPolicy": "Never",
                         "containers": [{"name": "app", "image": IMAGE,
                                         "imagePullPolicy": "Never",
                                         "command": ["/bin/sh", "-c", "sleep 30"]}]}}
        t = time.time()
        st, out = self.kube.call("POST", "/api/v1/namespaces/%s/pods" % PODS_NS, body,
                                 timeout=30)
        msg = "" if st == 201 else (out.get("message", "") if isinstance(out, dict) else out)
        self.creates.append((t, time.time() - t, st, str(msg)[:300]))
        if st == 201:
            self.live.append((t, name))
        while self.live and time.time() - self.live[0][0] > 20:
            _, old = self.live[0]
            st, _ = self.kube.call("DELETE", "/api/v1/namespaces/%s/pods/%s" % (PODS_NS, old))
            if st in (200, 202, 404):
                self.live.pop(0)
            else:
                break


class PolicyChurn(Loop):
    """The soak-churn policy ConfigMap rewritten every 5 s; every fifth text is invalid."""

    def __init__(self, stop, kube, rng):
        super().__init__(stop, 5)
        self.kube, self.rng, self.n, self.invalid, self.written = kube, rng, 0, 0, 0

    def step(self):
        self.n += 1
        text = churn_policy(self.n, self.rng)
        path = "/api/v1/namespaces/%s/configmaps/soak-churn" % NS
        st, _ = self.kube.call("PUT", path, policy_cm("soak-churn", text))
        if st == 200:
            self.written += 1
            self.invalid += self.n % 5 == 4


def review_body():
    with open(os.path.join(ROOT, "tests/fixtures/server/pod-review.json")) as f:
        review = json.load(f)
    review["request"]["namespace"] = WORK_NS
    review["request"]["object"]["metadata"]["namespace"] = WORK_NS
    return review


class Reviews(threading.Thread):
    """Synthetic AdmissionReviews at `rate`/s through the Service's ClusterIP (as the
    apiserver calls it), on keep-alive connections renewed every 200 reviews so both
    replicas get them. Each: (t, seconds, outcome) with outcome "ok" (200, allowed, uid
    echoed), "503", or what went wrong."""

    def __init__(self, stop, cluster_ip, ca, rate, worker):
        super().__init__(daemon=True)
        self.stop, self.ip, self.rate, self.worker = stop, cluster_ip, rate, worker
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.template = review_body()
        self.samples = []
        self.conn, self.used = None, 0

    def connect(self):
        if self.conn:
            self.conn.close()
        self.conn = http.client.HTTPSConnection(self.ip, 443, timeout=10, context=self.ctx)
        # The certificate names the Service, as the apiserver checks it.
        self.conn.connect = self._connect
        self.used = 0

    def _connect(self):
        sock = socket.create_connection((self.ip, 443), timeout=10)
        self.conn.sock = self.ctx.wrap_socket(sock, server_hostname=SVC_HOST)

    def one(self, i):
        uid = "soak-%d-%d" % (self.worker, i)
        review = copy.copy(self.template)
        review["request"] = dict(self.template["request"], uid=uid)
        body = json.dumps(review).encode()
        if self.conn is None or self.used >= 200:
            self.connect()
        self.used += 1
        t = time.time()
        try:
            self.conn.request("POST", "/mutate?timeout=3s", body,
                              {"content-type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            self.conn = None
            return t, time.time() - t, "error: " + type(e).__name__
        dt = time.time() - t
        if r.status == 503:
            return t, dt, "503"
        if r.status != 200:
            return t, dt, "status %d" % r.status
        try:
            resp = json.loads(data)["response"]
        except (ValueError, KeyError):
            return t, dt, "unparsable"
        if resp.get("uid") != uid:
            return t, dt, "wrong uid"
        return t, dt, "ok" if resp.get("allowed") is True else "not allowed"

    def run(self):
        period, nxt, i = 1.0 / self.rate, time.time(), 0
        while not self.stop.is_set():
            i += 1
            self.samples.append(self.one(i))
            nxt += period
            delay = nxt - time.time()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1:
                nxt = time.time()  # behind by more than a second: do not burst to catch up


def cluster_ip(kube):
    st, svc = kube.call("GET", "/api/v1/namespaces/%s/services/rightsizer" % NS)
    return svc["spec"]["clusterIP"]


def wait_for_pods(kube, ns, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st, pods = kube.call("GET", "/api/v1/namespaces/%s/pods" % ns)
        if st == 200 and pods["items"] and all(
                p["status"].get("phase") == "Running" for p in pods["items"]):
            return True
        time.sleep(1)
    return False
