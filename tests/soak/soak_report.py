"""The soak's verdict: the assertions over everything observed, the per-fault table, and
memory and descriptors over time (printed, and as JSON)."""

POD_LIMIT = 3 + 1  # the shipped webhook timeoutSeconds (3) plus one second
AROUND = 15  # seconds after a fault's end still counted as "around" it
WARMUP = 30  # seconds of a replica's life left out of the memory figures
RSS_GROWTH = 0.10
FD_SLACK = 16


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def ms(v):
    return None if v is None else round(v * 1000, 1)


def windows(faults, kinds):
    return [(f["start"] - 1, f["end"] + AROUND) for f in faults if f["kind"] in kinds]


def inside(t, wins):
    return any(a <= t <= b for a, b in wins)


def review_stats(samples):
    lat = [dt for _, dt, o in samples if o == "ok"]
    return {"reviews": len(samples), "ok": len(lat),
            "503": sum(1 for s in samples if s[2] == "503"),
            "errors": sum(1 for s in samples if s[2] not in ("ok", "503")),
            "p50_ms": ms(pct(lat, 0.5)), "p99_ms": ms(pct(lat, 0.99)),
            "max_ms": ms(max(lat) if lat else None)}


def evaluate(o):
    """o: the observations (dict). Returns (violations, report)."""
    v = []
    faults, t0, end = o["faults"], o["t0"], o["end"]
    kills = windows(faults, ("replica_kill", "leader_kill"))
    api = windows(faults, ("apiserver_restart",))

    # 1. Every synthetic review answered allowed (or 503); a broken connection only to a
    #    replica being killed (the apiserver's failurePolicy then admits unchanged).
    for t, dt, out in o["reviews"]:
        if out in ("ok", "503"):
            continue
        if out.startswith("error") and inside(t, kills):
            continue
        v.append("review at +%.0f s: %s" % (t - t0, out))

    # 2. No Pod refused, none delayed past the webhook timeout plus one second (a POST
    #    while the apiserver restarts is the apiserver's, not the webhook's).
    for t, dt, st, msg in o["pods"]:
        if inside(t, api):
            continue
        if st != 201:
            v.append("Pod at +%.0f s refused (%s): %s" % (t - t0, st, msg))
        elif dt > POD_LIMIT:
            v.append("Pod at +%.0f s took %.1f s (limit %d s)" % (t - t0, dt, POD_LIMIT))
    v += ["controller's Pod refused: " + m for m in o["failed_create"]]

    # 3. Committed values never lost or moved except by a decision.
    v += ["Rightsizing %s %s: %s" % (k, kind, d) for _, kind, k, d in o["committed_violations"]]

    # 4. The Lease taken over within its duration (+ one 2 s retry period) of the kill;
    #    the analyzer back within one interval (+10 s for the cycle) of Prometheus' return;
    #    every fault recovered.
    for f in faults:
        if "error" in f:
            v.append("fault %s failed: %s" % (f["kind"], f["error"]))
        if f["kind"] == "leader_kill":
            # The holder renewed at most one retry period (2 s) before the kill, so the
            # Lease expires within its duration of it; a candidate retries every 2 s; the
            # watch reads the Lease every 0.5 s (+0.5 s for its request).
            gap, dur = f.get("lease_gap_s"), f.get("lease_duration_s") or 15
            if gap is None or gap > dur + 2 + 1:
                v.append("Lease not taken over within %s s + 3 s: %s" % (dur, gap))
        if f["kind"].startswith("prometheus"):
            rec = f.get("recovery_s")
            if rec is None or rec > o["interval"] + 10:
                v.append("analyzer not back within one interval (%d s) after %s: %s"
                         % (o["interval"], f["kind"], rec))
        elif "recovery_s" in f and f["recovery_s"] is None:
            v.append("no recovery after %s" % f["kind"])

    # 5. Memory and descriptors over the second half: the replicas' high-water mark of
    #    the first half against their peak in the run's last fifth (replicas past their
    #    first 30 s; a killed replica's successor counts as the same Pod slot). A high-water
    #    mark, not a point: glibc keeps the peak a large review reached for reuse
    #    (BENCHMARKS.md, "Under attack"), so a hostile burst steps RSS up once; growth past
    #    that step over time is what a leak looks like.
    mid = t0 + (end - t0) / 2
    rows = [r for r in o["usage"] if r[4] >= WARMUP]
    early = [r for r in rows if r[0] < mid]
    late = [r for r in rows if r[0] >= end - (end - mid) / 5]
    mem = {"not_measured": "no replica sample past its first 30 s in the first half and "
           "the last fifth"}
    if early and late:
        rss1, rss2 = max(r[2] for r in early), max(r[2] for r in late)
        fd1, fd2 = max(r[3] for r in early), max(r[3] for r in late)
        mem = {"rss_first_half_high_mib": round(rss1, 1), "rss_end_mib": round(rss2, 1),
               "rss_growth": round(rss2 / rss1 - 1, 3), "fds_first_half_high": fd1,
               "fds_end": fd2, "rss_peak_mib": round(max(r[2] for r in rows), 1),
               "fds_peak": max(r[3] for r in rows)}
        if rss2 > rss1 * (1 + RSS_GROWTH):
            v.append("RSS grew %.0f%% over the second half (%.1f -> %.1f MiB)"
                     % (100 * (rss2 / rss1 - 1), rss1, rss2))
        if fd2 > fd1 + FD_SLACK:
            v.append("open descriptors grew over the second half: %d -> %d" % (fd1, fd2))

    # 6. No panic in any log.
    v += ["panic: " + p for p in o["panics"]]

    table = fault_table(o, faults)
    return v, {"usage": [[round(r[0] - t0), r[1], round(r[2], 1), r[3]] for r in o["usage"]],
               "faults": table, "memory": mem, "over_time": over_time(o),
               "steady": review_stats([s for s in o["reviews"]
                                       if not inside(s[0], windows(faults, faults_kinds(faults)))]),
               "all_reviews": review_stats(o["reviews"]),
               "pods": pod_stats(o["pods"]), "committed": o["committed"],
               "committed_moves": o["committed_moves"], "policy": o["policy"]}


