"""The soak's faults, one every 30-60 s in a seeded order. Each returns its record: when it
started and ended, what it hit, and how long recovery took (kind-specific: a killed replica
ready again, the Lease taken over, the analyzer's next success after Prometheus returns,
the apiserver ready, every replica serving the new certificate)."""

import concurrent.futures
import http.client
import importlib.machinery
import importlib.util
import os
import socket
import ssl
import threading
import time

from soak_env import ROOT, SVC_HOST, log

KINDS = ["replica_kill", "leader_kill", "prometheus_stop", "prometheus_slow",
         "apiserver_restart", "cert_rotate", "hostile_burst"]
PROM_STOP = 120  # seconds Prometheus is gone
PROM_SLOW = 60  # seconds every query to Prometheus is delayed
PROM_DELAY = 2.0  # the delay added to each request
RESTART_AFTER = 2  # a killed replica's restart, as the kubelet restarts a container


def bench_module():
    """tests/bench/run's hostile review bodies (one definition of each)."""
    path = os.path.join(ROOT, "tests/bench/run")
    loader = importlib.machinery.SourceFileLoader("rightsizer_bench", path)
    spec = importlib.util.spec_from_loader("rightsizer_bench", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def needs(kind, interval):
    """Seconds a fault needs before the end of the run (it and its recovery)."""
    return {"prometheus_stop": PROM_STOP + interval + 30,
            "prometheus_slow": PROM_SLOW + interval + 30}.get(kind, 40)


def wait_until(f, limit, step=0.25):
    deadline = time.time() + limit
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(step)
    return None


class Faults:
    def __init__(self, world, interval):
        self.w, self.interval = world, interval
        self.prom_busy = threading.Lock()
        self.bench = bench_module()

    def replica_by_name(self, name):
        return next((r for r in self.w.replicas if r.name == name), None)

    def kill_and_restart(self, r):
        t = time.time()
        rec = {"target": r.name}
        r.kill()
        time.sleep(RESTART_AFTER)
        r.start(self.w.tls.dir)
        ready = wait_until(lambda: r.ready() and time.time(), 120)
        rec["recovery_s"] = ready and round(ready - t, 2)
        return t, rec

    def replica_kill(self):
        """SIGKILL of a replica that is not the leader, restarted 2 s later."""
        leader = self.w.lease.holder
        r = next((r for r in self.w.replicas if r.name != leader and r.alive()),
                 self.w.replicas[0])
        t, rec = self.kill_and_restart(r)
        return t, rec

    def leader_kill(self):
        """SIGKILL of the Lease holder: another identity must hold it within the Lease's
        duration plus one retry period (2 s) from the kill (soak_report.py)."""
        leader = self.w.lease.holder
        r = self.replica_by_name(leader) or self.w.replicas[0]
        killed = r.name  # its successor is a new identity (a new Pod), which may take over
        t, rec = self.kill_and_restart(r)
        taken = wait_until(lambda: self.w.lease.taken_after(t, killed), 60)
        rec["lease_gap_s"] = taken and round(taken - t, 2)
        rec["lease_duration_s"] = self.w.lease.duration
        return t, rec

    def analyzer_recovery(self, back, rec):
        got = wait_until(lambda: self.w.usage.analyzer_back(back), self.interval + 60, 1)
        rec["recovery_s"] = got and round(got - back, 2)
        rec["interval_s"] = self.interval

    def prometheus_stop(self):
        with self.prom_busy:
            t = time.time()
            self.w.prom.stop()
            time.sleep(PROM_STOP)
            self.w.prom.start()
            back = time.time()
            rec = {"down_s": round(back - t, 1)}
            self.analyzer_recovery(back, rec)
            return t, rec

    def prometheus_slow(self):
        with self.prom_busy:
            t = time.time()
            self.w.proxy.delay = PROM_DELAY
            time.sleep(PROM_SLOW)
            self.w.proxy.delay = 0.0
            back = time.time()
            rec = {"delay_s": PROM_DELAY, "slow_s": PROM_SLOW}
            self.analyzer_recovery(back, rec)
            return t, rec

    def apiserver_restart(self):
        t = time.time()
        self.w.plane.restart_apiserver()
        time.sleep(1)
        ready = wait_until(lambda: self.w.plane.apiserver_ready() and time.time(), 120, 0.5)
        return t, {"recovery_s": ready and round(ready - t, 2)}

    def cert_rotate(self):
        fam = "rightsizer_tls_cert_not_after_seconds"
        before = {r.name: r.metric(fam) for r in self.w.replicas}
        t = time.time()
        self.w.tls.rotate()

        def all_new():
            return all(not r.alive() or r.metric(fam) not in (None, before.get(r.name))
                       for r in self.w.replicas) and time.time()
        done = wait_until(all_new, 60, 0.5)
        return t, {"recovery_s": done and round(done - t, 2)}

    def hostile_burst(self):
        """Against one replica directly, beside the steady load: forged 256 KiB kinds,
        reviews at the size caps, one 20,000-container review and half-sent bodies
        held open."""
        r = next((r for r in self.w.replicas if r.alive()), self.w.replicas[0])
        ctx = ssl.create_default_context(cafile=self.w.tls.ca)
        ctx.set_alpn_protocols(["http/1.1"])
        b = self.bench
        bodies = ([b.forged_review(i, 256 * 1024) for i in range(20)] +
                  [b.at_caps_review() for _ in range(4)] + [b.hostile_review(20000)])
        t = time.time()
        held = []
        for _ in range(10):
            try:
                s = ctx.wrap_socket(socket.create_connection((r.node_ip, r.port), timeout=10),
                                    server_hostname=SVC_HOST)
                s.sendall(b"POST /mutate?timeout=3s HTTP/1.1\r\nhost: x\r\ncontent-type: "
                          b"application/json\r\ncontent-length: 3145728\r\n\r\n" + b" " * 65536)
                held.append(s)
            except OSError:
                pass
        statuses = {}

        def post(body):
            # The serving certificate names the node's address too.
            c = http.client.HTTPSConnection(r.node_ip, r.port, timeout=30, context=ctx)
            try:
                c.request("POST", "/mutate?timeout=3s", body,
                          {"content-type": "application/json"})
                return str(c.getresponse().status)
            except OSError as e:
                return type(e).__name__
            finally:
                c.close()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for st in pool.map(post, bodies):
                statuses[st] = statuses.get(st, 0) + 1
        time.sleep(max(0.0, 10 - (time.time() - t)))
        for s in held:
            s.close()
        return t, {"target": r.name, "statuses": statuses, "half_sent": len(held),
                   "recovery_s": round(time.time() - t, 2)}

    def run(self, kind):
        t0 = time.time()
        try:
            t, rec = getattr(self, kind)()
        except Exception as e:
            t, rec = t0, {"error": repr(e)}
        rec.update(kind=kind, start=t, end=time.time())
        log("fault %s: %s" % (kind, {k: v for k, v in rec.items()
                                     if k not in ("kind", "start", "end")}))
        return rec


def schedule(rng, t0, end, interval):
    """(start, kind) pairs: a gap of 30-60 s before each; kinds in seeded shuffles of all
    kinds; a kind that cannot finish before the end is skipped."""
    out, t, order, prom_free = [], t0, [], t0
    while True:
        t += rng.uniform(30, 60)
        if not order:
            order = KINDS[:]
            rng.shuffle(order)
        # One Prometheus fault at a time: the next starts after the last one's recovery.
        fits = [k for k in order if t + needs(k, interval) <= end
                and (not k.startswith("prometheus") or t >= prom_free)]
        if not fits:
            if t + 40 > end:
                return out
            continue
        k = fits[0]
        order.remove(k)
        if k.startswith("prometheus"):
            prom_free = t + needs(k, interval)
        out.append((t, k))
