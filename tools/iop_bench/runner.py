"""One measured run: a fresh server, the load against it, the server's CPU time
over the load, the server stopped. And the rounds: every cell once per round, in
the same order, so that drift of the machine spreads over all of them."""

import json
import os
import re
import resource
import sys
import time

from . import procs, servers

# iop-client says this on stderr once the idle connections are open and served
IDLE_OPEN = re.compile(r"idle connections open in ([0-9.]+) s")


class Env:
    """What every run needs: paths, timing, pinning, limits."""

    def __init__(self, build, tmp, warmup, duration, workers, load_backend, pin_server, pin_load):
        self.build = build
        self.tmp = tmp
        self.warmup = warmup
        self.duration = duration
        self.workers = workers
        self.load_backend = load_backend
        self.pin_server = pin_server
        self.pin_load = pin_load
        self.starts = 0

    def run_estimate_s(self, cell):
        """A run's wall time: start, idle connections, warmup, measurement, stop. A
        server that looks at every descriptor per wakeup takes in N idle connections
        in time ~N^2 (about 5 s for 10,000 here)."""
        srv, wl = cell.server, cell.workload
        setup = wl.idle / 8000 + (5 * (wl.idle / 10000) ** 2 if srv.scans_all else 0)
        return 0.35 + cell.idle_probe_s + self.warmup + self.duration + setup


