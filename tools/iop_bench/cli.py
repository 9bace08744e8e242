"""The command line: what to run (sections, servers, workloads), how long, where the
results go; then build, run the rounds, write the table, the JSON and the charts."""

import argparse
import atexit
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile

from . import build, catalog, machine, plan, procs, report, runner, servers, svg

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

DEFAULTS = {"rounds": 3, "warmup": 1.0, "duration": 5.0}
QUICK = {"rounds": 2, "warmup": 0.2, "duration": 0.4}
SMOKE = {"rounds": 1, "warmup": 0.05, "duration": 0.25, "idle": "20,100",
         "servers": "epoll,blocking,busypoll"}

EPILOG = """sections:
  (default)   every backend of ioplexd (select poll epoll sigio uring) x every workload
  --peers     adds nginx (HTTP), epoll-echo-ref, libevent and libuv (echo) to it
  --models    the five I/O models: blocking, busy-poll, sigio, select/poll/epoll,
              uring, under the echo load with 0 and more idle connections (alone
              unless --all, --peers or --servers asks for the matrix too)
  --all       all of the above

workloads: echo-64, echo-4k, http, churn, idle-N for each N of --idle.
Output: the markdown table on stdout; results.md, results.json, chart.svg and
models.svg in --out. Servers and load are pinned to two different CPUs where
there are two or more; each cell runs once per round, cells alternating.
"""


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="iop-bench", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="The I/O models and every ioplex backend measured side by side.")
    ap.add_argument("--quick", action="store_true",
                    help=f"about a minute: {QUICK['rounds']} rounds of {QUICK['warmup']:g} s warmup + "
                         f"{QUICK['duration']:g} s")
    ap.add_argument("--smoke", action="store_true",
                    help="a few seconds: one tiny run per workload on epoll and the two model servers "
                         "(what the test runs)")
    ap.add_argument("--models", action="store_true", help="the five I/O models section")
    ap.add_argument("--peers", action="store_true", help="add nginx, epoll-echo-ref, libevent, libuv")
    ap.add_argument("--all", action="store_true", help="matrix with peers, and the models")
    ap.add_argument("--servers", help="comma-separated servers for the matrix (see --list)")
    ap.add_argument("--workloads", help="comma-separated workloads for the matrix (see --list)")
    ap.add_argument("--rounds", type=int, help=f"runs per cell (default {DEFAULTS['rounds']})")
    ap.add_argument("--warmup", type=float, help=f"seconds before measuring (default {DEFAULTS['warmup']:g})")
    ap.add_argument("--duration", type=float, help=f"measured seconds per run (default {DEFAULTS['duration']:g})")
    ap.add_argument("--idle", help="idle connection steps for the scaling workloads (default 1000,10000)")
    ap.add_argument("--connections", type=int, default=100, help="active connections (default 100)")
    ap.add_argument("--workers", type=int, default=1, help="ioplexd --workers (default 1)")
    ap.add_argument("--load-backend", default="epoll",
                    help="the load generator's backend, the same for every server (default epoll)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"),
                    help="CMake build dir (default <repo>/build, configured as Release if new)")
    ap.add_argument("--no-build", action="store_true", help="use what is built")
    ap.add_argument("--out", help="where the results go (default <build-dir>/iop-bench)")
    ap.add_argument("--max-time", type=float,
                    help="stop starting runs after this many seconds (default: 1.5 x the estimate + 30 s)")
    ap.add_argument("--list", action="store_true", help="list servers and workloads, and what is missing")
    a = ap.parse_args(argv)
    preset = SMOKE if a.smoke else QUICK if a.quick else DEFAULTS
    for k in ("rounds", "warmup", "duration"):
        if getattr(a, k) is None:
            setattr(a, k, preset[k])
    if a.smoke:
        a.idle = a.idle or SMOKE["idle"]
        a.servers = a.servers or SMOKE["servers"]
        a.models = True
    if a.rounds < 1 or a.connections < 1 or a.workers < 0 or \
            not 0 < a.duration < 86400 or not 0 <= a.warmup < 86400:   # also refuses nan and inf
        ap.error("--rounds, --duration and --connections must be positive; --warmup, --workers not negative; "
                 "--duration and --warmup under a day")
    try:
        a.idle_steps = tuple(int(x) for x in (a.idle or "1000,10000").split(",") if x)
    except ValueError:
        ap.error("--idle wants numbers separated by commas, e.g. 1000,10000")
    if any(n <= 0 for n in a.idle_steps):
        ap.error("--idle wants positive numbers")
    return ap, a


