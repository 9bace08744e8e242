"""The machine and the build the numbers come from, recorded with them."""

import datetime
import os
import platform
import subprocess


def _cmd(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _cpuinfo(key):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _meminfo_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1048576, 1)
    except OSError:
        pass
    return None


def liburing_version():
    """From the package manager, else pkg-config; '' when neither knows."""
    for pkg in ("liburing2", "liburing-dev", "liburing1"):
        v = _cmd(["dpkg-query", "-W", "-f=${Version}", pkg])
        if v:
            return f"{v} ({pkg}, dpkg)"
    v = _cmd(["pkg-config", "--modversion", "liburing"])
    return f"{v} (pkg-config)" if v else ""


def build_type(build):
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""


def describe(repo, build, pinning):
    commit = _cmd(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    if commit and _cmd(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return {
        "cpu_model": _cpuinfo("model name") or platform.processor() or "unknown",
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "arch": platform.machine(),
        "liburing": liburing_version(),
        "commit": commit,
        "build_type": build_type(build),
        "pinning": pinning,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
    }


def one_line(m):
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    return (f"{m['cpu_model']}, {m['cpus_usable']} of {m['cpus_online']} CPUs usable{mem}; "
            f"Linux {m['kernel']} ({m['arch']}); liburing {m['liburing'] or 'unknown'}; "
            f"commit {m['commit'] or 'unknown'}, {m['build_type'] or 'unknown'} build; {m['pinning']}")
