#!/usr/bin/env python3
"""make bench: measure schedfs beside its references and write BENCHMARKS.md.

Every row is measured in this one run, beside the reference it is compared with:
  reads  open/read/close of sched with 1 and 4 readers: schedfs (direct_io, the default),
         schedfs -o page_cache, a C libfuse direct_io server (refserver.c), /proc/uptime, and
         a tmpfs file with the same text; interleaved rounds, the median of each is reported;
  held   the same files kept open and re-read with pread at offset 0, 1 and 4 readers, with
         the fewest texts one reader saw and the most ticks one reader skipped;
  crowd  8 open/read/close readers beside 2 busy loops on 2 cores;
  poll   how soon a poller wakes after each tick (pollwake.c), beside the tick's own lateness;
  ticks  lateness of schedfs's ticks at 100 and 1000 Hz over 10 s, with cyclictest at the
         same interval running at the same time, and the count's pace;
  cost   CPU of an idle mount, peak RSS, mount-to-ready and unmount-to-exit times;
  scale  a ProcFS tree of 100,000 files in 1,000 directories (procfs-scale) beside a tmpfs tree
         of the same shape: find, ls -lR, reading every file, memory per entry, and the CPU
         of 10,000 files announcing changes at 100 Hz (scale.py);
  scrape node_exporter's textfile collector reading the mount's metrics/, beside one reading a
         static copy of schedfs.prom on tmpfs, in each read mode (scrape.py);
  survival  `schedfs --upgrade` and `kill -9` of the server, 30 times each, and SIGSTOP of it 20
         times, under a reader: how long until the mount serves again, and the longest stall
         the reader saw (survival.py);
  round trips  the requests a warm `cat` of `sched` waits on in each mode, from the daemon's debug
         log, and the cost of one round trip to the daemon (roundtrips.py).

Usage: bench.py SCHEDFS LOADGEN REFSERVER IDLETICK POLLWAKE SCALE OUTPUT.md
"""
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from harness import Daemon, alive, kib, progress, unmount, wait_exactly, wait_for
from scale import ANNOUNCE_HZ, ANNOUNCING, DIRECTORIES, FILES, RUNS, measure_scale
from scrape import SCRAPE_ROUNDS, SCRAPE_SECONDS, measure_scrape
from survival import HANG_RUNS, SURVIVAL_RUNS, measure_survival, server_of
from roundtrips import ROUND_TRIP_CALLS, WARM_CATS, measure_round_trips, waited

SCHEDFS, LOADGEN, REFSERVER, IDLETICK, POLLWAKE, SCALE, OUTPUT = sys.argv[1:8]
READ_SECONDS = 3
ROUNDS = 5
TICK_SECONDS = 10
TIMED_RUNS = 30
IDLE_RUNS = 3


POLL_SECONDS = 5
SCHEDFS_DIRECT = "schedfs (direct_io, default)"
SCHEDFS_CACHE = "schedfs -o page_cache"
C_SERVER = "C libfuse server, direct_io"
UPTIME = "/proc/uptime"
TMPFS = "tmpfs file, same text"


# Reads of the page-cache mode that raced a change of the text's length: the kernel may take a
# cached page of the old text and then the new size, and copy the old text and a NUL (see
# NOTES.md). They are counted and reported; a bad read anywhere else fails the benchmark.
torn_in_page_cache = {"reads": 0, "bad": 0, "seen": []}


def loadgen(path, threads, kind, how="open", tolerate=False):
    result = subprocess.run([LOADGEN, path, str(threads), str(READ_SECONDS), kind, how],
                            capture_output=True, text=True, timeout=READ_SECONDS + 60)
    figures = json.loads(result.stdout)
    if figures["bad"] and not tolerate:
        raise RuntimeError(f"{figures['bad']} bad reads of {path}: {result.stderr}")
    if tolerate:
        torn_in_page_cache["reads"] += figures["ops"]
        torn_in_page_cache["bad"] += figures["bad"]
        torn_in_page_cache["seen"] += [line for line in result.stderr.splitlines() if "bad read" in line]
    return figures


