"""One replica at full scale (issue 24): `tests/bench/run --scale [--containers N]`.

A real Prometheus holds generated series for N running containers (default 100,000): memory
working set and RSS, CPU, and the kube-state-metrics series the analyzer reads (Pod and
ReplicaSet owners, requests, limits, OOM kills). One Pod per Deployment, two containers each,
so N containers are N cached recommendations (the cache's worst case). The release
`rightsizer serve` runs with the shipped flags (deploy/base: the analyzer on, its default
interval and windows, kube-state-metrics `always`, the shipped policies), outside a cluster
(`--kube never`). After its first full analyzer cycle (query count and cycle time from its own
/metrics), oha sends Pod reviews at a fixed rate while /metrics is scraped every second;
RSS and CPU are sampled from /proc every 100 ms from the start.

The Pod store is filled only from a kube Pod watch, which the shipped manifests do not start
(kube-state-metrics `always`); it is measured in process (`cargo bench --bench store_memory
-- pods` at N pods) and added to the measured peak for the "everything on" figure.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

STEP = 120             # the container series' resolution (a usual scrape interval of cAdvisor)
HISTORY = 3.5 * 3600   # past the default evidence gate: 100 samples over 3 hours
AHEAD = 2 * 3600       # series run on past the start, so "now" finds them for the whole run
                       # (and a --keep-series backfill serves runs for the next 1 h 50)
KSM_STEP = 240
KSM_BACK = 30 * 60     # the kube-state-metrics series are read at "now" only
MI = 1 << 20


def _containers(n):
    # One Deployment per Pod, two containers: (namespace, deployment, container, index).
    for i in range(n):
        yield f"ns-{i // 100:04}", f"app-{(i % 100) // 2:02}", f"c{i % 2}", i


def write_series(path, n, now):
    """OpenMetrics for promtool; returns the sample count."""
    times = list(range(int(now - HISTORY), int(now + AHEAD), STEP))
    ksm_times = list(range(int(now - KSM_BACK), int(now + AHEAD), KSM_STEP))
    samples = 0
    with open(path, "w", buffering=1 << 22) as f:
        w = f.write
        for metric, kind in (("container_memory_working_set_bytes", 0),
                             ("container_memory_rss", 1),
                             ("container_cpu_usage_seconds_total", 2)):
            w(f"# TYPE {metric} gauge\n")
            for ns, d, c, i in _containers(n):
                labels = f'{metric}{{namespace="{ns}",pod="{d}-rs-0",container="{c}"}} '
                base = (100 + (i % 37) * 10) * MI
                rate = 0.05 + (i % 5) * 0.02
                if kind == 0:
                    w("".join(f"{labels}{base + ((k * 7 + i) % 13) * 3 * MI} {t}\n"
                              for k, t in enumerate(times)))
                elif kind == 1:
                    w("".join(f"{labels}{base * 4 // 5} {t}\n" for t in times))
                else:
                    w("".join(f"{labels}{1e5 + k * STEP * rate:.1f} {t}\n"
                              for k, t in enumerate(times)))
                samples += len(times)
        per = len(ksm_times)
        w("# TYPE kube_pod_owner gauge\n")
        for ns, d, c, i in _containers(n):
            if c == "c0":
                lab = (f'kube_pod_owner{{namespace="{ns}",pod="{d}-rs-0",owner_kind="ReplicaSet",'
                       f'owner_name="{d}-rs"}} 1 ')
                w("".join(f"{lab}{t}\n" for t in ksm_times))
                samples += per
        w("# TYPE kube_replicaset_owner gauge\n")
        for ns, d, c, i in _containers(n):
            if c == "c0":
                lab = (f'kube_replicaset_owner{{namespace="{ns}",replicaset="{d}-rs",'
                       f'owner_kind="Deployment",owner_name="{d}"}} 1 ')
                w("".join(f"{lab}{t}\n" for t in ksm_times))
                samples += per
        for metric, value in (("kube_pod_container_resource_requests", 512 * MI),
                              ("kube_pod_container_resource_limits", 1024 * MI)):
            w(f"# TYPE {metric} gauge\n")
            for ns, d, c, i in _containers(n):
                lab = (f'{metric}{{namespace="{ns}",pod="{d}-rs-0",container="{c}",'
                       f'resource="memory",unit="byte"}} {value} ')
                w("".join(f"{lab}{t}\n" for t in ksm_times))
                samples += per
        # 1 in 50 containers was OOM-killed.
        metric = "kube_pod_container_status_last_terminated_reason"
        w(f"# TYPE {metric} gauge\n")
        for ns, d, c, i in _containers(n):
            if i % 50 == 7:
                lab = (f'{metric}{{namespace="{ns}",pod="{d}-rs-0",container="{c}",'
                       f'reason="OOMKilled"}} 1 ')
                w("".join(f"{lab}{t}\n" for t in ksm_times))
                samples += per
        w("# EOF\n")
    return samples


def limit_mib(root):
    """The shipped memory limit (deploy/base/deployment.yaml), MiB."""
    with open(os.path.join(root, "deploy", "base", "deployment.yaml")) as fh:
        text = fh.read()
    m = re.search(r"limits:\s*\n(?:\s+(?:cpu:|#).*\n)*\s+memory:\s*(\d+)(Mi|Gi)", text)
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """promtool backfill, then a real Prometheus on a free port (as tests/support/prometheus.rs)."""

    def __init__(self, tmp, om):
        self.data = os.path.join(tmp, "data")
        os.makedirs(self.data, exist_ok=True)
        t = time.time()
        if om:
            subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics",
                            "--max-block-duration=24h", om, self.data],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            os.remove(om)
        self.backfill_s = time.time() - t
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1m\n")
        self.port = _free_port()
        self.log = open(os.path.join(tmp, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=60d", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.url() + "/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("tests/bench/run: prometheus did not become ready")

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _value(text, name):
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (len(line) > len(name) and line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


class Sampler(threading.Thread):
    """RSS and CPU of a process every 100 ms; /metrics every second once asked to."""

    def __init__(self, serve):
        super().__init__(daemon=True)
        self.serve, self.stop_flag, self.scraping = serve, threading.Event(), False
        self.rss = []      # (t, MiB)
        self.cpu = []      # (t, seconds)
        self.scrapes = []  # (bytes, seconds)
        self.scrape_errors = 0

    def run(self):
        last_scrape = 0.0
        while not self.stop_flag.is_set():
            now = time.time()
            try:
                self.rss.append((now, self.serve.memory()["VmRSS"]))
                self.cpu.append((now, self.serve.cpu_seconds()))
            except (OSError, KeyError):
                return
            if self.scraping and now - last_scrape >= 1.0:
                last_scrape = now
                t = time.perf_counter()
                try:
                    body = urllib.request.urlopen(f"http://{self.serve.admin}/metrics",
                                                  timeout=30).read()
                    self.scrapes.append((len(body), time.perf_counter() - t))
                except OSError:
                    self.scrape_errors += 1
            time.sleep(0.1)

    def peak(self, since=0.0, until=float("inf")):
        return max((v for t, v in self.rss if since <= t <= until), default=0.0)

    def cpu_between(self, a, b):
        inside = [(t, c) for t, c in self.cpu if a <= t <= b]
        if len(inside) < 2:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def recorded_pod_store(root, n):
    """The Pod store's live heap at n pods as BENCHMARKS.md's `## Pod watch store` records it."""
    with open(os.path.join(root, "BENCHMARKS.md")) as fh:
        doc = fh.read()
    sec = doc[doc.index("## Pod watch store"):]
    for line in sec.splitlines():
        m = re.match(r"\|\s*([\d ]+?)\s*\|\s*([\d.]+) MiB", line)
        if m and int(m.group(1).replace(" ", "")) == n:
            return float(m.group(2)), "BENCHMARKS.md `## Pod watch store` (store_memory)"
    return None, f"no {n}-pod row in BENCHMARKS.md `## Pod watch store`"


def pod_store(n):
    """Live heap of the Pod store at n pods (in process, counting allocator)."""
    from_run = subprocess.run(
        ["cargo", "bench", "-p", "rightsizer", "--bench", "store_memory", "--", "pods"],
        env=dict(os.environ, BENCH_PODS=str(n)), text=True, capture_output=True)
    out = from_run.stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\d+) pods: live\s+([\d.]+) MiB", line)
        if m and int(m.group(1)) == n:
            return float(m.group(2)), "`cargo bench --bench store_memory -- pods`, this run"
    return None, (out + from_run.stderr)[-600:]


def backfilled(tmp, n, keep=None):
    """A Prometheus holding the series for n containers. With `keep` (a folder), the
    backfill is kept there and reused while its series still cover the run."""
    base = keep or tmp
    meta_path = os.path.join(base, "meta.json")
    if keep and os.path.exists(meta_path):
        with open(meta_path) as fh:
            meta = json.load(fh)
        if meta["n"] == n and meta["now"] + AHEAD - 10 * 60 > time.time():
            return Prometheus(base, None), meta
        shutil.rmtree(os.path.join(base, "data"), ignore_errors=True)
    os.makedirs(base, exist_ok=True)
    om = os.path.join(base, "history.om")
    now = time.time()
    t = time.time()
    meta = {"n": n, "now": now, "samples": write_series(om, n, now)}
    meta["om_mib"] = os.path.getsize(om) / MI
    meta["generate_s"] = time.time() - t
    prom = Prometheus(base, om)
    meta["backfill_s"] = prom.backfill_s
    with open(meta_path, "w") as fh:
        json.dump(meta, fh)
    return prom, meta


def measure(oha_fn, serve_cls, oha_exe, bin_exe, fixtures, n, rate, seconds, log, keep=None):
    with tempfile.TemporaryDirectory(prefix="rightsizer-scale-") as tmp:
        prom, from_ = backfilled(tmp, n, keep)
        from_ = dict(from_)
        log(f"  {from_['samples']:,} samples ({from_['om_mib']:.0f} MiB), generated in "
            f"{from_['generate_s']:.0f} s, backfilled in {from_['backfill_s']:.0f} s; "
            f"prometheus on {prom.url()}")
        serve = None
        try:
            # The shipped Deployment's analyzer settings: RIGHTSIZER_PROMETHEUS_URL and
            # RIGHTSIZER_KUBE_STATE_METRICS=always; interval and windows at their defaults.
            t_start = time.time()
            serve = serve_cls(bin_exe, tmp, ["--prometheus", prom.url(),
                                             "--kube-state-metrics", "always"])
            sampler = Sampler(serve)
            sampler.start()
            deadline = time.time() + 900
            text = ""
            while time.time() < deadline:
                text = urllib.request.urlopen(f"http://{serve.admin}/metrics", timeout=30
                                              ).read().decode()
                if (_value(text, "rightsizer_analyzer_cycle_duration_seconds_count") or 0) >= 1:
                    break
                time.sleep(1)
            t_cycle = time.time()
            from_["cycle_s"] = (_value(text, "rightsizer_analyzer_cycle_duration_seconds_sum")
                                or float("nan"))
            from_["queries"] = _value(text, "rightsizer_analyzer_queries_per_cycle")
            from_["series"] = _value(text, "rightsizer_analyzer_series_read")
            from_["entries"] = _value(text, "rightsizer_cache_entries")
            from_["errors"] = _value(text, "rightsizer_analyzer_errors_total") or 0
            from_["range_queries"] = _value(text, "rightsizer_analyzer_range_queries_total") or 0
            from_["failed_parts"] = _value(text, "rightsizer_analyzer_failed_parts")
            from_["stale"] = _value(text, "rightsizer_cache_stale_entries") or 0
            from_["peak_cycle"] = sampler.peak()
            from_["cpu_cycle"] = sampler.cpu_between(t_start, t_cycle)
            from_["rss_after_cycle"] = serve.memory()["VmRSS"]
            log(f"  cycle: {from_}")
            # Reviews at a fixed rate with /metrics scraped every second beside them.
            sampler.scraping = True
            before = serve.metrics()[0]
            t0 = time.time()
            res = oha_fn(oha_exe, serve, os.path.join(fixtures, "pod-review.json"),
                         ["--http2", "-c", "2", "-p", "8"], seconds, rate=rate)
            t1 = time.time()
            sampler.scraping = False
            after = serve.metrics()[0]
            sampler.stop_flag.set()
            sampler.join()
            lp, s = res["latencyPercentiles"], res["summary"]
            codes = res.get("statusCodeDistribution", {})
            from_.update({
                "rate": rate, "seconds": seconds,
                "achieved": s.get("requestsPerSec", 0.0),
                "c50": lp.get("p50"), "c99": lp.get("p99"),
                "client": res.get("client", "oha, HTTP/2, 2 connections × 8 streams, fixed rate"),
                "non200": sum(v for k, v in codes.items() if k != "200"),
                "peak_load": sampler.peak(t0, t1),
                "cpu_load": sampler.cpu_between(t0, t1),
                "peak": sampler.peak(),
                "hwm": serve.memory()["VmHWM"],
                "scrape_mib": max((b for b, _ in sampler.scrapes), default=0) / MI,
                "scrape_s": max((d for _, d in sampler.scrapes), default=0),
                "scrapes": len(sampler.scrapes),
                "scrape_errors": sampler.scrape_errors,
                "before": before, "after": after,
            })
        finally:
            if serve:
                serve.stop()
                if keep:
                    # The serve log says which query failed, if one did.
                    shutil.copy(os.path.join(tmp, "serve.log"), keep)
            prom.stop()
    return from_


def report(f, n, store, store_line, quantile, us, machine, root):
    limit = limit_mib(root)
    L = []
    L.append(f"Measured {machine['date']} with `tests/bench/run --scale` ({n:,} containers) on "
             f"{machine['cpus']} × {machine['model']} (shared with other jobs; load average "
             f"{machine['load'][0]:.2f} at the start), release build.")
    L.append("")
    L.append(f"A real Prometheus holds generated series for {n:,} running containers (one Pod per "
             "Deployment, two containers each, so as many cached recommendations): working set, RSS and "
             f"CPU every {STEP} s for {HISTORY / 3600:g} h, and the kube-state-metrics series the analyzer "
             "reads (Pod and ReplicaSet owners, requests, limits, 1 in 50 OOM-killed) "
             f"({f['samples']:,} samples, backfilled with promtool in {f['backfill_s']:.0f} s). The release "
             "`rightsizer serve` runs with the shipped analyzer settings (deploy/base: kube-state-metrics "
             "`always`, default interval and windows, the shipped policies), outside a cluster "
             "(`--kube never`). After its first analyzer cycle, Pod reviews are sent "
             f"(at {f['rate']:,}/s with oha, back to back without it) for {f['seconds']:g} s while `/metrics` is scraped every second; "
             "VmRSS and CPU (utime + stime) are sampled from `/proc` every 100 ms from the start.")
    L.append("")
    L.append("| what | measured |")
    L.append("|---|---:|")
    failed = f.get("failed_parts")
    L.append(f"| analyzer cycle (end to end) | {f['cycle_s']:.1f} s, {f['queries']:.0f} queries "
             f"({f.get('range_queries', 0):.0f} of them range reads), "
             f"{f['series']:,.0f} series read, {f['errors']:.0f} errors, "
             f"{'-' if failed is None else f'{failed:.0f}'} failed parts |")
    L.append(f"| cached recommendations after the cycle | {f['entries']:,.0f} "
             f"({f.get('stale', 0):,.0f} stale) |")
    L.append(f"| peak RSS during the cycle | {f['peak_cycle']:.1f} MiB |")
    cpu = f"{f['cpu_cycle'] * 100:.0f} %" if f['cpu_cycle'] is not None else "-"
    L.append(f"| CPU from start to the end of the cycle (of one core) | {cpu} |")
    L.append(f"| RSS after the cycle | {f['rss_after_cycle']:.1f} MiB |")
    L.append(f"| `/metrics` while reviews run | {f['scrape_mib']:.1f} MiB, slowest scrape "
             f"{f['scrape_s'] * 1e3:,.0f} ms ({f['scrapes']} scrapes, {f['scrape_errors']} failed) |")
    cpu = f"{f['cpu_load'] * 100:.0f} %" if f['cpu_load'] is not None else "-"
    L.append(f"| reviews meanwhile ({f['client']}) | {f['achieved']:,.0f}/s, client p50 {us(f['c50'])}, p99 "
             f"{us(f['c99'])}; server p50 {us(quantile(f['before'], f['after'], 0.5))}, p99 "
             f"{us(quantile(f['before'], f['after'], 0.99))}; {f['non200']} not 200 |")
    L.append(f"| CPU while reviews and scrapes run (of one core) | {cpu} |")
    L.append(f"| peak RSS while reviews and scrapes run | {f['peak_load']:.1f} MiB |")
    L.append(f"| **peak RSS, whole run** (VmHWM) | **{f['peak']:.1f} MiB** ({f['hwm']:.1f} MiB) |")
    if store is not None:
        total = max(f["peak"], f["hwm"]) + store
        L.append(f"| Pod store at {n:,} Pods (in process, from {store_line}; not started by the "
                 f"shipped manifests) | {store:.1f} MiB |")
        L.append(f"| **everything on** (peak + Pod store) | **{total:.1f} MiB** |")
    else:
        total = max(f["peak"], f["hwm"])
        L.append(f"| Pod store | not measured: {store_line} |")
    goal = limit * 0.6
    if failed is None or not f["entries"]:
        L.append("")
        L.append(f"**The first analyzer cycle did not complete** ({f['errors']:.0f} failed queries, "
                 f"{f['entries']:,.0f} cached): the peak is that of a failed cycle, and neither the "
                 "cache nor its `/metrics` series were in memory during the reviews.")
    elif failed:
        L.append("")
        L.append(f"**The first analyzer cycle completed with {failed:.0f} failed parts** "
                 f"({f['errors']:.0f} failed queries; {f['entries']:,.0f} of {n:,} containers cached): "
                 "the workloads of a failed namespace scope were not decided, so the cache and its "
                 "`/metrics` series held only the others during the reviews.")
    L.append("")
    L.append(f"Goal: under 60 % of the shipped {limit}Mi limit ({goal:.1f} MiB) with everything on: "
             f"{total:.1f} MiB → {'met' if total < goal else 'NOT met'}.")
    return "\n".join(L) + "\n", total


def write(root, text):
    path = os.path.join(root, "BENCHMARKS.md")
    with open(path) as fh:
        doc = fh.read()
    head = "## One replica at 100k containers\n"
    if head in doc:
        start = doc.index(head) + len(head)
        end = doc.find("\n## ", start)
        end = len(doc) if end < 0 else end + 1
        doc = doc[:start] + "\n" + text + "\n" + doc[end:]
    else:
        # After the webhook speed section, before the next.
        at = doc.index("## Webhook speed\n")
        nxt = doc.find("\n## ", at + 1) + 1
        doc = doc[:nxt] + head + "\n" + text + "\n" + doc[nxt:]
    with open(path, "w") as fh:
        fh.write(doc)
