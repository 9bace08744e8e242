"""The markdown tables and the JSON document, from the cells after the runs."""

from . import catalog, machine


def fmt_num(v):
    """81234 -> 81.2k: three significant digits, k and M."""
    if v is None:
        return "-"
    a = abs(v)
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if a >= div:
            x = v / div
            return f"{x:.3g}{suffix}" if abs(x) < 1000 else f"{x:.0f}{suffix}"
    return f"{v:.3g}" if a < 100 else f"{v:.0f}"


def fmt_us(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


class Footnotes:
    """Reasons for cells without numbers, numbered once each."""

    def __init__(self):
        self.items = []

    def mark(self, text):
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"

    def render(self):
        return [f"[{i + 1}] {t}" for i, t in enumerate(self.items)]


def _cell_text(cell, fn, value, rounds):
    status, why = cell.outcome()
    if status == "ok":
        text = value(cell)
        if len(cell.ok_runs) < rounds:
            text += f" [{len(cell.ok_runs)} of {rounds} rounds]"
        return text
    label = {"n/a": "n/a", "skipped": "not run", "failed": "failed"}[status]
    return f"{label} {fn.mark(f'{cell.server.name}, {cell.workload.title}: {why}')}"


def _grid(cells, servers, workloads, title, value, fn, rounds):
    index = {(c.server.name, c.workload.name): c for c in cells}
    cols = [w for w in workloads if any((s, w.name) in index for s in servers)]
    rows = [s for s in servers if any((s, w.name) in index for w in cols)]
    if not rows:
        return []
    out = [f"### {title}", "", "| server | " + " | ".join(w.title for w in cols) + " |",
           "|---|" + "---:|" * len(cols)]
    for s in rows:
        texts = []
        for w in cols:
            c = index.get((s, w.name))
            texts.append(_cell_text(c, fn, value, rounds) if c else "")
        out.append(f"| {s} | " + " | ".join(texts) + " |")
    out.append("")
    return out


def _rate_range(c):
    lo, hi = c.spread("req_per_s")
    return f"{fmt_num(c.median('req_per_s'))} ({fmt_num(lo)}–{fmt_num(hi)})"


def _efficiency(c):
    pct = c.median("server_cpu_pct")
    return f"{fmt_num(c.median('req_per_cpu_s'))} ({pct:.0f}%)" if pct is not None else fmt_num(
        c.median("req_per_cpu_s"))


def matrix_tables(cells, servers, workloads, rounds, fn):
    out = _grid(cells, servers, workloads,
                f"Throughput: requests/s (churn: connections/s), median (min–max) of {rounds} "
                f"round{'s' if rounds > 1 else ''}", _rate_range, fn, rounds)
    out += _grid(cells, servers, workloads, "p99 latency, µs (median of rounds)",
                 lambda c: fmt_us(c.median("p99_us")), fn, rounds)
    out += _grid(cells, servers, workloads,
                 "Server CPU efficiency: requests per server CPU-second (server CPU busy %), median",
                 _efficiency, fn, rounds)
    return out


def models_table(cells, workloads, fn, rounds):
    """The five models side by side: throughput, p99 and CPU per request with no
    idle connections, then throughput and CPU per request as idle ones are added."""
    index = {(c.server.name, c.workload.name): c for c in cells}
    base = next((w for w in workloads if w.name == "echo-64"), None)
    idle = [w for w in workloads if w.idle and w.proto == "echo" and not w.churn]
    rows = [s for s in catalog.MODELS if base and (s, base.name) in index]
    if not rows:
        return []
    head = ["model", "server", "CPU with no client", f"{base.title}: req/s", "p99 µs", "server CPU µs/req"]
    for w in idle:
        head += [f"+{w.idle:,} idle: req/s", "p99 µs", "CPU µs/req"]
    out = ["### The five I/O models: the same echo load, one server per model", "",
           "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for s in rows:
        srv = catalog.BY_NAME[s]
        texts = [catalog.MODEL_TITLES[s], srv.summary.split(":")[0]]
        probe = index[(s, base.name)].median("no_client_cpu_pct")
        texts.append(f"{min(probe, 100):.0f}%" if probe is not None else "-")   # ticks: ±10 ms
        for w in [base] + idle:
            c = index.get((s, w.name))
            if c is None:
                texts += ["", "", ""]
                continue
            status, _ = c.outcome()
            texts.append(_cell_text(c, fn, _rate_range, rounds))
            if status == "ok":
                texts += [fmt_us(c.median("p99_us")), f"{c.median('cpu_us_per_req'):.2f}"
                          if c.median("cpu_us_per_req") is not None else "-"]
            else:
                texts += ["", ""]
        out.append("| " + " | ".join(texts) + " |")
    out.append("")
    for w in idle:
        took = [f"{s} {index[(s, w.name)].median('idle_setup_s'):.2f} s" for s in rows
                if (s, w.name) in index and index[(s, w.name)].median("idle_setup_s") is not None]
        if took:
            out += [f"Taking in the {w.idle:,} idle connections (connect, accept, one request each, 32 at "
                    f"a time; not in the CPU figures): " + ", ".join(took) + ".", ""]
    return out


def explanations(env, workloads, workers):
    w0 = workloads[0] if workloads else None
    conns = w0.conns if w0 else 100
    return [
        "What the numbers are:",
        "",
        f"- Load: `iop-client load` ({env.load_backend or 'auto'} backend), {conns} connections, each with one "
        f"request in flight (closed loop); {env.warmup:g} s warmup, then {env.duration:g} s measured. A fresh "
        "server for every run; runs alternate over all cells, round by round.",
        "- echo: the message comes back whole before the next is sent; HTTP: `GET /hello` with keep-alive, "
        "a 13-byte body; churn: connect, one 64 B echo, close (client side first), a new connection per "
        "request: connections/s is the accept rate; idle: that many more connections opened first and kept "
        "silent for the whole run (one the server drops fails the run).",
        (f"- ioplexd runs with `--workers {workers}` (a supervisor and {workers} worker process"
         f"{'es' if workers > 1 else ''}, all on the server's CPU)" if workers else
         "- ioplexd runs with `--workers 0` (one process, no supervisor)") +
        "; the model servers and the peers are one process (nginx: a master and one worker).",
        "- CPU with no client (--models): the server's CPU use over its first moments with no connection "
        "at all (100% = one core).",
        "- p99: the 99th percentile of request round trips in the measured window (churn: the connect "
        "included), from a log-linear histogram (~3%).",
        "- Server CPU: utime + stime of the server and all its processes and threads, from /proc/PID/stat "
        "(the same as its getrusage), read when the load starts (after the idle connections are open and "
        "have each been answered once) and when it ends: warmup and measurement. Requests per server CPU-second = requests over warmup + measurement / "
        "that CPU time: the cost of a request, which holds even when the load, not the server, is the "
        "bottleneck. CPU busy % = that CPU time / the load's wall time (100% = one core).",
    ]


def markdown(cells, sections, env, meta, fn):
    out = ["## iop-bench results", "", f"Machine: {machine.one_line(meta['machine'])}.", "",
           f"Command: `{meta['command']}`", ""]
    if "matrix" in sections:
        s = sections["matrix"]
        out += matrix_tables(cells, s["servers"], s["workloads"], meta["rounds"], fn)
    if "models" in sections:
        s = sections["models"]
        out += models_table(cells, s["workloads"], fn, meta["rounds"])
    out += explanations(env, sections.get("matrix", sections.get("models", {})).get("workloads", []),
                        meta["workers"])
    if fn.items:
        out += ["", "Cells without numbers:", ""] + [f"- {t}" for t in fn.render()]
    problems = [f"{r['server']} {r['workload']} round {r['round']}: {r['note']}"
                for c in cells for r in c.runs if r.get("note")]
    if meta.get("undone"):
        problems.append(f"time budget reached: {meta['undone']} runs not done (--max-time)")
    if problems:
        out += ["", "Problems:", ""] + [f"- {p}" for p in problems]
    return "\n".join(out) + "\n"


def document(cells, sections, meta):
    """The JSON: machine, settings, the workloads and servers, every run, every cell."""
    wl = {w.name: w for s in sections.values() for w in s["workloads"]}
    return {
        "tool": "iop-bench",
        "format": 1,
        **meta,
        "sections": {k: {"servers": v["servers"], "workloads": [w.name for w in v["workloads"]]}
                     for k, v in sections.items()},
        "workloads": [{"name": w.name, "title": w.title, "proto": w.proto, "size": w.size,
                       "churn": w.churn, "idle": w.idle, "connections": w.conns, "unit": w.unit}
                      for w in wl.values()],
        "servers": [{"name": s.name, "kind": s.kind, "summary": s.summary, "model": s.model,
                     "detail": next((r.get("server_detail") for c in cells if c.server is s
                                     for r in c.runs if r.get("server_detail")), "")}
                    for s in catalog.SERVERS if any(c.server is s for c in cells)],
        "cells": [c.to_json() for c in cells],
        "runs": [r for c in cells for r in c.runs],
    }