def median_run(runs):
    ordered = sorted(runs, key=lambda run: run["ops_per_s"])
    return ordered[len(ordered) // 2]


class TmpfsFile:
    """A file on tmpfs holding a sched text: the physical limit of a cached small-file read."""

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="schedfs-bench.", dir="/dev/shm")
        kind = subprocess.run(["stat", "-f", "-c", "%T", self.root], capture_output=True, text=True).stdout.strip()
        if kind != "tmpfs":
            raise RuntimeError(f"/dev/shm is {kind}, not tmpfs")
        with open(self.path("sched"), "w") as text:
            text.write("Timer was called 12345 times so far\n")
        return self

    def path(self, name):
        return os.path.join(self.root, name)

    def __exit__(self, *failure):
        shutil.rmtree(self.root, ignore_errors=True)


READ_TARGETS = {
    SCHEDFS_DIRECT: [SCHEDFS, "MNT", "-f"],
    SCHEDFS_CACHE: [SCHEDFS, "MNT", "-f", "-o", "page_cache"],
    C_SERVER: [REFSERVER, "MNT"],
    UPTIME: None,
    TMPFS: "tmpfs",
}


def target(name):
    """The file to read for `name`, and what its text must look like, in a context."""
    command = READ_TARGETS[name]
    if command is None:
        return contextlib.nullcontext(None), "uptime"
    if command == "tmpfs":
        return TmpfsFile(), "sched"
    return Daemon(command), "sched"


def read_rows(names, thread_counts, how, rounds, label, busy=0):
    runs = {(name, threads): [] for name in names for threads in thread_counts}
    peak_rss = 0
    loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(busy)]
    try:
        for round_number in range(1, rounds + 1):
            for name in names:
                progress(f"{label}, round {round_number}/{rounds}: {name}")
                context, kind = target(name)
                with context as served:
                    path = "/proc/uptime" if served is None else served.path("sched")
                    for threads in thread_counts:
                        runs[(name, threads)].append(loadgen(path, threads, kind, how, tolerate=name == SCHEDFS_CACHE))
                    if isinstance(served, Daemon) and served.command[0] == SCHEDFS:
                        peak_rss = max(peak_rss, kib(server_of(served.process.pid), "VmHWM"))
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    return {key: median_run(value) for key, value in runs.items()}, peak_rss, sum(
        run["ops"] for value in runs.values() for run in value)


def measure_reads():
    return read_rows(list(READ_TARGETS), (1, 4), "open", ROUNDS, "open/read/close")


def measure_held():
    return read_rows([SCHEDFS_DIRECT, SCHEDFS_CACHE, UPTIME, TMPFS], (1, 4), "held", 1, "held re-reads")


def measure_crowd():
    return read_rows([SCHEDFS_DIRECT, SCHEDFS_CACHE, UPTIME, TMPFS], (8,), "open", 1,
                     "8 readers beside 2 busy loops", busy=2)


def measure_poll():
    results = {}
    for name, options in ((SCHEDFS_DIRECT, []), (SCHEDFS_CACHE, ["-o", "page_cache"])):
        progress(f"poll wake-ups for {POLL_SECONDS} s at 100 Hz: {name}")
        with Daemon([SCHEDFS, "MNT", "-f"] + options) as daemon:
            woken = subprocess.run([POLLWAKE, daemon.path("sched"), "100", str(POLL_SECONDS)],
                                   capture_output=True, text=True, timeout=POLL_SECONDS + 60)
            if woken.returncode:
                raise RuntimeError(f"pollwake failed: {woken.stderr}{woken.stdout}")
            found = unmount_for_ticks(daemon)
            results[name] = {**json.loads(woken.stdout), "tick_p50": int(found.group(5)), "tick_p99": int(found.group(6))}
    return results


def cyclictest_histogram(path):
    counts = {}
    with open(path) as histogram:
        for line in histogram:
            if line.startswith("#") or not line.strip():
                continue
            microseconds, count = (int(field) for field in line.split())
            if count:
                counts[microseconds] = count
    total = sum(counts.values())

    def percentile(fraction):
        seen = 0
        for microseconds in sorted(counts):
            seen += counts[microseconds]
            if seen >= total * fraction:
                return microseconds
        return max(counts)

    return {"p50": percentile(0.5), "p99": percentile(0.99), "max": max(counts), "samples": total}


TICK_LINE = re.compile(r"ticks: (\d+) of (\d+) due at hz=(\d+) \(pace ([\d.]+)\); lateness p50 (\d+) µs, "
                       r"p99 (\d+) µs, max (\d+) µs; (\d+) late wake-ups")


