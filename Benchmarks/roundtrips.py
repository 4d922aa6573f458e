"""make bench's round trips: which requests a warm `cat` of `sched` waits on in each read mode,
counted from the daemon's own debug log (`-d`, libfuse's `opcode:` lines), and what one round
trip to the daemon costs on this machine, so that a read's time can be read as requests ×
round trip."""
import os
import re
import subprocess
import time

from harness import Daemon, progress

ROUND_TRIP_CALLS = 20000
# What the kernel sends without waiting for the answer: the caller goes on at once.
NOT_WAITED = {"RELEASE", "RELEASEDIR", "FORGET", "BATCH_FORGET", "INTERRUPT"}


WARM_CATS = 10


def requests_of_a_warm_cat(schedfs, options):
    """The opcodes `cat MNT/sched` sent, in order, after a first `cat` warmed the caches: the
    sequence most of WARM_CATS cats, 0.1 s apart (so at 100 Hz after some ticks), sent, and how
    many of them sent it."""
    with Daemon([schedfs, "MNT", "-d"] + list(options)) as served:
        subprocess.run(["cat", served.path("sched")], check=True, capture_output=True)
        seen = []
        for _ in range(WARM_CATS):
            time.sleep(0.1)
            before = opcodes(served.log)
            subprocess.run(["cat", served.path("sched")], check=True, capture_output=True)
            time.sleep(0.1)
            seen.append(tuple(opcodes(served.log)[len(before):]))
        common = max(set(seen), key=seen.count)
        return list(common), seen.count(common)


def opcodes(log):
    with open(log, errors="replace") as text:
        return re.findall(r"opcode: (\w+)", text.read())


def round_trip_us(schedfs, tmpfs_dir):
    """The cost of one round trip: a `stat` of a name the mount lacks, which the kernel does not
    keep, so each is one LOOKUP, less a `stat` of a name tmpfs lacks (none)."""
    def per_call(path):
        started = time.perf_counter()
        for _ in range(ROUND_TRIP_CALLS):
            try:
                os.stat(path)
            except FileNotFoundError:
                pass
        return (time.perf_counter() - started) / ROUND_TRIP_CALLS
    missing = "no-such-entry"
    with Daemon([schedfs, "MNT", "-f"]) as served:
        per_call(served.path(missing))
        mount = min(per_call(served.path(missing)) for _ in range(3))
    local = min(per_call(os.path.join(tmpfs_dir, missing)) for _ in range(3))
    return (mount - local) * 1e6, mount * 1e6, local * 1e6


def measure_round_trips(schedfs, tmpfs_dir):
    progress("round trips: the requests of a warm cat, and the cost of one")
    requests = {mode: requests_of_a_warm_cat(schedfs, options)
                for mode, options in (("direct_io (default)", ()), ("-o page_cache", ("-o", "page_cache")))}
    return requests, round_trip_us(schedfs, tmpfs_dir)


def waited(requests):
    return [name for name in requests if name not in NOT_WAITED]