def sections_for(a, ap):
    """{'matrix': {servers, workloads}, 'models': {...}}: what the tables show."""
    wls = catalog.make_workloads(a.idle_steps, a.connections)
    by = {w.name: w for w in wls}
    out = {}
    want_matrix = a.all or a.peers or a.servers or a.workloads or not a.models
    if want_matrix:
        if a.servers:
            names = [s for s in a.servers.split(",") if s]
        else:
            names = catalog.BACKENDS + (catalog.PEERS if a.peers or a.all else [])
        bad = [s for s in names if s not in catalog.BY_NAME]
        if bad:
            ap.error(f"--servers: unknown {', '.join(bad)} (known: {', '.join(catalog.BY_NAME)})")
        picked = wls
        if a.workloads:
            picked = []
            for n in a.workloads.split(","):
                if n not in by:
                    ap.error(f"--workloads: unknown {n} (known: {', '.join(by)})")
                picked.append(by[n])
        out["matrix"] = {"servers": names, "workloads": picked}
    if a.models or a.all:
        out["models"] = {"servers": list(catalog.MODELS),
                         "workloads": [by["echo-64"]] + [w for w in wls if w.idle]}
        if a.servers and a.smoke:
            out["models"]["servers"] = [s for s in catalog.MODELS if s in a.servers.split(",")]
    return out


def make_plan(sections, build_dir, fd_limit):
    pairs = {(s, w.name) for sec in sections.values() for s in sec["servers"] for w in sec["workloads"]}
    workloads = []
    for sec in sections.values():
        for w in sec["workloads"]:
            if w not in workloads:
                workloads.append(w)
    order = [s.name for s in catalog.SERVERS]
    names = sorted({s for sec in sections.values() for s in sec["servers"]}, key=order.index)
    cells = [c for c in plan.make_cells(names, workloads, build_dir, fd_limit)
             if (c.server.name, c.workload.name) in pairs]
    return cells, workloads


def list_all(build_dir, a):
    print("servers:")
    for s in catalog.SERVERS:
        why = servers.why_unavailable(s, build_dir, True)
        print(f"  {s.name:<13} {'/'.join(sorted(s.protos)):<10} {s.summary}{'  [' + why + ']' if why else ''}")
    print("workloads:")
    for w in catalog.make_workloads(a.idle_steps, a.connections):
        print(f"  {w.name:<13} {w.title}")


def pinning():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and shutil.which("taskset"):
        return (["taskset", "-c", str(cpus[0])], ["taskset", "-c", str(cpus[1])],
                f"server on CPU {cpus[0]}, load on CPU {cpus[1]}")
    why = "1 CPU" if len(cpus) < 2 else "no taskset"
    return [], [], f"{why}: no pinning, server and load share the CPUs"