def unmount_for_ticks(daemon):
    """Unmounts schedfs, which must exit 0, and returns its log's `ticks:` line, matched."""
    if daemon.unmount():
        raise RuntimeError("schedfs exited non-zero")
    with open(daemon.log) as log:
        return TICK_LINE.search(log.read())


def measure_ticks():
    results = {}
    for hz in (100, 1000):
        progress(f"ticks at {hz} Hz for {TICK_SECONDS} s, beside cyclictest")
        with Daemon([SCHEDFS, "MNT", "-f", "-o", f"hz={hz}"]) as daemon:
            histogram = os.path.join(daemon.root, "cyclictest.hist")
            cyclictest = subprocess.run(
                ["cyclictest", "-q", "-t1", f"-i{1_000_000 // hz}", f"-l{TICK_SECONDS * hz}", "-h20000",
                 f"--histfile={histogram}"], capture_output=True, text=True, timeout=TICK_SECONDS + 60)
            if cyclictest.returncode:
                raise RuntimeError(f"cyclictest failed: {cyclictest.stderr}")
            ticks, due, _, pace, p50, p99, maximum, late = unmount_for_ticks(daemon).groups()
            results[hz] = {
                "schedfs": {"p50": int(p50), "p99": int(p99), "max": int(maximum)},
                "cyclictest": cyclictest_histogram(histogram),
                "ticks": int(ticks), "due": int(due), "pace": float(pace), "late": int(late),
            }
    return results


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runtime_seconds(pid):
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{thread}/schedstat") as schedstat:
            total += int(schedstat.read().split()[0])
    return total / 1e9


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def idle_cpu(*pids):
    """% of one core used by `pids` together over TICK_SECONDS: from /proc/PID/stat and from
    schedstat (schedfs is a keeper and its server)."""
    time.sleep(1)
    def cpu():
        return sum(cpu_seconds(pid) for pid in pids)
    def runtime():
        return sum(runtime_seconds(pid) for pid in pids)
    ticks_before, runtime_before, started = cpu(), runtime(), time.monotonic()
    time.sleep(TICK_SECONDS)
    elapsed = time.monotonic() - started
    return {"stat": (cpu() - ticks_before) / elapsed * 100,
            "schedstat": (runtime() - runtime_before) / elapsed * 100}


def measure_cost():
    idle, cached, floor = [], [], []
    rss = keeper_rss = 0
    for run in range(1, IDLE_RUNS + 1):
        progress(f"idle CPU at 100 Hz over {TICK_SECONDS} s, run {run}/{IDLE_RUNS}: schedfs in each mode, "
                 "then a bare C timer loop")
        with Daemon([SCHEDFS, "MNT", "-f"]) as daemon:
            server = server_of(daemon.process.pid)
            idle.append(idle_cpu(daemon.process.pid, server))
            rss = max(rss, kib(server, "VmHWM"))
            keeper_rss = max(keeper_rss, kib(daemon.process.pid, "VmHWM"))
        # Read once, so that the kernel holds the inode: a tick must still push nothing more
        # than one invalidation.
        with Daemon([SCHEDFS, "MNT", "-f", "-o", "page_cache"]) as daemon:
            subprocess.run(["cat", daemon.path("sched")], check=True, stdout=subprocess.DEVNULL)
            cached.append(idle_cpu(daemon.process.pid, server_of(daemon.process.pid)))
        loop = subprocess.Popen([IDLETICK])
        try:
            floor.append(idle_cpu(loop.pid))
        finally:
            loop.kill()
            loop.wait()
    median = {key: statistics.median(run[key] for run in idle) for key in ("stat", "schedstat")}
    idle = {**median, "runs": idle, "rss": rss, "keeper_rss": keeper_rss,
            "cached": statistics.median(run["schedstat"] for run in cached),
            "floor": statistics.median(run["schedstat"] for run in floor)}

    progress(f"mount until cat works, {TIMED_RUNS} runs")
    ready = []
    for _ in range(TIMED_RUNS):
        root = tempfile.mkdtemp(prefix="schedfs-bench.")
        mountpoint, log = os.path.join(root, "mnt"), os.path.join(root, "log")
        os.mkdir(mountpoint)
        started = time.monotonic()
        subprocess.run([SCHEDFS, mountpoint, "-o", f"log={log}"], check=True)
        subprocess.run(["cat", os.path.join(mountpoint, "sched")], check=True, stdout=subprocess.DEVNULL)
        ready.append(time.monotonic() - started)
        with open(log) as text:
            pid = int(re.search(r"pid (\d+)", text.read()).group(1))
        unmount(mountpoint)
        wait_for(lambda: not alive(pid), 10, f"daemon {pid} to exit")
        shutil.rmtree(root, ignore_errors=True)

    progress(f"fusermount3 -u until the daemon has exited, {TIMED_RUNS} runs")
    exits = {"total": [], "fusermount3": [], "after": []}
    for _ in range(TIMED_RUNS):
        with Daemon([SCHEDFS, "MNT", "-f"]) as daemon:
            # Timed from the attempt that unmounts: one the kernel refuses as busy, just after
            # the readiness check closed its file, measures nothing of schedfs.
            started = unmount(daemon.mountpoint)
            returned = time.monotonic()
            status = wait_exactly(daemon.process, 10)
            exited = time.monotonic()
            if status:
                raise RuntimeError(f"schedfs exited {status}")
            exits["total"].append(exited - started)
            exits["fusermount3"].append(returned - started)
            exits["after"].append(exited - returned)
    return idle, ready, exits


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.machine())
    memory = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    swift = subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    fuse = subprocess.run(["pkg-config", "--modversion", "fuse3"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} × {model}, {memory / 1048576:.0f} GiB, Linux {platform.release()}, "
            f"{swift}, libfuse {fuse}")


