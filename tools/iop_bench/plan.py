"""The plan: which (server, workload) cells to run, which cannot run here and why,
and each cell's summary over its runs (median, min, max)."""

import os
import statistics

from . import catalog, servers


class Cell:
    def __init__(self, server, workload):
        self.server = server
        self.workload = workload
        self.status = "planned"   # planned, n/a (cannot, by design), skipped (not here)
        self.why = ""
        self.runs = []
        self.start_error = ""
        self.idle_probe_s = 0.0   # > 0: first measure the server's CPU with no client

    @property
    def ok_runs(self):
        return [r for r in self.runs if r["ok"]]

    def median(self, key):
        v = [r[key] for r in self.ok_runs if r.get(key) is not None]
        return statistics.median(v) if v else None

    def spread(self, key):
        v = [r[key] for r in self.ok_runs if r.get(key) is not None]
        return (min(v), max(v)) if v else (None, None)

    def outcome(self):
        """(status, why) after the runs: ok, failed, n/a or skipped."""
        if self.status != "planned":
            return self.status, self.why
        if self.ok_runs:
            return "ok", ""
        if self.start_error:
            return "failed", f"did not start: {self.start_error}"
        notes = [r.get("note", "") for r in self.runs if r.get("note")]
        if notes:
            return "failed", notes[0]
        return "failed", "not run (time budget)" if not self.runs else "no successful run"

    def to_json(self):
        status, why = self.outcome()
        d = {"server": self.server.name, "workload": self.workload.name, "status": status,
             "runs_ok": len(self.ok_runs), "runs": len(self.runs)}
        if why:
            d["why"] = why
        for key in ("req_per_s", "p50_us", "p99_us", "server_cpu_s", "server_cpu_pct",
                    "req_per_cpu_s", "cpu_us_per_req", "idle_setup_s", "idle_setup_cpu_s",
                    "no_client_cpu_pct"):
            m = self.median(key)
            if m is not None:
                lo, hi = self.spread(key)
                d[key] = {"median": round(m, 3), "min": lo, "max": hi}
        return d


def make_cells(server_names, workloads, build, fd_limit):
    """Every (server, workload) pair the server speaks, in table order; those that
    cannot run get their reason now."""
    http_built = os.path.exists(os.path.join(build, "lib/ioplex/services/iop_service_http.so"))
    cells = []
    for wl in workloads:
        for name in server_names:
            srv = catalog.BY_NAME[name]
            if wl.proto not in srv.protos:
                continue
            c = Cell(srv, wl)
            cells.append(c)
            why = servers.why_unavailable(srv, build, http_built)
            if why:
                c.status, c.why = "skipped", why
            elif srv.kind == "ioplexd" and wl.proto == "http" and not http_built:
                c.status, c.why = "skipped", "not built: iop_service_http.so (plugins/http)"
            elif srv.fd_limit and wl.fds() > srv.fd_limit:
                c.status = "n/a"
                c.why = (f"select cannot watch a descriptor >= FD_SETSIZE ({catalog.FD_SETSIZE}); "
                         f"{wl.conns + wl.idle:,} connections need more")
            elif wl.fds() > fd_limit:
                c.status = "skipped"
                c.why = f"RLIMIT_NOFILE is {fd_limit}, {wl.fds()} needed (raise ulimit -Hn)"
    return cells
