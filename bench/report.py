#!/usr/bin/env python3
"""Results of bench/run: records rows, parses peer tools' output, renders the table and JSON.

    report.py add RESULTS --measure P1 --path direct --label TEXT --kind KIND --values JSON [--mode MODE]
    report.py add RESULTS --measure P6 --path streams_mux --label TEXT --kind KIND --status partial --reason TEXT
    report.py parse-wrk FILE            -> {"req_s", "p50_ms", "p99_ms", "errors", ...}
    report.py parse-h2load FILE LOG     -> {"req_s", "p50_ms", "p99_ms", "errors", ...}
    report.py parse-iperf3 FILE         -> {"gbit_s", ...}
    report.py latency SAMPLES...        -> {"p50_us", "p99_us", "p999_us", ...} of all the samples
    report.py render RESULTS META --format text|json [--out FILE]

RESULTS holds one JSON object a line (a row of a measure); META is one JSON object (mode,
machine, versions, parameters). Targets are computed here, from the rows of the same run.

A row through an agent has its stream mode in "mode" (mux or per-connection) and its path
carries the mode's suffix (rstream_tcp_mux, rstream_tcp_conn_c8, engine_1000_mux); tables
show the modes of a path next to each other.
"""

import argparse
import json
import math
import re
import sys

MIB = 1024 * 1024

TITLES = {
    "P1": "P1 bulk throughput, one stream",
    "P2": "P2 latency, 64-byte ping-pong",
    "P3": "P3 new connections per second (connect, 1 byte each way, close)",
    "P4": "P4 HTTPS, 1 KiB responses",
    "P5": "P5 memory (VmRSS)",
    "P6": "P6 scale",
}

RSTREAM_BULK_PATHS = ["rstream_private", "rstream_tcp", "rstream_tls"]

# The agents' stream modes (rstream forward --stream-mode), in table order, with the suffix
# a row's path takes for each; the default mode decides PASS/MISS where one mode does.
MODES = {"per-connection": "conn", "mux": "mux"}
DEFAULT_MODE = "mux"


def moded(path, mode, qualifier=""):
    """The path of a row in MODE: rstream_tcp -> rstream_tcp_mux (then a qualifier such as _c8)."""
    return f"{path}_{MODES[mode]}{qualifier}"


def pair_key(row):
    """A row's path without its mode suffix: the rows of one path in each mode share it."""
    mode = row.get("mode")
    if mode not in MODES:
        return row["path"]
    return re.sub(r"_" + MODES[mode] + r"(?=_|$)", "", row["path"], count=1)


def side_by_side(rows):
    """The rows in the order first seen, with those of one path in several modes next to each other."""
    groups = {}
    for r in rows:
        groups.setdefault(pair_key(r), []).append(r)
    order = list(MODES)
    out = []
    for group in groups.values():
        out += sorted(group, key=lambda r: order.index(r["mode"]) if r.get("mode") in MODES else -1)
    return out


# ---------------------------------------------------------------- recording and parsing