def raise_fd_limit(want):
    """Raises RLIMIT_NOFILE (soft, and hard when allowed) to want for us and so for
    every process we start. The limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def load_argv(env, wl, port):
    argv = [os.path.join(env.build, "apps/iop-client"), "load", wl.proto, f"127.0.0.1:{port}",
            "--connections", str(wl.conns), "--duration", f"{env.duration:g}",
            "--warmup", f"{env.warmup:g}", "--timeout", "10", "--json"]
    if env.load_backend:
        argv += ["--backend", env.load_backend]
    if wl.proto == "echo":
        argv += ["--size", str(wl.size)]
    else:
        argv += ["--path", "/hello"]
    if wl.churn:
        argv.append("--churn")
    if wl.idle:
        argv += ["--idle", str(wl.idle)]
    return env.pin_load + argv


def run_one(env, cell, rnd):
    """One run of the cell's server under its workload: a dict for the JSON (ok, the
    load's figures, the server's CPU, notes). Raises servers.StartError when the
    server does not start."""
    srv, wl = cell.server, cell.workload
    env.starts += 1
    rec = {"server": srv.name, "workload": wl.name, "round": rnd, "ok": False}
    sv = servers.start(srv, env.build, wl.proto, env.workers, env.pin_server, env.tmp, env.starts)
    rec["server_pid"] = sv.proc.pid
    rec["server_detail"] = sv.detail
    try:
        if cell.idle_probe_s:
            # what serving nobody costs: ~0 for a server that sleeps in the kernel
            c0, t0 = procs.tree_cpu_s(sv.proc.pid), time.monotonic()
            time.sleep(cell.idle_probe_s)
            c1, t1 = procs.tree_cpu_s(sv.proc.pid), time.monotonic()
            rec["no_client_cpu_pct"] = round(100 * (c1 - c0) / (t1 - t0), 1)
        # The server's CPU counts from the moment the load starts: with idle
        # connections, once they are all open and served (their setup, an accept
        # and a first request each, is recorded apart).
        mark = {"cpu": procs.tree_cpu_s(sv.proc.pid), "t": time.monotonic()}
        setup = dict(mark)

        def load_started():
            mark.update(cpu=procs.tree_cpu_s(sv.proc.pid), t=time.monotonic())

        timeout = env.warmup + env.duration + wl.idle / 200 + 30
        status, out, err = procs.run(load_argv(env, wl, sv.port), timeout,
                                     os.path.join(env.tmp, "load.out"), os.path.join(env.tmp, "load.err"),
                                     IDLE_OPEN if wl.idle else None, load_started)
        wall = time.monotonic() - mark["t"]
        cpu1 = procs.tree_cpu_s(sv.proc.pid)
        alive = sv.proc.poll() is None
    finally:
        exit_status, killed = procs.stop(sv.proc)
    rec["server_exit"] = exit_status
    notes = []
    if killed:
        notes.append("server ignored SIGTERM and was killed")
    elif exit_status != 0:
        notes.append(f"server exited with status {exit_status} after SIGTERM: "
                     f"{procs.first_line(sv.err_path) or 'no message'}")
    if not alive:
        notes.append("server died during the load")
    res = next((json.loads(line) for line in out.splitlines() if line.startswith("{")), None)
    if status is None:
        notes.append(f"load did not finish within {timeout:g} s (killed)")
    elif res is None or status != 0:
        first = res.get("first_error") if res else ""
        if res and not first and not res.get("requests"):
            first = "no request completed in the measured window"
        msg = first or next((ln for ln in err.splitlines() if ln.strip()), "") or out.strip()[:200]
        notes.append(f"load failed (exit {status}): {msg}")
    if res:
        rec.update({k: res[k] for k in ("req_per_s", "p50_us", "p99_us", "errors", "requests",
                                        "requests_incl_warmup", "connects", "idle_dropped")})
        rec["load_backend"] = res.get("backend")
    if wl.idle:
        rec["idle_setup_s"] = round(mark["t"] - setup["t"], 3)
        rec["idle_setup_cpu_s"] = round(mark["cpu"] - setup["cpu"], 3)
        if mark["t"] == setup["t"]:
            notes.append("the load never said its idle connections were open")
    cpu = cpu1 - mark["cpu"]
    rec["server_cpu_s"] = round(cpu, 3)
    rec["load_wall_s"] = round(wall, 3)
    rec["server_cpu_pct"] = round(100 * cpu / wall, 1) if wall > 0 else None
    if res and cpu > 0 and res["requests_incl_warmup"]:
        rec["req_per_cpu_s"] = round(res["requests_incl_warmup"] / cpu, 1)
        rec["cpu_us_per_req"] = round(1e6 * cpu / res["requests_incl_warmup"], 3)
    rec["ok"] = bool(res) and status == 0 and alive
    if notes:
        rec["note"] = "; ".join(notes)
    return rec


class Progress:
    """One line on stderr, rewritten in place on a terminal, one line per run
    otherwise: runs done, elapsed, an estimate of what is left, the run now."""

    def __init__(self, total, estimate_s):
        self.total = total
        self.estimate = estimate_s
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.width = 0

    def show(self, done, label):
        el = time.monotonic() - self.t0
        left = (el / done * (self.total - done)) if done else self.estimate
        line = f"[{done + 1:>3}/{self.total}] {_mmss(el)} elapsed, ~{_mmss(left)} left | {label}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self):
        if self.tty and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
        sys.stderr.write(f"iop-bench: {self.total} runs in {_mmss(time.monotonic() - self.t0)}\n")

    def elapsed(self):
        return time.monotonic() - self.t0


def _mmss(s):
    s = int(s + 0.5)
    return f"{s // 60}:{s % 60:02d}"


def run_rounds(env, cells, rounds, max_time):
    """Runs each runnable cell once per round (A B C A B C ...). cells: list of Cell
    (plan.py) whose runs get appended. Stops starting runs when the time budget
    would be passed; returns the number of runs left undone."""
    todo = [c for c in cells if c.status == "planned"]
    total = len(todo) * rounds
    est = sum(env.run_estimate_s(c) for c in todo) * rounds
    prog = Progress(total, est)
    done = 0
    undone = 0
    for r in range(1, rounds + 1):
        for c in todo:
            if c.start_error:
                prog.total -= 1
                continue
            if max_time and prog.elapsed() + env.run_estimate_s(c) > max_time:
                prog.total -= 1
                undone += 1
                continue
            prog.show(done, f"round {r}/{rounds} {c.server.name} {c.workload.title}")
            try:
                c.runs.append(run_one(env, c, r))
            except servers.StartError as e:
                # the same every time (a missing flag, a refused backend): not retried
                c.start_error = str(e)
            done += 1
    prog.done()
    return undone