def verdict(value, target, higher_is_better=True, unit="×"):
    met = value >= target if higher_is_better else value <= target
    if met:
        return "met"
    shortfall = (target - value) / target * 100 if higher_is_better else (value - target) / target * 100
    return f"**missed by {shortfall:.0f} %** ({value:.3g}{unit} against {target:g}{unit})"


def main():
    started = time.monotonic()
    reads, read_rss, read_count = measure_reads()
    held, _, held_count = measure_held()
    crowd, _, crowd_count = measure_crowd()
    polls = measure_poll()
    ticks = measure_ticks()
    idle, ready, exits = measure_cost()
    scale_times, per_entry, announcing_cpu = measure_scale(SCALE)
    scrapes = {mode: measure_scrape(SCHEDFS, options) for mode, options in
               (("direct_io (default)", ()), ("-o page_cache", ("-o", "page_cache")))}
    survival = measure_survival(SCHEDFS)
    with TmpfsFile() as tmpfs:
        requests, round_trip = measure_round_trips(SCHEDFS, tmpfs.root)
    progress(f"done in {time.monotonic() - started:.0f} s; writing {OUTPUT}")

    def ratio_rows(runs, comparisons, thread_counts):
        rows = ["", "| ratio | readers | value | target | verdict |", "|---|---|---|---|---|"]
        for threads in thread_counts:
            for numerator, denominator, target in comparisons:
                ratio = runs[(numerator, threads)]["ops_per_s"] / runs[(denominator, threads)]["ops_per_s"]
                rows.append(f"| {numerator} / {denominator} | {threads} | {ratio:.2f}× | ≥ {target:g}× | "
                            f"{verdict(ratio, target)} |")
        return rows

    checked = read_count + held_count + crowd_count - torn_in_page_cache["reads"]
    torn = torn_in_page_cache["bad"]
    examples = "; ".join(line.split(": ", 1)[1] for line in torn_in_page_cache["seen"][:3]).replace("\n", "\\n")
    lines = [
        "# schedfs benchmarks",
        "",
        f"Measured by `make bench` on {datetime.date.today().isoformat()}: {machine()}.",
        "Every ratio compares figures from this one run. Regenerate with `make bench`; the targets are",
        "those of the performance and read-path issues.",
        "",
        "The load generator (`Benchmarks/loadgen.c`) checks every read: one whole line, a count that",
        f"never goes back. Bad reads: 0 of {checked} outside the page-cache mode; in page-cache mode",
        f"{torn} of {torn_in_page_cache['reads']}" + (f" ({examples})" if torn else "") + ".",
        "`sched` ticks at 100 Hz throughout, and each row mounts afresh, so the count passes 10 and 100.",
        "",
        f"## Reads: open/read/close of `sched`, {READ_SECONDS} s each, median of {ROUNDS} interleaved rounds",
        "",
        "| file | readers | reads/s | p50 µs | p99 µs |",
        "|---|---|---|---|---|",
    ]
    for (name, threads), run in reads.items():
        lines.append(f"| {name} | {threads} | {run['ops_per_s']:.0f} | {run['p50_us']} | {run['p99_us']} |")
    lines += ratio_rows(reads, (
        (SCHEDFS_CACHE, UPTIME, 1.0), (SCHEDFS_CACHE, TMPFS, 0.9), (SCHEDFS_CACHE, C_SERVER, 20.0),
        (SCHEDFS_DIRECT, UPTIME, 1.0), (SCHEDFS_DIRECT, C_SERVER, 0.9)), (1, 4))

    lines += ["", f"## Held files: kept open and re-read with `pread` at offset 0, {READ_SECONDS} s, one round", "",
              "As procps reads /proc. A reader sees every tick when it skips none; at 100 Hz a reader sees",
              f"about {READ_SECONDS * 100} texts of `sched` (the tmpfs text never changes).", "",
              "| file | readers | reads/s | fewest texts one reader saw | most ticks one reader skipped |",
              "|---|---|---|---|---|"]
    for (name, threads), run in held.items():
        skipped = run["skipped_max"] if name.startswith("schedfs") else "–"
        lines.append(f"| {name} | {threads} | {run['ops_per_s']:.0f} | {run['distinct_min']} | {skipped} |")
    lines += ratio_rows(held, ((SCHEDFS_CACHE, UPTIME, 1.0), (SCHEDFS_DIRECT, UPTIME, 1.0)), (1, 4))

    lines += ["", f"## Readers that outnumber the cores: 8 open/read/close readers beside 2 busy loops, "
              f"{READ_SECONDS} s", "", "| file | reads/s | p50 µs | p99 µs |", "|---|---|---|---|"]
    for (name, _), run in crowd.items():
        lines.append(f"| {name} | {run['ops_per_s']:.0f} | {run['p50_us']} | {run['p99_us']} |")
    lines += ratio_rows(crowd, ((SCHEDFS_CACHE, UPTIME, 1.0), (SCHEDFS_CACHE, TMPFS, 0.9),
                                (SCHEDFS_DIRECT, UPTIME, 1.0)), (8,))

    lines += ["", f"## poll: how soon a poller of `sched` wakes after each tick, {POLL_SECONDS} s at 100 Hz", "",
              "`Benchmarks/pollwake.c` polls for `POLLPRI`, then re-reads the count. The tick of count N is due",
              "at D0 + N × 10 ms, and D0 is known only inside the daemon, so each wake-up is measured from the",
              "best one of the run: the figures leave out the best wake-up's own lateness, a few µs. The",
              "tick's own lateness, from its deadline, comes from the daemon's `ticks:` line of the same run.", "",
              "| mode | wake-ups | ticks not woken for | wake-up p50 / p99 / max µs | tick p50 / p99 µs | "
              "p99 beyond the tick's (≤ 100 µs) |", "|---|---|---|---|---|---|"]
    for name, run in polls.items():
        beyond = run["p99_us"] - run["tick_p99"]
        lines.append(f"| {name} | {run['wakeups']} | {run['missed']} | {run['p50_us']} / {run['p99_us']} / "
                     f"{run['max_us']} | {run['tick_p50']} / {run['tick_p99']} | {beyond} µs "
                     f"{verdict(beyond, 100, False, ' µs')} |")

    lines += ["", f"## Ticks: lateness against the deadline over {TICK_SECONDS} s, µs", "",
              "schedfs measures its own wake-ups (`ticks:` line of its log); cyclictest (rt-tests), at the",
              "same interval and the same (default) scheduling policy, runs at the same time.", "",
              "| hz | schedfs p50 | p99 | max | cyclictest p50 | p99 | max | p99 ratio (≤ 2×) | pace (1.000 ± 0.002) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for hz, result in ticks.items():
        ours, theirs = result["schedfs"], result["cyclictest"]
        ratio = ours["p99"] / max(theirs["p99"], 1)
        pace_ok = abs(result["pace"] - 1) <= 0.002
        lines.append(
            f"| {hz} | {ours['p50']} | {ours['p99']} | {ours['max']} | {theirs['p50']} | {theirs['p99']} | "
            f"{theirs['max']} | {ratio:.2f}× {verdict(ratio, 2.0, False)} | "
            f"{result['pace']:.4f} ({result['ticks']} of {result['due']}) "
            f"{'met' if pace_ok else '**missed**'} |")

    period_ms = 10

    def p50_p99(values):
        return f"{percentile(values, 0.5) * 1000:.1f} / {percentile(values, 0.99) * 1000:.1f} ms"

    exit_p99 = percentile(exits["total"], 0.99) * 1000
    runs = ", ".join(f"{run['schedstat']:.2f}" for run in idle["runs"])
    lines += ["", "## Cost", "", "| what | value | target | verdict |", "|---|---|---|---|",
              f"| CPU of an idle mount at 100 Hz, keeper and server, /proc/PID/stat (10 ms resolution), median of {IDLE_RUNS} × "
              f"{TICK_SECONDS} s | {idle['stat']:.2f} % | ≤ 0.5 % | {verdict(idle['stat'], 0.5, False, ' %')} |",
              f"| the same from all threads' schedstat (ns), median of {IDLE_RUNS} ({runs}) | "
              f"{idle['schedstat']:.2f} % | ≤ 0.5 % | {verdict(idle['schedstat'], 0.5, False, ' %')} |",
              f"| for scale: a bare C timerfd loop at 100 Hz (`idletick.c`), schedstat | {idle['floor']:.2f} % | | |",
              f"| idle schedfs / the bare loop, schedstat | {idle['schedstat'] / idle['floor']:.2f}× | ≤ 1.2× | "
              f"{verdict(idle['schedstat'] / idle['floor'], 1.2, False)} |",
              f"| an idle `-o page_cache` mount after one `cat` (the kernel holds the inode), schedstat | "
              f"{idle['cached']:.2f} % | ≤ 0.5 % | {verdict(idle['cached'], 0.5, False, ' %')} |",
              f"| peak RSS of the server, idle / after the read runs (the keeper beside it: "
              f"{idle['keeper_rss'] / 1024:.1f} MiB) | {idle['rss'] / 1024:.1f} / {read_rss / 1024:.1f} MiB "
              f"| ≤ 12 MiB | {verdict(max(idle['rss'], read_rss) / 1024, 12, False, ' MiB')} |",
              f"| `schedfs mnt` until `cat` works, p50 / p99 of {TIMED_RUNS} | {p50_p99(ready)} | | |",
              f"| `fusermount3 -u` until the daemon has exited, p50 / p99 of {TIMED_RUNS} | {p50_p99(exits['total'])} "
              f"| ≤ {period_ms + 5} ms | {verdict(exit_p99, period_ms + 5, False, ' ms')} |",
              f"| of which `fusermount3` itself runs | {p50_p99(exits['fusermount3'])} | | |",
              f"| of which the daemon exits after `fusermount3` returned | {p50_p99(exits['after'])} | | |"]
    lines += ["", f"## Scale: {DIRECTORIES * FILES} files in {DIRECTORIES} directories, beside tmpfs", "",
              "`Benchmarks/Scale/ProcFSScale.swift` serves the tree (direct_io, 2 request threads); a tmpfs tree",
              f"of the same names and texts is the reference. Times are the median of {RUNS} interleaved runs;",
              "the ratio is tmpfs's time over ProcFS's, so higher is better.", "",
              "| measure | ProcFS | tmpfs | ratio or value | target | verdict |", "|---|---|---|---|---|---|"]
    for name, measured in scale_times.items():
        ours, theirs = statistics.median(measured["procfs"]), statistics.median(measured["tmpfs"])
        lines.append(f"| {name} | {ours:.2f} s | {theirs:.2f} s | {theirs / ours:.2f}× | ≥ 0.5× | "
                     f"{verdict(theirs / ours, 0.5)} |")
    lines += [f"| resident memory per entry (the kernel's `proc_dir_entry` is about 200 bytes) | | | "
              f"{per_entry:.0f} bytes | ≤ 250 bytes | {verdict(per_entry, 250, False, ' bytes')} |",
              f"| CPU while {ANNOUNCING} files announce a change at {ANNOUNCE_HZ} Hz and none is open, "
              f"/proc/PID/stat | | | {announcing_cpu:.1f} % | ≤ 3 % | {verdict(announcing_cpu, 3, False, ' %')} |"]
    lines += ["", f"## Scrapes: node_exporter's textfile collector, {SCRAPE_SECONDS} s each, median of "
              f"{SCRAPE_ROUNDS} interleaved rounds", "",
              "`Benchmarks/scrape.py`: one node_exporter reads the mount's `metrics/`, another a copy of",
              "`schedfs.prom` on tmpfs (the same text, never changing); both run only the textfile collector,",
              "without their own go_/process_ metrics. GETs of `/metrics` one after another on one connection,",
              "each answer checked for `schedfs_timer_ticks_total` and `node_textfile_scrape_error 0`.", "",
              "In page-cache mode a scrape that raced a change of the text's length may read the old text and",
              "a NUL, which node_exporter refuses (`node_textfile_scrape_error 1`): those are counted, not failed.",
              "",
              "| mount mode | mount scrapes/s | p50 µs | tmpfs scrapes/s | p50 µs | ratio | target | verdict | torn scrapes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for mode, rounds in scrapes.items():
        ours = statistics.median(rate for rate, _ in rounds["mount"])
        theirs = statistics.median(rate for rate, _ in rounds["tmpfs"])
        ours_p50 = statistics.median(p50 for _, p50 in rounds["mount"]) * 1e6
        theirs_p50 = statistics.median(p50 for _, p50 in rounds["tmpfs"]) * 1e6
        target_cells = "≥ 0.8× | " + verdict(ours / theirs, 0.8) if mode.startswith("direct_io") else "| "
        lines.append(f"| {mode} | {ours:.0f} | {ours_p50:.0f} | {theirs:.0f} | {theirs_p50:.0f} | "
                     f"{ours / theirs:.2f}× | {target_cells} | {rounds['torn']} of {rounds['scrapes']} |")
    lines += ["", f"## Upgrades, crashes and hangs: {SURVIVAL_RUNS}, {SURVIVAL_RUNS} and {HANG_RUNS} on one mount, under a reader", "",
              "`Benchmarks/survival.py`. An upgrade is timed from the start of `schedfs --upgrade MNT` until it",
              "returns, once the new server serves (the command's own start included); a crash from `kill -9` of",
              "the server, and a hang from SIGSTOP of it, until a read of `sched` begun right after returns (a",
              "stopped server is found stuck after `hang_timeout`, 1 s by default, killed and replaced). The reader",
              "opens, reads and closes `sched` in a loop throughout; every text it read was whole.", "",
              "| what | p50 | p99 | target (p99) | verdict | longest stall a reader saw | reads |", "|---|---|---|---|---|---|---|"]
    names = {"upgrade": "`schedfs --upgrade`", "crash": "`kill -9` of the server", "hang": "SIGSTOP of the server"}
    for kind, target in (("upgrade", 50), ("crash", 100), ("hang", 1500)):
        measured = survival[kind]
        p99 = percentile(measured["times"], 0.99) * 1000
        lines.append(f"| {names[kind]} | "
                     f"{percentile(measured['times'], 0.5) * 1000:.1f} ms | {p99:.1f} ms | ≤ {target} ms | "
                     f"{verdict(p99, target, False, ' ms')} | {measured['stall'] * 1000:.1f} ms | {measured['reads']} |")
    lines += ["", "## Round trips: what a read of `sched` waits on", "",
              "`Benchmarks/roundtrips.py`. The requests of one `cat mnt/sched` after a first one warmed the",
              f"kernel's caches: the sequence most of {WARM_CATS} cats 0.1 s apart sent (so at 100 Hz after some ticks),",
              "from the daemon's debug log (`-d`); RELEASE and FORGET are sent without waiting. The others add a",
              "GETATTR where the count gained a digit. With no tick between, a page-cache `cat` waits on nothing",
              "(a mount test counts it).",
              f"A round trip is a `stat` of a name the mount lacks (one LOOKUP: a missing name is not kept),",
              f"less the same on tmpfs, the best of 3 × {ROUND_TRIP_CALLS}.", "",
              "| mode | requests a warm `cat` sends | waited on | target | verdict |", "|---|---|---|---|---|"]
    for mode, sent in requests.items():
        target_cells = f"≤ 3 | {verdict(len(waited(sent[0])), 3, False, '')}" if mode.startswith("direct_io") else "| "
        lines.append(f"| {mode} | {' '.join(sent[0])} ({sent[1]} of {WARM_CATS}) | {len(waited(sent[0]))} | {target_cells} |")
    cost, mount_stat, local_stat = round_trip
    lines += ["", "| what | µs |", "|---|---|",
              f"| one round trip to the daemon (a LOOKUP) | {cost:.1f} |",
              f"| a `stat` of a missing name on the mount / on tmpfs | {mount_stat:.1f} / {local_stat:.1f} |"]
    notes_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
    if os.path.exists(notes_path):
        lines += ["", open(notes_path).read().rstrip()]
    with open(OUTPUT, "w") as output:
        output.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