def faults_kinds(faults):
    return {f["kind"] for f in faults}


def pod_stats(pods):
    lat = [dt for _, dt, st, _ in pods if st == 201]
    return {"created": len(lat), "not_created": len(pods) - len(lat),
            "p50_ms": ms(pct(lat, 0.5)), "p99_ms": ms(pct(lat, 0.99)),
            "max_ms": ms(max(lat) if lat else None)}


def fault_table(o, faults):
    rows = []
    for kind in sorted(faults_kinds(faults)):
        mine = [f for f in faults if f["kind"] == kind]
        wins = windows(mine, (kind,))
        revs = review_stats([s for s in o["reviews"] if inside(s[0], wins)])
        pods = [p for p in o["pods"] if inside(p[0], wins)]
        api = windows(faults, ("apiserver_restart",))
        bad = [p for p in pods if p[2] != 201 or p[1] > POD_LIMIT]
        blocked = sum(1 for p in bad if not inside(p[0], api))
        gaps = [f["lease_gap_s"] for f in mine if f.get("lease_gap_s") is not None]
        recs = [f["recovery_s"] for f in mine if f.get("recovery_s") is not None]
        rows.append({"fault": kind, "count": len(mine), "reviews": revs["reviews"],
                     "p50_ms": revs["p50_ms"], "p99_ms": revs["p99_ms"],
                     "max_ms": revs["max_ms"], "review_errors": revs["errors"] + revs["503"],
                     "pods": len(pods), "pods_blocked": blocked,
                     "pods_api_away": len(bad) - blocked,
                     "pod_max_ms": ms(max((p[1] for p in pods), default=None)),
                     "lease_gap_s": max(gaps) if gaps else None,
                     "recovery_max_s": max(recs) if recs else None})
    return rows


def over_time(o, step=60):
    """Per minute of the run: peak RSS and descriptors over the replicas."""
    out, t0 = [], o["t0"]
    for m in range(int((o["end"] - t0) // step) + 1):
        rows = [r for r in o["usage"] if t0 + m * step <= r[0] < t0 + (m + 1) * step]
        if rows:
            out.append({"minute": m, "rss_mib": round(max(r[2] for r in rows), 1),
                        "fds": max(r[3] for r in rows),
                        "replicas": sorted({r[1] for r in rows})})
    return out


def fmt(v, width):
    return ("-" if v is None else str(v)).rjust(width)


def print_report(rep, violations):
    cols = [("fault", 18), ("count", 5), ("reviews", 7), ("p50_ms", 7), ("p99_ms", 7),
            ("max_ms", 8), ("review_errors", 13), ("pods", 5), ("pods_blocked", 12), ("pods_api_away", 13),
            ("pod_max_ms", 10), ("lease_gap_s", 11), ("recovery_max_s", 14)]
    lines = ["".join(n.rjust(w + 1) for n, w in cols)]
    steady = dict(rep["steady"], fault="(between faults)", count="-",
                  review_errors=rep["steady"]["errors"] + rep["steady"]["503"])
    for row in [steady] + rep["faults"]:
        lines.append("".join(fmt(row.get(n), w + 1) for n, w in cols))
    lines.append("")
    lines.append("minute  rss_mib  fds")
    for r in rep["over_time"]:
        lines.append("%6d %8.1f %4d" % (r["minute"], r["rss_mib"], r["fds"]))
    lines.append("memory: %s" % rep["memory"])
    lines.append("pods: %s" % rep["pods"])
    lines.append("all reviews: %s" % rep["all_reviews"])
    lines.append("committed values watched: %d, moved by decisions: %d; policy rewrites: %s"
                 % (rep["committed"], rep["committed_moves"], rep["policy"]))
    lines.append("webhook calls the apiserver failed open: %s; leader changes: %s"
                 % (rep.get("fail_open_calls"), rep.get("leader_changes")))
    lines.append("violations: %d" % len(violations))
    lines += ["  " + x for x in violations[:50]]
    text = "\n".join(lines)
    print(text, flush=True)
    return text



def markdown(rep):
    """The per-fault table and memory over time as Markdown, for BENCHMARKS.md."""
    cols = ["fault", "count", "reviews", "p50_ms", "p99_ms", "max_ms", "review_errors", "pods",
            "pods_blocked", "pods_api_away", "pod_max_ms", "lease_gap_s", "recovery_max_s"]
    steady = dict(rep["steady"], fault="(between faults)", count="-",
                  review_errors=rep["steady"]["errors"] + rep["steady"]["503"])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in [steady] + rep["faults"]:
        out.append("| " + " | ".join("-" if row.get(c) is None else str(row.get(c))
                                     for c in cols) + " |")
    out += ["", "| minute | " + " | ".join(str(r["minute"]) for r in rep["over_time"]) + " |",
            "|---|" + "---:|" * len(rep["over_time"]),
            "| RSS MiB (peak of the replicas) | " + " | ".join(
                str(r["rss_mib"]) for r in rep["over_time"]) + " |",
            "| open descriptors (peak) | " + " | ".join(
                str(r["fds"]) for r in rep["over_time"]) + " |"]
    return "\n".join(out)
