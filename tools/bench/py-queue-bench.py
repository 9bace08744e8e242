#!/usr/bin/env python3
"""The Python peer of iop-queue-bench: one producer process and one consumer
process moving --count messages of --size bytes through a multiprocessing.Queue,
each message carrying its sequence number and a CLOCK_MONOTONIC timestamp taken
just before put(). The consumer checks the order and measures, after a warmup of
--warmup messages, messages per second and the latency at get() (p50, p99).
Prints one JSON line. Exit status 0 if every message arrived in order."""
import argparse
import ctypes
import json
import multiprocessing as mp
import os
import signal
import struct
import sys
import time

HEADER = struct.Struct("<QQ")  # sequence number, timestamp (ns)


def child_setup(cpu):
    """Dies with the parent (PR_SET_PDEATHSIG), runs on cpu if given."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if cpu is not None and cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def producer(q, count, size, cpu):
    child_setup(cpu)
    pad = bytes(size - HEADER.size)
    now = time.monotonic_ns
    for i in range(count):
        q.put(HEADER.pack(i, now()) + pad)
    q.close()
    q.join_thread()  # the feeder thread has written everything


def consumer(q, count, warmup, cpu, out):
    child_setup(cpu)
    now = time.monotonic_ns
    lat = []
    errors = 0
    t0 = t1 = 0
    for i in range(count):
        msg = q.get(timeout=30)  # never hangs if the producer died
        t = now()
        seq, ts = HEADER.unpack_from(msg)
        if seq != i:
            errors += 1
        if i == warmup:
            t0 = t
        if i >= warmup:
            lat.append(t - ts)
        t1 = t
    lat.sort()
    n = len(lat)
    res = {
        "msgs_per_s": (count - warmup - 1) / ((t1 - t0) / 1e9) if t1 > t0 else 0.0,
        "p50_us": lat[n // 2] / 1000 if n else 0.0,
        "p99_us": lat[min(n - 1, n * 99 // 100)] / 1000 if n else 0.0,
        "messages": count,
        "errors": errors,
    }
    out.put(res)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--producer-cpu", type=int, default=None)
    ap.add_argument("--consumer-cpu", type=int, default=None)
    a = ap.parse_args()
    if a.size < HEADER.size or a.count < 2:
        ap.error(f"--size must be at least {HEADER.size} and --count at least 2")
    warmup = a.warmup if a.warmup is not None else a.count // 10
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    out = ctx.Queue()
    c = ctx.Process(target=consumer, args=(q, a.count, warmup, a.consumer_cpu, out))
    p = ctx.Process(target=producer, args=(q, a.count, a.size, a.producer_cpu))
    c.start()
    p.start()
    try:
        res = out.get(timeout=60 + a.count / 10000)
    except Exception:  # queue.Empty: the consumer died or hung
        for proc in (p, c):
            proc.kill()
            proc.join()
        print(json.dumps({"error": "no result from the consumer"}), flush=True)
        return 1
    p.join(30)
    c.join(30)
    res["python"] = sys.version.split()[0]
    print(json.dumps(res), flush=True)
    return 0 if res["errors"] == 0 and p.exitcode == 0 and c.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
