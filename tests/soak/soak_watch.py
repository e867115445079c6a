"""What the soak observes while it runs: the leader Lease, the committed values in the
Rightsizing objects, each replica's RSS, descriptors and analyzer, and at the end the
refused Pods and the logs."""

import re
import threading
import time

from soak_env import NS
from soak_load import CRON_NS, PODS_NS, WORK_NS


class Poller(threading.Thread):
    def __init__(self, stop, period):
        super().__init__(daemon=True)
        self.stop, self.period = stop, period

    def run(self):
        while not self.stop.is_set():
            try:
                self.poll()
            except Exception as e:
                print("soak: %s: %r" % (type(self).__name__, e), flush=True)
            self.stop.wait(self.period)


class LeaseWatch(Poller):
    """The leader Lease every 0.5 s: (t, holder) at every change of holder."""

    def __init__(self, stop, kube):
        super().__init__(stop, 0.5)
        self.kube, self.changes, self.holder, self.duration = kube, [], None, None

    def poll(self):
        st, lease = self.kube.call("GET", "/apis/coordination.k8s.io/v1/namespaces/%s/"
                                   "leases/rightsizer-leader" % NS, timeout=2)
        if st != 200:
            return
        spec = lease.get("spec", {})
        self.duration = spec.get("leaseDurationSeconds", self.duration)
        holder = spec.get("holderIdentity")
        if holder != self.holder:
            self.holder = holder
            self.changes.append((time.time(), holder))

    def taken_after(self, t, not_by):
        """When someone other than `not_by` first held the Lease after `t` (None: never)."""
        for when, holder in self.changes:
            if when >= t and holder and holder != not_by:
                return when
        return None


def committed_values(items):
    """{(namespace/name, container, resource): (request, limit, at, changes[0])}."""
    out = {}
    for rs in items:
        key = "%s/%s" % (rs["metadata"]["namespace"], rs["metadata"]["name"])
        for c in rs.get("status", {}).get("containers", []) or []:
            for res in ("memory", "cpu"):
                committed = (c.get(res) or {}).get("committed")
                if committed:
                    first = ((c.get(res) or {}).get("changes") or [None])[0]
                    out[(key, c.get("name"), res)] = (
                        committed.get("request"), committed.get("limit"), committed.get("at"),
                        first and (first.get("request"), first.get("limit"), first.get("at")))
    return out


class CommittedWatch(Poller):
    """The Rightsizings of the soak's workloads every 5 s. A committed value must never
    disappear, and may change only with a new decision: a newer `at`, recorded as the
    newest entry of `changes`."""

    def __init__(self, stop, kube):
        super().__init__(stop, 5)
        self.kube, self.seen, self.violations, self.moves, self.samples = kube, {}, [], 0, 0

    def poll(self):
        items = []
        for ns in (WORK_NS, CRON_NS):
            st, lst = self.kube.call("GET", "/apis/rightsizer.io/v1alpha1/namespaces/%s/"
                                     "rightsizings" % ns, timeout=5)
            if st != 200:
                return  # apiserver away: no sample
            items += lst["items"]
        self.samples += 1
        now = committed_values(items)
        for key, old in self.seen.items():
            new = now.get(key)
            if new is None:
                self.violations.append((time.time(), "lost", key, old))
            elif new[:2] != old[:2]:
                self.moves += 1
                decided = (new[2] or 0) > (old[2] or 0) and new[3] == new[:3]
                if not decided:
                    self.violations.append((time.time(), "moved without a decision", key,
                                            (old, new)))
        self.seen.update(now)

    def committed(self):
        return len(self.seen)


class Usage(Poller):
    """Every 5 s: each replica's RSS and descriptors, and the analyzer's last success
    (rightsizer_analyzer_last_success_timestamp_seconds) on each."""

    def __init__(self, stop, replicas):
        super().__init__(stop, 5)
        self.replicas, self.rows, self.analyzer = replicas, [], []

    def poll(self):
        t = time.time()
        for r in self.replicas:
            u = r.usage()
            if u:
                self.rows.append((t, r.name, u[0], u[1], t - r.started))
            last = r.metric("rightsizer_analyzer_last_success_timestamp_seconds")
            if last:
                self.analyzer.append((t, r.name, last))

    def analyzer_back(self, since):
        """The first time a replica reported an analyzer success after `since`."""
        for t, _, last in self.analyzer:
            if last > since:
                return max(last, since)
        return None


def refused_by_controllers(kube):
    """FailedCreate events of the ReplicaSet and Job controllers (a Pod they asked for that
    the apiserver refused)."""
    out = []
    for ns in (WORK_NS, CRON_NS, PODS_NS):
        st, ev = kube.call("GET", "/api/v1/namespaces/%s/events?fieldSelector=reason%%3D"
                           "FailedCreate" % ns)
        if st == 200:
            out += ["%s: %s" % (ns, e.get("message", "")) for e in ev["items"]]
    return out


PANIC = re.compile(r"panicked at|^panic:|fatal error:|goroutine \d+ \[running\]")


def panics(paths):
    found = []
    for p in paths:
        try:
            with open(p, errors="replace") as f:
                for n, line in enumerate(f, 1):
                    if PANIC.search(line):
                        found.append("%s:%d: %s" % (p, n, line.strip()[:200]))
        except OSError:
            pass
    return found


def fail_open_calls(apiserver_log):
    """Webhook calls the apiserver gave up on (failurePolicy Ignore: admitted unchanged)."""
    try:
        with open(apiserver_log, errors="replace") as f:
            return sum(1 for line in f if "failed calling webhook" in line)
    except OSError:
        return None