def cmd_add(a):
    row = {"measure": a.measure, "path": a.path, "label": a.label, "kind": a.kind}
    if a.mode:
        row["mode"] = a.mode
    if a.values is not None:
        row["values"] = json.loads(a.values)
    if a.status:
        row["status"] = a.status
    if a.reason:
        row["reason"] = a.reason
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cmd_parse_wrk(a):
    text = open(a.file, encoding="utf-8", errors="replace").read()
    out = {}
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if not m:
        sys.exit(f"report.py: no 'Requests/sec' in {a.file}")
    out["req_s"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        out["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+" + pct + r"%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            out[key] = round(to_ms(m.group(1), m.group(2)), 3)
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    out["errors"] = errors
    print(json.dumps(out, sort_keys=True))


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def cmd_parse_h2load(a):
    text = open(a.file, encoding="utf-8", errors="replace").read()
    out = {}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    if not m:
        sys.exit(f"report.py: no 'finished in' line in {a.file}")
    out["req_s"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  text)
    if m:
        out["requests"] = int(m.group(4))
        out["errors"] = int(m.group(5)) + int(m.group(6))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["errors"] = out.get("errors", 0) + int(m.group(3)) + int(m.group(4))
    # The log file: start time (µs), status, duration (µs) of each request, tab-separated.
    durations = []
    with open(a.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].strip().isdigit():
                durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    if durations:
        out["p50_ms"] = round(percentile(durations, 0.5), 3)
        out["p99_ms"] = round(percentile(durations, 0.99), 3)
    print(json.dumps(out, sort_keys=True))


def cmd_latency(a):
    """Merges the samples files of several ping-pong rounds (microseconds, one a line)."""
    us = []
    for name in a.files:
        with open(name, encoding="utf-8") as f:
            us.extend(float(line) for line in f if line.strip())
    if not us:
        sys.exit("report.py: no latency samples")
    us.sort()
    out = {"count": len(us), "rounds": len(a.files), "p50_us": round(percentile(us, 0.5), 1),
           "p99_us": round(percentile(us, 0.99), 1), "p999_us": round(percentile(us, 0.999), 1),
           "mean_us": round(sum(us) / len(us), 1), "min_us": us[0], "max_us": us[-1]}
    print(json.dumps(out, sort_keys=True))


def cmd_parse_iperf3(a):
    doc = json.load(open(a.file, encoding="utf-8"))
    if "error" in doc:
        sys.exit(f"report.py: iperf3: {doc['error']}")
    end = doc["end"]
    bps = end["sum_received"]["bits_per_second"]
    secs = end["sum_received"].get("seconds", 0)
    print(json.dumps({"gbit_s": round(bps / 1e9, 3), "seconds": round(secs, 3),
                      "retransmits": end.get("sum_sent", {}).get("retransmits")}, sort_keys=True))


# ---------------------------------------------------------------- rendering


def load_rows(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


class Results:
    def __init__(self, rows):
        self.rows = rows

    def of(self, measure):
        return side_by_side([r for r in self.rows if r["measure"] == measure])

    def get(self, measure, path, key):
        """A measured value, or None when the row is missing or was not measured."""
        for r in self.rows:
            if r["measure"] == measure and r["path"] == path and "values" in r:
                v = r["values"].get(key)
                return v if isinstance(v, (int, float)) else None
        return None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "-"
    return f"{v:,.{digits}f}"


def fmt_signed(v):
    return "-" if v is None else f"{v:+,.1f}"


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def verdict(checks):
    """MISS when a check failed, PASS when every check passed, N/A when some could not be computed."""
    if any(c is False for c in checks):
        return "MISS"
    if checks and all(c is True for c in checks):
        return "PASS"
    return "N/A"


def default_mode_target(tid, text, fn):
    """A target the default mode decides: fn(mode) gives (checks, details) for a mode; the other
    modes' details follow as information."""
    checks, details = fn(DEFAULT_MODE)
    details = [f"{DEFAULT_MODE}: {d}" for d in details]
    for mode in MODES:
        if mode != DEFAULT_MODE:
            details += [f"{mode} (information): {d}" for d in fn(mode)[1]]
    return {"id": tid, "target": text, "result": verdict(checks), "mode": DEFAULT_MODE, "details": details}


def compute_targets(res, meta):
    targets = []

    # P1: each rstream path >= 2x ssh -R and >= 0.6x socat double relay.
    def p1(mode):
        details, checks = [], []
        ssh = res.get("P1", "ssh", "gbit_s")
        socat = res.get("P1", "socat", "gbit_s")
        for path in RSTREAM_BULK_PATHS:
            v = res.get("P1", moded(path, mode), "gbit_s")
            if v is None:
                continue
            r_ssh, r_socat = ratio(v, ssh), ratio(v, socat)
            ok = None if r_ssh is None or r_socat is None else (r_ssh >= 2.0 and r_socat >= 0.6)
            checks.append(ok)
            details.append(f"{path.replace('rstream_', '')}: {fmt_ratio(r_ssh)} ssh -R, {fmt_ratio(r_socat)} socat")
        return checks, details
    if res.of("P1"):
        targets.append(default_mode_target(
            "P1", ">= 2x ssh -R and >= 0.6x socat double relay (each rstream path)", p1))

    # P2: added latency (path - direct) <= 1.5x the socat relay's added latency, p50 and p99.
    def p2(mode):
        details, checks = [], []
        for q in ("p50_us", "p99_us"):
            direct = res.get("P2", "direct", q)
            socat = res.get("P2", "socat", q)
            socat_added = None if direct is None or socat is None else socat - direct
            for path in RSTREAM_BULK_PATHS:
                v = res.get("P2", moded(path, mode), q)
                if v is None:
                    continue
                added = None if direct is None else v - direct
                ok = None
                if added is not None and socat_added is not None:
                    ok = added <= 1.5 * max(socat_added, 0.0)
                checks.append(ok)
                details.append(f"{path.replace('rstream_', '')} {q[:3]}: {fmt_signed(added)} us vs socat "
                               f"{fmt_signed(socat_added)} us")
        return checks, details
    if res.of("P2"):
        targets.append(default_mode_target(
            "P2", "added latency <= 1.5x socat relay's added latency at p50 and p99", p2))

    # P3: published tcp >= 3x ssh -R connections per second, at each concurrency.
    def p3(mode):
        details, checks = [], []
        for c in (8, 64):
            v = res.get("P3", moded("rstream_tcp", mode, f"_c{c}"), "per_s")
            ssh = res.get("P3", f"ssh_c{c}", "per_s")
            if v is None and ssh is None:
                continue
            r = ratio(v, ssh)
            checks.append(None if r is None else r >= 3.0)
            details.append(f"{c} concurrent: {fmt(v, 0)}/s = {fmt_ratio(r)} ssh -R")
        return checks, details
    if res.of("P3"):
        targets.append(default_mode_target("P3", ">= 3x ssh -R new connections per second", p3))

    # P4: wrk through the http tunnel >= 1.2x ssh -R and >= 0.6x nginx (worker per core),
    # with a p99 no worse than each of them. Measured in the default mode only.
    def p4(mode):
        details, checks = [], []
        path = moded("rstream_http", mode, "_wrk")
        v, p99 = res.get("P4", path, "req_s"), res.get("P4", path, "p99_ms")
        if v is None and mode != DEFAULT_MODE:
            return checks, details
        for other, factor, name in (("ssh_http_wrk", 1.2, "ssh -R"), ("nginx_percore_wrk", 0.6, "nginx per core")):
            o, o99 = res.get("P4", other, "req_s"), res.get("P4", other, "p99_ms")
            r = ratio(v, o)
            ok = None
            if r is not None and p99 is not None and o99 is not None:
                ok = r >= factor and p99 <= o99
            checks.append(ok)
            details.append(f"{fmt_ratio(r)} {name} req/s (need {factor}x), p99 {fmt(p99, 2)} ms vs {fmt(o99, 2)} ms")
        return checks, details
    if res.of("P4"):
        targets.append(default_mode_target(
            "P4", ">= 1.2x HTTP through ssh -R and >= 0.6x nginx TLS proxy (worker per core) req/s, at equal or "
            "better p99 (wrk)", p4))

    # P5: engine <= 30 MiB at 1,000 streams and idle agent <= 8 MiB, in each mode.
    if res.of("P5"):
        details, checks, modes = [], [], {}
        for mode in MODES:
            eng = res.get("P5", moded("engine_1000", mode), "vmrss_kib")
            streams = res.get("P5", moded("engine_1000", mode), "streams")
            agent = res.get("P5", moded("agent_idle", mode), "vmrss_kib")
            mode_checks = [None if eng is None else eng <= 30 * 1024, None if agent is None else agent <= 8 * 1024]
            checks += mode_checks
            modes[mode] = verdict(mode_checks)
            measured = "" if streams is None or streams >= 1000 else f" (only {streams:,} could be opened)"
            details.append(f"{mode}: {modes[mode]}: engine at 1,000 streams{measured}: "
                           f"{fmt(None if eng is None else eng / 1024)} MiB (<= 30); idle agent: "
                           f"{fmt(None if agent is None else agent / 1024)} MiB (<= 8)")
        targets.append({"id": "P5", "target": "engine <= 30 MiB VmRSS at 1,000 streams through a published TCP tunnel, "
                        "in both stream modes; idle agent <= 8 MiB", "result": verdict(checks), "modes": modes,
                        "details": details})

    # P6: no error in what was measured (the agents, the tunnels, the idle streams in mux mode);
    # partial when a row could not be measured in full (the open-file limit caps the streams).
    rows = res.of("P6")
    if rows:
        checks, details = [], []
        for r in rows:
            v = r.get("values") or {}
            if isinstance(v.get("errors"), (int, float)):
                checks.append(v["errors"] == 0)
                details.append(f"{r['label']}: {fmt(v['errors'], 0)} errors")
            elif r.get("status") == "error":
                checks.append(False)
        partial = [r for r in rows if r.get("status")]
        details += [f"{r['label']}: {r['status']} ({r.get('reason', '')})" for r in partial]
        result = verdict(checks)
        if any(r.get("status") in ("partial", "not available") for r in rows):
            result += " (partial)"
        targets.append({"id": "P6", "target": "no error", "result": result, "details": details})
    return targets


def table(lines, header, rows):
    """Appends an aligned table: header and rows are lists of cells; the first column left-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]))
        return "  " + "  ".join(out).rstrip()
    lines.append(line(header))
    for r in rows:
        lines.append(line(r))


def status_cells(r, n, notes):
    """Cells of a row that was not measured: its status in the second column, the reason as a note."""
    notes.append(f"{r['label']}: {r.get('status', 'error')}: {r.get('reason', '')}")
    return [r["label"], r.get("status", "error")] + [""] * (n - 2)


def note_of(r, notes):
    """A measured row with a status (partial): the reason as a note."""
    if r.get("status"):
        notes.append(f"{r['label']}: {r['status']}: {r.get('reason', '')}")


def descriptor_note(r, notes):
    """A row of held streams whose agent's descriptors per stream do not fit its mode (1 per
    stream in mux mode, its connection to the target; 2 per-connection): the mode that was
    asked for may not be the one in effect (an engine with streams.mux off answers mux with
    per-connection streams)."""
    v = r.get("values") or {}
    streams, fds, mode = v.get("streams"), v.get("agent_fds"), r.get("mode")
    if not streams or not isinstance(fds, int) or mode not in MODES:
        return
    expected = 1 if mode == "mux" else 2
    if abs(fds / streams - expected) > 0.5:
        notes.append(f"{r['label']}: the agent held {fds:,} descriptors for {streams:,} streams, "
                     f"{fds / streams:.1f} per stream where {mode} mode takes {expected}")


def add_notes(lines, notes):
    for n in notes:
        lines.append(f"  note: {n}")


def render_text(res, meta, targets):
    p = meta.get("parameters", {})
    m = meta.get("machine", {})
    lines = [f"rstream benchmark ({meta.get('mode', '?')} run), {meta.get('started', '')}",
             f"  {m.get('cpus', '?')} CPUs ({m.get('cpu_model', '?')}), load average {m.get('load_start', '?')} "
             f"at start, {m.get('load_end', '?')} at end; commit {meta.get('commit', '?')}"]
    if meta.get("mode") == "quick":
        lines.append("  quick run: short durations and counts; figures are indicative only")
    if p.get("stream_modes"):
        lines.append(f"  agents' stream modes: {p['stream_modes'].replace(',', ', ')} (rows of each, next to each "
                     f"other); default {p.get('default_stream_mode', DEFAULT_MODE)}, which decides PASS/MISS "
                     f"except for P5")

    rows = res.of("P1")
    if rows:
        lines += ["", f"{TITLES['P1']}, {p.get('p1_seconds', '?')} s"]
        ssh, socat = res.get("P1", "ssh", "gbit_s"), res.get("P1", "socat", "gbit_s")
        body, notes = [], []
        for r in rows:
            if "values" not in r:
                body.append(status_cells(r, 4, notes))
                continue
            v = r["values"].get("gbit_s")
            ours = r["kind"] == "rstream"
            body.append([r["label"], fmt(v, 2), fmt_ratio(ratio(v, ssh)) if ours else "",
                         fmt_ratio(ratio(v, socat)) if ours else "", fmt(r["values"].get("cpu_s_per_gb"), 2)])
        table(lines, ["path", "Gbit/s", "vs ssh -R", "vs socat", "CPU s/GB"], body)
        add_notes(lines, notes)

    rows = res.of("P2")
    if rows:
        lines += ["", f"{TITLES['P2']}, {p.get('p2_count', '?')} round trips per path in "
                      f"{p.get('p2_rounds', '?')} interleaved rounds (microseconds)"]
        d50, d99 = res.get("P2", "direct", "p50_us"), res.get("P2", "direct", "p99_us")
        body, notes = [], []
        for r in rows:
            if "values" not in r:
                body.append(status_cells(r, 6, notes))
                continue
            v = r["values"]
            direct = r["path"] == "direct"
            add50 = None if d50 is None or direct else v["p50_us"] - d50
            add99 = None if d99 is None or direct else v["p99_us"] - d99
            body.append([r["label"], fmt(v["p50_us"]), fmt(v["p99_us"]), fmt(v["p999_us"]),
                         "" if direct else fmt_signed(add50), "" if direct else fmt_signed(add99)])
        table(lines, ["path", "p50", "p99", "p99.9", "added p50", "added p99"], body)
        add_notes(lines, notes)

    rows = res.of("P3")
    if rows:
        lines += ["", f"{TITLES['P3']}, {p.get('p3_seconds', '?')} s each"]
        body, notes = [], []
        for r in rows:
            if "values" not in r:
                body.append(status_cells(r, 6, notes))
                continue
            v = r["values"]
            c = v.get("concurrency")
            ssh = res.get("P3", f"ssh_c{c}", "per_s")
            body.append([r["label"], str(c), fmt(v["per_s"], 0), fmt(v.get("p99_us", 0) / 1000.0, 2),
                         str(v.get("errors", 0)), fmt_ratio(ratio(v["per_s"], ssh)) if r["kind"] == "rstream" else ""])
        table(lines, ["path", "conc.", "conn/s", "p99 ms", "errors", "vs ssh -R"], body)
        add_notes(lines, notes)

    rows = res.of("P4")
    if rows:
        lines += ["", f"{TITLES['P4']}, {p.get('p4_seconds', '?')} s each; wrk: HTTP/1.1, "
                      f"{p.get('wrk_connections', '?')} connections; h2load: HTTP/2, {p.get('h2_clients', '?')} "
                      f"connections x {p.get('h2_streams', '?')} streams"]
        body, notes = [], []
        for r in rows:
            if "values" not in r:
                body.append(status_cells(r, 5, notes))
                continue
            v = r["values"]
            body.append([r["label"], fmt(v.get("req_s"), 0), fmt(v.get("p50_ms"), 2), fmt(v.get("p99_ms"), 2),
                         str(v.get("errors", 0))])
        table(lines, ["path", "req/s", "p50 ms", "p99 ms", "errors"], body)
        add_notes(lines, notes)

    rows = res.of("P5")
    if rows:
        lines += ["", TITLES["P5"]]
        body, notes = [], []
        for r in rows:
            if "values" not in r:
                body.append(status_cells(r, 5, notes))
                continue
            v = r["values"]
            note_of(r, notes)
            descriptor_note(r, notes)
            agent = v.get("agent_vmrss_kib")
            ef, af = v.get("engine_fds"), v.get("agent_fds")
            body.append([r["label"], fmt(v["vmrss_kib"] / 1024.0), "" if agent is None else fmt(agent / 1024.0),
                         "" if ef is None else fmt(ef, 0), "" if af is None else fmt(af, 0)])
        table(lines, ["what", "MiB", "agent MiB", "engine fds", "agent fds"], body)
        add_notes(lines, notes)

    rows = res.of("P6")
    if rows:
        lines += ["", TITLES["P6"]]
        notes = []
        for r in rows:
            v = r.get("values")
            if v and "created" in v:
                lines.append(f"  {r['label']}: {fmt(v.get('created'), 0)}/{fmt(v.get('tunnels'), 0)} created in "
                             f"{fmt(v.get('seconds_to_ready'), 1)} s, {v.get('dials_ok', 0)}/{v.get('dials', 0)} "
                             f"dials ok, {v.get('errors', 0)} errors; engine "
                             f"{fmt(v.get('engine_vmrss_kib', 0) / 1024.0)} MiB, agent process "
                             f"{fmt(v.get('agents_vmrss_kib', 0) / 1024.0)} MiB")
            elif v and "agents" in v:
                lines.append(f"  {r['label']}: {v.get('online', 0)}/{v.get('agents', 0)} online in "
                             f"{fmt(v.get('seconds_to_online'), 1)} s, {v.get('dials_ok', 0)}/{v.get('dials', 0)} "
                             f"dials ok, {v.get('errors', 0)} errors; engine "
                             f"{fmt(v.get('engine_vmrss_kib', 0) / 1024.0)} MiB, agents "
                             f"{fmt(v.get('agents_vmrss_kib', 0) / 1024.0)} MiB in all")
            elif v:
                descriptor_note(r, notes)
                lines.append(f"  {r['label']}: {fmt(v.get('streams'), 0)}/{fmt(v.get('attempted'), 0)} up in "
                             f"{fmt(v.get('seconds_to_ready'), 1)} s, {fmt(v.get('failed'), 0)} failed, "
                             f"{fmt(v.get('dropped'), 0)} dropped while idle, {fmt(v.get('errors'), 0)} errors; "
                             f"engine {fmt(v.get('engine_vmrss_kib', 0) / 1024.0)} MiB "
                             f"({fmt(v.get('engine_fds'), 0)} descriptors), agent "
                             f"{fmt(v.get('agent_vmrss_kib', 0) / 1024.0)} MiB "
                             f"({fmt(v.get('agent_fds'), 0)} descriptors)")
            if r.get("status"):
                lines.append(f"  {r['label']}: {r['status']}: {r.get('reason', '')}")
        add_notes(lines, notes)

    if targets:
        lines += ["", "Targets (computed from this run)"]
        for t in targets:
            lines.append(f"  {t['id']}  {t['result']:<14} {t['target']}")
            for d in t["details"]:
                lines.append(f"        {d}")
    return "\n".join(lines) + "\n"


def cmd_render(a):
    res = Results(load_rows(a.results))
    meta = json.load(open(a.meta, encoding="utf-8"))
    targets = compute_targets(res, meta)
    doc = dict(meta)
    doc["measures"] = {}
    for measure in TITLES:
        rows = res.of(measure)
        if rows:
            doc["measures"][measure] = {"title": TITLES[measure],
                                        "rows": [{k: v for k, v in r.items() if k != "measure"} for r in rows]}
    doc["targets"] = targets
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=False)
            f.write("\n")
    if a.format == "json":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(res, meta, targets))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("add")
    s.add_argument("results")
    s.add_argument("--measure", required=True)
    s.add_argument("--path", required=True)
    s.add_argument("--label", required=True)
    s.add_argument("--kind", required=True, choices=["baseline", "peer", "rstream", "info"])
    s.add_argument("--values")
    s.add_argument("--status")
    s.add_argument("--reason")
    s.add_argument("--mode", choices=list(MODES))
    s.set_defaults(fn=cmd_add)
    s = sub.add_parser("parse-wrk")
    s.add_argument("file")
    s.set_defaults(fn=cmd_parse_wrk)
    s = sub.add_parser("parse-h2load")
    s.add_argument("file")
    s.add_argument("log")
    s.set_defaults(fn=cmd_parse_h2load)
    s = sub.add_parser("latency")
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_latency)
    s = sub.add_parser("parse-iperf3")
    s.add_argument("file")
    s.set_defaults(fn=cmd_parse_iperf3)
    s = sub.add_parser("render")
    s.add_argument("results")
    s.add_argument("meta")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.add_argument("--out")
    s.set_defaults(fn=cmd_render)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
