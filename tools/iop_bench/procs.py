"""The processes the benchmark starts: started in their own session (a Ctrl-C in
the terminal reaches only us), tagged in their environment, stopped by PID, their
CPU time read from /proc. Nothing here touches a process it did not start."""

import os
import re
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Every process started here carries this in its environment, so that a test can
# tell whether any was left behind.
TAG = f"iop-bench-{os.getpid()}"

_live = {}       # pid -> Popen: what cleanup() must stop


def _env(extra=None):
    env = dict(os.environ, IOP_BENCH_TAG=TAG)
    env.update(extra or {})
    return env


def spawn(argv, stdout, stderr, env=None):
    """Starts argv in a new session; registered until reap()."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                         env=_env(env), start_new_session=True, close_fds=True)
    _live[p.pid] = p
    return p


def run(argv, timeout, out_path, err_path, watch=None, on_watch=None):
    """Runs argv to its end (killed by PID after timeout s), its output in the two
    files: (status, stdout, stderr); status None on a timeout. With watch (a
    regex), on_watch() is called as soon as a line of its stderr matches."""
    with open(out_path, "w") as out, open(err_path, "w") as err:
        p = spawn(argv, out, err)
    deadline = time.monotonic() + timeout
    try:
        if watch and wait_for_line(err_path, watch, p, timeout):
            on_watch()
        p.wait(timeout=max(0.0, deadline - time.monotonic()))
        status = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        status = None
    finally:
        if p.poll() is None:     # interrupted (Ctrl-C): it must not outlive us
            p.kill()
            p.wait()
        _live.pop(p.pid, None)
    return status, _read(out_path), _read(err_path)


def _read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _stat(pid):
    """(ppid, state, cpu ticks incl. reaped children, start time) of pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    # after the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14) ... starttime(19)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return int(fields[1]), fields[0], ticks, int(fields[19])


def tree(pid):
    """{pid: (cpu ticks, start time)} of pid and all its descendants."""
    parent = {}
    info = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                parent[int(d)] = st[0]
                info[int(d)] = st
    out = {}
    todo = [pid]
    kids = {}
    for p, pp in parent.items():
        kids.setdefault(pp, []).append(p)
    while todo:
        p = todo.pop()
        if p in info and p not in out:
            out[p] = (info[p][2], info[p][3])
            todo.extend(kids.get(p, []))
    return out


def tree_cpu_s(pid):
    """utime + stime of pid and its descendants (all threads of each, and the
    children they reaped), in seconds: the server's CPU from its rusage."""
    return sum(t for t, _ in tree(pid).values()) / CLK_TCK


def _alive(pid, start):
    st = _stat(pid)
    return st is not None and st[3] == start and st[1] not in ("Z", "X")


def stop(p, grace=5.0):
    """SIGTERM to p, SIGKILL after grace s; then any descendant still running (a
    worker that outlived its supervisor), by PID. The exit status of p (negative:
    killed by that signal), and whether it had to be killed."""
    family = {q: s for q, (_, s) in tree(p.pid).items() if q != p.pid}
    killed = False
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            killed = True
    _live.pop(p.pid, None)
    deadline = time.monotonic() + 2.0
    for q, start in family.items():
        while _alive(q, start) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(q, start):
            os.kill(q, signal.SIGKILL)
            killed = True
    return p.returncode, killed


def cleanup():
    """Stops everything still running that we started (at exit and on Ctrl-C)."""
    for pid, p in list(_live.items()):
        try:
            stop(p, grace=2.0)
        except (OSError, ProcessLookupError):
            pass
    _live.clear()


def wait_for_line(path, pattern, p, timeout):
    """Waits until a whole line of file path matches pattern (compiled regex), or p
    exits, or timeout s pass. The match, or None."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "r", errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        for line in text.splitlines(keepends=True):
            if line.endswith("\n"):
                m = pattern.search(line)
                if m:
                    return m
        if p.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def count_lines(path, pattern):
    try:
        with open(path, "r", errors="replace") as f:
            return sum(1 for line in f if pattern.search(line))
    except OSError:
        return 0


def first_line(path, skip=r"^\s*$"):
    """The first non-empty line of a file, for error messages."""
    try:
        with open(path, "r", errors="replace") as f:
            for line in f:
                if not re.match(skip, line):
                    return line.strip()
    except OSError:
        pass
    return ""
