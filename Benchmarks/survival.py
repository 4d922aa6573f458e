"""make bench's survival rows: how long a mount waits while its server is replaced.

  upgrade  `schedfs --upgrade MNT`, from the command's start until it returns, which it does once
           the new server serves (the command's own start is in the figure);
  crash    `kill -9` of the server, until a read of `sched` started right after the kill returns
           (the kernel holds it until the next server serves).
  hang     SIGSTOP of the server, until a read of `sched` started right after it returns: the
           keeper finds the server stuck after `hang_timeout` (1 s by default), kills it and
           starts another, which the kernel sends the read again. HANG_RUNS times.

Both with a reader opening, reading and closing `sched` in a loop meanwhile, whose longest wait
between two reads is the longest stall a reader saw. Each SURVIVAL_RUNS times on one mount.
"""
import os
import signal
import subprocess
import threading
import time

from harness import Daemon, progress, wait_for

SURVIVAL_RUNS = 30
HANG_RUNS = 20


def server_of(keeper):
    """The keeper's schedfs child, the server."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)
        except OSError:
            continue
        rest = fields[1].split()
        if rest[0] != "Z" and int(rest[1]) == keeper and fields[0].endswith("(schedfs"):
            return int(entry)
    return None


class Reader(threading.Thread):
    """Reads `path` in a loop; every text must be whole; keeps the longest gap between reads."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stop, self.longest, self.reads, self.bad = path, False, 0.0, 0, []

    def run(self):
        last = time.monotonic()
        while not self.stop:
            with open(self.path, "rb") as text:
                line = text.read()
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now
            self.reads += 1
            if not (line.startswith(b"Timer was called ") and line.endswith(b" times so far\n")):
                self.bad.append(line)


def measure_survival(schedfs):
    """Returns {"upgrade": …, "crash": …, "hang": …}: each run's time in seconds, and each kind's
    longest stall."""
    results = {}
    with Daemon([schedfs, "MNT", "-f"]) as daemon:
        sched = daemon.path("sched")
        for kind in ("upgrade", "crash", "hang"):
            runs = HANG_RUNS if kind == "hang" else SURVIVAL_RUNS
            progress(f"survival: {runs} × {kind} under a reader")
            reader = Reader(sched)
            reader.start()
            times = []
            for _ in range(runs):
                server = server_of(daemon.process.pid)
                started = time.monotonic()
                if kind == "upgrade":
                    subprocess.run([schedfs, "--upgrade", daemon.mountpoint], check=True, stdout=subprocess.DEVNULL)
                else:
                    os.kill(server, signal.SIGKILL if kind == "crash" else signal.SIGSTOP)
                    with open(sched, "rb") as text:
                        text.read()
                times.append(time.monotonic() - started)
                wait_for(lambda: server_of(daemon.process.pid) not in (None, server), 5, "a new server")
                time.sleep(0.1)
            reader.stop = True
            reader.join(5)
            if reader.bad:
                raise RuntimeError(f"bad reads during {kind}: {reader.bad[:3]}")
            results[kind] = {"times": times, "stall": reader.longest, "reads": reader.reads}
    return results