def _interrupted(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    ap, a = parse_args(sys.argv[1:] if argv is None else argv)
    build_dir = os.path.abspath(a.build_dir)
    if a.list:
        list_all(build_dir, a)
        return 0
    sections = sections_for(a, ap)
    out_dir = os.path.abspath(a.out or os.path.join(build_dir, "iop-bench"))
    # Checked before the runs, not after them: a results dir that cannot be made
    # would throw the whole run away.
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        sys.stderr.write(f"iop-bench: --out {out_dir}: {e.strerror}\n")
        return 2
    if not os.access(out_dir, os.W_OK):
        sys.stderr.write(f"iop-bench: --out {out_dir}: not writable\n")
        return 2
    tmp = tempfile.mkdtemp(prefix="iop-bench.")
    atexit.register(shutil.rmtree, tmp, True)
    atexit.register(procs.cleanup)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        return _run(a, sections, build_dir, out_dir, tmp)
    except KeyboardInterrupt:
        procs.cleanup()
        sys.stderr.write("\niop-bench: interrupted; every server it started is stopped\n")
        return 130


def _run(a, sections, build_dir, out_dir, tmp):
    servers_used = {catalog.BY_NAME[s] for sec in sections.values() for s in sec["servers"]}
    if not a.no_build and not build.build(REPO, build_dir, sorted(servers_used, key=lambda s: s.name),
                                          os.path.join(tmp, "build.log")):
        sys.stderr.write("iop-bench: cannot build the load generator (iop-client)\n")
        return 1
    if not os.access(os.path.join(build_dir, "apps/iop-client"), os.X_OK):
        sys.stderr.write(f"iop-bench: no {build_dir}/apps/iop-client (build first, or drop --no-build)\n")
        return 1
    all_wl = [w for sec in sections.values() for w in sec["workloads"]]
    fd_limit = runner.raise_fd_limit(max(w.fds() for w in all_wl) + 64)
    cells, workloads = make_plan(sections, build_dir, fd_limit)
    if "models" in sections:
        for c in cells:
            if c.workload.name == "echo-64" and c.server.name in sections["models"]["servers"]:
                c.idle_probe_s = min(0.5, a.duration)
    pin_server, pin_load, pin_text = pinning()
    env = runner.Env(build_dir, tmp, a.warmup, a.duration, a.workers, a.load_backend, pin_server, pin_load)
    runnable = [c for c in cells if c.status == "planned"]
    estimate = sum(env.run_estimate_s(c) for c in runnable) * a.rounds
    max_time = a.max_time if a.max_time is not None else estimate * 1.5 + 30
    sys.stderr.write(f"iop-bench: {len(runnable)} cells x {a.rounds} rounds, about {estimate / 60:.1f} min "
                     f"(stops starting runs after {max_time / 60:.1f} min); {pin_text}\n")
    for c in cells:
        if c.status != "planned":
            sys.stderr.write(f"iop-bench: {c.server.name} / {c.workload.name}: {c.status}: {c.why}\n")
    meta = {
        "command": shlex.join(["tools/iop-bench"] + sys.argv[1:]),
        "machine": machine.describe(REPO, build_dir, pin_text),
        "rounds": a.rounds, "warmup_s": a.warmup, "duration_s": a.duration, "workers": a.workers,
        "load": {"program": "iop-client load", "backend": a.load_backend, "connections": a.connections},
        "fd_limit": fd_limit, "estimate_s": round(estimate, 1), "max_time_s": round(max_time, 1),
    }
    meta["undone"] = runner.run_rounds(env, cells, a.rounds, max_time)
    os.makedirs(out_dir, exist_ok=True)
    fn = report.Footnotes()
    text = report.markdown(cells, sections, env, meta, fn)
    sys.stdout.write("\n" + text)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(report.document(cells, sections, meta), f, indent=1)
        f.write("\n")
    written = ["results.md", "results.json"]
    m = meta["machine"]
    chart_sub = (f"{m['cpu_model']}, {m['cpus_usable']} CPUs, Linux {m['kernel']}; {pin_text}; "
                 f"{a.rounds} x ({a.warmup:g} s warmup + {a.duration:g} s); commit {m['commit'] or '?'}")
    if "matrix" in sections:
        s = sections["matrix"]
        with open(os.path.join(out_dir, "chart.svg"), "w") as f:
            f.write(svg.matrix_chart(cells, s["workloads"], s["servers"], chart_sub))
        written.append("chart.svg")
    if "models" in sections:
        with open(os.path.join(out_dir, "models.svg"), "w") as f:
            f.write(svg.models_chart(cells, sections["models"]["workloads"], chart_sub))
        written.append("models.svg")
    sys.stderr.write(f"iop-bench: wrote {', '.join(written)} in {out_dir}\n")
    failed = [c for c in cells if c.outcome()[0] == "failed"]
    return 1 if failed else 0
