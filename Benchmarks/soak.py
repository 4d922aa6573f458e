#!/usr/bin/env python3
"""make soak: a long run at 1000 Hz under readers, to show that nothing drifts or grows.

Mounts schedfs at hz=1000, reads sched from 4 threads for SECONDS (loadgen checks every read),
reads the rest of the tree (timer/*, uptime) in a loop beside them, and prints the daemon's RSS
and open descriptors at the start, every 30 s and at the end. Passes when every read was whole,
the tick pace stayed 1.000 ± 0.002, the descriptors did not change, and RSS grew by at most
1 MiB after the warm-up. The files other than sched are made anew on every open (the kernel
caches none of them), so this also shows that their per-lookup snapshots do not pile up.

Usage: soak.py SCHEDFS LOADGEN SECONDS
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

from harness import Daemon, kib, progress

SCHEDFS, LOADGEN, SECONDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
WARM_UP = 5
SAMPLE_EVERY = 30
RSS_GROWTH_KIB = 1024


def sample(pid, started):
    rss = kib(pid, "VmRSS")
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    progress(f"t={time.monotonic() - started:6.0f} s  RSS {rss / 1024:5.1f} MiB  open descriptors {descriptors}")
    return rss, descriptors


# Each file of the tree, and what a whole read of it looks like.
TREE = {
    "timer/hz": re.compile(r"1000\n"),
    "timer/ticks": re.compile(r"\d+\n"),
    "timer/queue": re.compile(r"name runs queued_since\nsched \d+ \d+\.\d{6}\n"),
    "timer/latency": re.compile(r"p50_us \d+\np99_us \d+\nmax_us \d+\nmissed_ticks \d+\n"),
    "uptime": re.compile(r"\d+\.\d\d \d+\.\d\d\n"),
}


def read_tree(daemon, until, counts):
    """Reads every file of TREE in turn until `until`, counting reads and bad ones."""
    while time.monotonic() < until:
        for name, whole in TREE.items():
            with open(daemon.path(name)) as file:
                text = file.read()
            counts["reads"] += 1
            if not whole.fullmatch(text):
                counts["bad"] += 1
                counts.setdefault("first bad", f"{name}: {text!r}")


def main():
    progress(f"soak: hz=1000, 4 readers, {SECONDS} s")
    with Daemon([SCHEDFS, "MNT", "-f", "-o", "hz=1000"]) as daemon:
        pid = daemon.process.pid
        started = time.monotonic()
        readers = subprocess.Popen([LOADGEN, daemon.path("sched"), "4", str(SECONDS), "sched"],
                                   stdout=subprocess.PIPE, text=True)
        tree = {"reads": 0, "bad": 0}
        tree_reader = threading.Thread(target=read_tree, args=(daemon, started + SECONDS, tree))
        tree_reader.start()
        time.sleep(WARM_UP)
        first = sample(pid, started)
        while readers.poll() is None:
            time.sleep(min(SAMPLE_EVERY, max(1, SECONDS - (time.monotonic() - started))))
            last = sample(pid, started)
        reads = json.loads(readers.stdout.read())
        tree_reader.join()
        if daemon.unmount():
            sys.exit("schedfs exited non-zero")
        with open(daemon.log) as log:
            ticks = re.search(r"ticks: (\d+) of (\d+) due .*\(pace ([\d.]+)\)", log.read())

    pace = int(ticks.group(1)) / int(ticks.group(2))
    growth = last[0] - first[0]
    checks = {
        f"reads: {reads['ops']} ({reads['ops_per_s']:.0f}/s), bad {reads['bad']}": reads["bad"] == 0,
        f"reads of the rest of the tree: {tree['reads']}, bad {tree['bad']} {tree.get('first bad', '')}":
            tree["reads"] > 0 and tree["bad"] == 0,
        f"pace {pace:.5f} ({ticks.group(1)} of {ticks.group(2)} ticks)": abs(pace - 1) <= 0.002,
        f"RSS {first[0] / 1024:.1f} -> {last[0] / 1024:.1f} MiB (growth {growth} KiB, at most {RSS_GROWTH_KIB})":
            growth <= RSS_GROWTH_KIB,
        f"open descriptors {first[1]} -> {last[1]}": first[1] == last[1],
    }
    for what, good in checks.items():
        print(f"{'ok  ' if good else 'FAIL'} {what}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
