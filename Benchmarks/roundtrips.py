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


def requests_of_a_warm_cat(schedfs, options):
    """The opcodes one `cat MNT/sched` sent, in order, after a first `cat` warmed the caches."""
    with Daemon([schedfs, "MNT", "-d"] + list(options)) as served:
        subprocess.run(["cat", served.path("sched")], check=True, capture_output=True)
        time.sleep(0.2)
        before = opcodes(served.log)
        subprocess.run(["cat", served.path("sched")], check=True, capture_output=True)
        time.sleep(0.2)
        return opcodes(served.log)[len(before):]


def opcodes(log):
    with open(log, errors="replace") as text:
        return re.findall(r"opcode: (\w+)", text.read())


def round_trip_us(schedfs, tmpfs_path):
    """The cost of one round trip: a `stat` of `sched` in direct_io mode, whose attributes the
    kernel does not keep, so each is one GETATTR, less a `stat` of a tmpfs file (none)."""
    def per_call(path):
        started = time.perf_counter()
        for _ in range(ROUND_TRIP_CALLS):
            os.stat(path)
        return (time.perf_counter() - started) / ROUND_TRIP_CALLS
    with Daemon([schedfs, "MNT", "-f"]) as served:
        per_call(served.path("sched"))
        mount = min(per_call(served.path("sched")) for _ in range(3))
    local = min(per_call(tmpfs_path) for _ in range(3))
    return (mount - local) * 1e6, mount * 1e6, local * 1e6


def measure_round_trips(schedfs, tmpfs_path):
    progress("round trips: the requests of a warm cat, and the cost of one")
    requests = {mode: requests_of_a_warm_cat(schedfs, options)
                for mode, options in (("direct_io (default)", ()), ("-o page_cache", ("-o", "page_cache")))}
    return requests, round_trip_us(schedfs, tmpfs_path)


def waited(requests):
    return [name for name in requests if name not in NOT_WAITED]
