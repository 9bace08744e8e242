"""Configuring and building what the plan needs, as tools/bench/echo-bench does:
a Release build at <repo>/build unless told otherwise; what fails to build is
reported and left out, the rest is measured."""

import os
import subprocess
import sys


def _help_targets(build):
    r = subprocess.run(["cmake", "--build", build, "--target", "help"], capture_output=True, text=True)
    return {line.split()[1] for line in r.stdout.splitlines() if line.startswith("... ")}


def build(repo, build_dir, servers, log_path):
    """Builds the load, the servers and their modules. Warnings on stderr; never
    fatal unless the load itself cannot be built (returns False then)."""
    def note(msg):
        sys.stderr.write(f"iop-bench: {msg}\n")

    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        note(f"configuring a Release build in {build_dir}")
        r = subprocess.run(["cmake", "-S", repo, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            note("cmake configure failed:\n" + r.stderr[-2000:])
            return False
    want = ["iop-client", "ioplexd", "iop_service_echo", "iop_service_http"]
    for s in servers:
        for t in (s.target, *s.extra_targets):
            if t and t not in want:
                want.append(t)
    have = _help_targets(build_dir)
    # new sources (apps/models) or -dev packages installed since the last
    # configure appear only after configuring again
    if any(t not in have for t in want):
        subprocess.run(["cmake", build_dir], capture_output=True, text=True)
        have = _help_targets(build_dir)
    missing = [t for t in want if t not in have]
    targets = [t for t in want if t in have]
    if missing:
        note("no build target for: " + ", ".join(missing) + " (left out)")
    with open(log_path, "w") as log:
        r = subprocess.run(["cmake", "--build", build_dir, "-j", str(os.cpu_count() or 1), "--target",
                            *targets], stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        # build them one by one so that one broken target does not hide the others
        failed = []
        with open(log_path, "a") as log:
            for t in targets:
                if subprocess.run(["cmake", "--build", build_dir, "--target", t], stdout=log,
                                  stderr=subprocess.STDOUT).returncode != 0:
                    failed.append(t)
        if failed:
            note(f"building {', '.join(failed)} failed (see {log_path}); measuring what exists")
        if "iop-client" in failed:
            return False
    return True
