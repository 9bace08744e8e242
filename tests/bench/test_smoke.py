#!/usr/bin/env python3
"""tools/iop-bench --smoke as a user runs it, on the build under test: one tiny run
of every workload on ioplexd (epoll) and the two model servers; then the results
are checked: the JSON (machine, every cell and run), the SVG charts (well-formed,
a bar per cell), the markdown table, and that no process it started is left. A
second run is interrupted with SIGINT mid-way: it must stop everything and exit 130.

usage: test_smoke.py --tool PATH/tools/iop-bench --build-dir BUILD"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET

SVG_NS = "{http://www.w3.org/2000/svg}"
ARGS = None


def tagged_processes(pid):
    """PIDs of live processes started by the iop-bench whose PID is pid (they carry
    IOP_BENCH_TAG=iop-bench-PID in their environment)."""
    tag = f"IOP_BENCH_TAG=iop-bench-{pid}".encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    with open(f"/proc/{d}/stat") as st:
                        if st.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                            found.append(int(d))
        except OSError:
            pass
    return found


def bench_cmd(out):
    return [sys.executable, ARGS.tool, "--smoke", "--no-build", "--build-dir", ARGS.build_dir, "--out", out]


class Smoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="bench-smoke.")
        cls.out = os.path.join(cls.tmp.name, "out")
        p = subprocess.Popen(bench_cmd(cls.out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            cls.stdout, cls.stderr = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            cls.stdout, cls.stderr = p.communicate()
        cls.status, cls.pid = p.returncode, p.pid
        cls.left = tagged_processes(p.pid)
        for q in cls.left:            # never leave them, even when the test fails
            os.kill(q, signal.SIGKILL)
        with open(os.path.join(cls.out, "results.json")) as f:
            cls.doc = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_exit_status_and_cleanup(self):
        self.assertEqual(self.status, 0, f"iop-bench --smoke failed:\n{self.stderr[-3000:]}\n{self.stdout[-3000:]}")
        self.assertEqual(self.left, [], "processes left running after iop-bench ended")

    def test_machine_recorded(self):
        m = self.doc["machine"]
        for key in ("cpu_model", "cpus_usable", "cpus_online", "kernel", "liburing", "pinning", "commit"):
            self.assertIn(key, m)
        self.assertGreaterEqual(m["cpus_usable"], 1)
        self.assertEqual(m["kernel"], os.uname().release)

    def test_every_workload_measured(self):
        cells = self.doc["cells"]
        names = {w["name"] for w in self.doc["workloads"]}
        self.assertEqual(names, {"echo-64", "echo-4k", "http", "churn", "idle-20", "idle-100"})
        http_built = os.path.exists(os.path.join(ARGS.build_dir, "lib/ioplex/services/iop_service_http.so"))
        for c in cells:
            where = f"{c['server']} / {c['workload']}: {c.get('why', '')}"
            if c["workload"] == "http" and not http_built:
                self.assertEqual(c["status"], "skipped", where)
                continue
            self.assertEqual(c["status"], "ok", where)
            self.assertEqual(c["runs_ok"], 1, where)
            for key in ("req_per_s", "p99_us", "req_per_cpu_s", "cpu_us_per_req"):
                self.assertGreater(c[key]["median"], 0, f"{where} {key}")
        got = {(c["server"], c["workload"]) for c in cells}
        for s in ("epoll", "blocking", "busypoll"):
            for w in names - {"http"}:
                self.assertIn((s, w), got)
        self.assertIn(("epoll", "http"), got)
        self.assertNotIn(("blocking", "http"), got)     # the models speak echo only

    def test_runs_are_consistent(self):
        runs = self.doc["runs"]
        self.assertEqual(len(runs), len(self.doc["cells"]) - sum(c["status"] != "ok" for c in self.doc["cells"]))
        for r in runs:
            where = f"{r['server']} / {r['workload']}"
            self.assertTrue(r["ok"], f"{where}: {r.get('note')}")
            self.assertEqual(r["server_exit"], 0, f"{where}: the server did not exit cleanly on SIGTERM")
            self.assertEqual(r["errors"], 0, where)
            self.assertGreater(r["requests"], 0, where)
            self.assertGreaterEqual(r["requests_incl_warmup"], r["requests"], where)
            self.assertGreater(r["server_cpu_s"], 0, where)
            if r["workload"] == "churn":
                # a connection per request: connects = requests (+ those cut at the end)
                self.assertGreaterEqual(r["connects"], r["requests_incl_warmup"], where)
                self.assertLessEqual(r["connects"], r["requests_incl_warmup"] + 100, where)
            else:
                self.assertEqual(r["connects"], 100, where)
            if r["workload"].startswith("idle-"):
                self.assertEqual(r["idle_dropped"], 0, where)
                self.assertGreater(r["idle_setup_s"], 0, where)

    def test_busy_poll_spins_with_no_client(self):
        cpu = {r["server"]: r["no_client_cpu_pct"] for r in self.doc["runs"]
               if r["workload"] == "echo-64" and "no_client_cpu_pct" in r}
        self.assertEqual(set(cpu), {"epoll", "blocking", "busypoll"})
        self.assertGreater(cpu["busypoll"], 30, cpu)       # a core, less what others take
        self.assertLess(cpu["blocking"], 20, cpu)          # asleep in accept / read
        self.assertLess(cpu["epoll"], 20, cpu)             # asleep in epoll_wait

    def test_charts_are_svg_with_a_bar_per_cell(self):
        ok = {(c["server"], c["workload"]) for c in self.doc["cells"] if c["status"] == "ok"}
        root = ET.parse(os.path.join(self.out, "chart.svg")).getroot()
        self.assertEqual(root.tag, SVG_NS + "svg")
        bars = [r.get("data-cell") for r in root.iter(SVG_NS + "rect") if r.get("data-cell")]
        # throughput and CPU efficiency: a bar each per measured cell
        self.assertEqual(sorted(bars), sorted(f"{s}/{w}" for s, w in ok for _ in range(2)))
        for r in root.iter(SVG_NS + "rect"):
            if r.get("data-cell"):
                self.assertGreater(float(r.get("data-value")), 0)
                self.assertGreater(float(r.get("height")), 0)
        series = {p.get("data-series") for p in root.iter(SVG_NS + "polyline")}
        self.assertEqual(series, {"epoll", "blocking", "busypoll"})   # the scaling lines

        models = ET.parse(os.path.join(self.out, "models.svg")).getroot()
        self.assertEqual(models.tag, SVG_NS + "svg")
        mbars = [r.get("data-cell") for r in models.iter(SVG_NS + "rect") if r.get("data-cell")]
        # throughput, p99 and CPU per request of each model server at echo-64
        self.assertEqual(sorted(mbars), sorted(f"{s}/echo-64" for s in ("epoll", "blocking", "busypoll")
                                               for _ in range(3)))

    def test_markdown_table(self):
        with open(os.path.join(self.out, "results.md")) as f:
            md = f.read()
        self.assertIn(md.strip(), self.stdout)
        self.assertIn("| server | echo 64 B | echo 4 KiB | HTTP /hello | churn (conn/s) | 100 + 20 idle |", md)
        self.assertIn("### The five I/O models", md)
        for s in ("epoll", "blocking", "busypoll"):
            self.assertRegex(md, rf"\n\| {s} \| [0-9.]+[kM]? \(")
        self.assertIn("Machine: ", md)


class Interrupt(unittest.TestCase):
    def test_sigint_stops_everything(self):
        with tempfile.TemporaryDirectory(prefix="bench-int.") as tmp:
            err_path = os.path.join(tmp, "stderr")
            with open(err_path, "w") as err:
                p = subprocess.Popen(bench_cmd(os.path.join(tmp, "out")), stdout=subprocess.DEVNULL, stderr=err)
            try:
                deadline = time.monotonic() + 30
                seen = ""
                while time.monotonic() < deadline and p.poll() is None:
                    with open(err_path) as f:
                        seen = f.read()
                    if "[  3/" in seen:        # the third run is under way
                        break
                    time.sleep(0.05)
                self.assertIn("[  3/", seen, "iop-bench did not get to its third run")
                time.sleep(0.2)
                running = tagged_processes(p.pid)
                p.send_signal(signal.SIGINT)
                status = p.wait(timeout=20)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                left = tagged_processes(p.pid)
                for q in left:
                    os.kill(q, signal.SIGKILL)
            self.assertEqual(status, 130)
            self.assertEqual(left, [], "processes left running after the interrupt")
            self.assertTrue(running, "no server or load was running when interrupted")
            with open(err_path) as f:
                self.assertIn("interrupted", f.read())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--build-dir", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
