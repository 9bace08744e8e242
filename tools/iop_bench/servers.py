"""Starting one server for one run: the command line for each kind, waiting until
it serves, and what to say when it cannot run at all."""

import os
import re
import shutil
import socket
import subprocess
import time

from . import procs

LISTENING = re.compile(r"listening on [^ ,]*:(\d+)(.*)$")
IOPLEXD_SERVICE = re.compile(r"ioplexd: (\w+) listening on [^ ,]*:(\d+)")
IOPLEXD_BACKEND = re.compile(r"ioplexd: backend (.*)$")
IOPLEXD_READY = re.compile(r"ioplexd: (worker \d+: pid \d+ ready|serving in this process)")
START_TIMEOUT = 10.0

HELLO_BODY = "Hello, World!"   # what ioplexd's http service answers on /hello


class StartError(Exception):
    """The server did not come up; the message says why (its first error line)."""


class Running:
    """A started server: its process, the port of the service asked for, and what
    it said about itself (backend report, library version)."""

    def __init__(self, proc, port, detail, out_path, err_path):
        self.proc = proc
        self.port = port
        self.detail = detail
        self.out_path = out_path
        self.err_path = err_path


def why_unavailable(srv, build, http_built):
    """None when srv can run here, else why not (what to build or install)."""
    if srv.kind == "nginx":
        return None if nginx_path() else "not installed: apt-get install nginx-light (or nginx)"
    path = os.path.join(build, srv.program)
    if not os.access(path, os.X_OK):
        if srv.package:
            return f"not built: needs {srv.package} (apt-get install {srv.package}, then build again)"
        return f"not built: no {path}"
    if srv.kind == "ioplexd":
        mod = os.path.join(build, "lib/ioplex/backends", f"iop_backend_{srv.backend}.so")
        if not os.path.exists(mod):
            return f"not built: no {mod}"
    return None


def nginx_path():
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def free_port():
    """A loopback port free right now (for nginx, which cannot listen on port 0 and
    say which port it got)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nginx_conf(tmp, port, fds):
    return f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {fds};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections {fds};
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /hello {{
            default_type text/plain;
            return 200 "{HELLO_BODY}";
        }}
    }}
}}
"""


def _wait_connectable(port, p, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _wait_count(path, pattern, n, p):
    """Waits until n lines of path match pattern; False if p exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while procs.count_lines(path, pattern) < n:
        if p.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def command(srv, build, proto, workers, tmp):
    """The server's command line (without pinning) and, for nginx, its port."""
    if srv.kind == "ioplexd":
        plugins = ":".join(os.path.join(build, d) for d in ("lib/ioplex/backends", "lib/ioplex/services"))
        return [os.path.join(build, srv.program), "--backend", srv.backend, "--workers", str(workers),
                "--drain-timeout", "1", "--plugin-path", plugins,
                "--service", f"{proto}=127.0.0.1:0"], None
    if srv.kind == "nginx":
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_nginx_conf(tmp, port, 32768))
        return [nginx_path(), "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log")], port
    return [os.path.join(build, srv.program), "--listen", "127.0.0.1:0", *srv.flags], None


def start(srv, build, proto, workers, pin, tmp, seq):
    """Starts srv for proto, pinned (pin: a taskset prefix or []), and waits until
    it serves. A Running, or StartError."""
    argv, port = command(srv, build, proto, workers, tmp)
    out_path = os.path.join(tmp, f"server.{seq}.out")
    err_path = os.path.join(tmp, f"server.{seq}.err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        p = procs.spawn(pin + argv, out, err)
    detail = ""
    ok = False
    if srv.kind == "ioplexd":
        m = procs.wait_for_line(out_path, IOPLEXD_SERVICE, p, START_TIMEOUT)
        if m:
            port = int(m.group(2))
            b = procs.wait_for_line(out_path, IOPLEXD_BACKEND, p, 1.0)
            detail = b.group(1).strip() if b else ""
            # each worker says when it serves (stderr); --workers 0 says it on stdout
            ok = _wait_count(err_path if workers else out_path, IOPLEXD_READY, max(workers, 1), p)
    elif srv.kind == "nginx":
        ok = _wait_connectable(port, p, START_TIMEOUT)
        detail = subprocess.run([nginx_path(), "-v"], capture_output=True, text=True).stderr.strip()
    else:
        m = procs.wait_for_line(out_path, LISTENING, p, START_TIMEOUT)
        if m:
            port = int(m.group(1))
            detail = m.group(2).strip(" ,()")
            ok = True
    if not ok:
        status, _ = procs.stop(p, grace=2.0)
        why = procs.first_line(err_path) or procs.first_line(os.path.join(tmp, "error.log"))
        raise StartError(f"{why or 'did not come up within %g s' % START_TIMEOUT} (exit {status})")
    return Running(p, port, detail, out_path, err_path)
