"""make bench's scrape row: node_exporter's textfile collector reading schedfs's `metrics/`,
beside a second node_exporter reading a static copy of `schedfs.prom` on tmpfs (/dev/shm).

Both run only the textfile collector, without node_exporter's own go_/process_ metrics, so
that reading the file is as much of a scrape as it can be. Each round scrapes one, then the
other, for SCRAPE_SECONDS each: GETs of /metrics one after another on one kept-alive
connection, each answer checked. The median of the rounds is reported.
"""
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from harness import Daemon, progress, wait_for

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
SCRAPE_SECONDS = 3
SCRAPE_ROUNDS = 5


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        answer = connection.getresponse()
        return answer.status == 200
    except OSError:
        return False
    finally:
        connection.close()


class Exporter:
    """node_exporter on a free loopback port reading `directory`; stopped by its PID on exit."""

    def __init__(self, directory):
        self.directory = directory

    def __enter__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{self.port}", "--web.disable-exporter-metrics",
             "--collector.disable-defaults", "--collector.textfile",
             f"--collector.textfile.directory={self.directory}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_for(lambda: scrape(self.port) or self.process.poll() is not None, 10, "node_exporter to answer")
        if self.process.poll() is not None:
            raise RuntimeError(f"node_exporter exited {self.process.returncode} on port {self.port}")
        return self

    def __exit__(self, *failure):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def scrapes(port, seconds, torn):
    """Scrapes for `seconds`; returns scrapes a second and each scrape's time in seconds.

    `torn` is None, or a list that takes the scrapes whose file node_exporter could not parse:
    in page-cache mode a read that races a change of the text's length may copy the old text
    and a NUL (see the README's *Reading*), which node_exporter refuses."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    times = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            began = time.monotonic()
            connection.request("GET", "/metrics")
            answer = connection.getresponse()
            body = answer.read()
            times.append(time.monotonic() - began)
            if torn is not None and answer.status == 200 and b"\nnode_textfile_scrape_error 1\n" in body:
                torn.append(time.monotonic())
                continue
            if (answer.status != 200 or b"\nschedfs_timer_ticks_total " not in body
                    or b"\nnode_textfile_scrape_error 0\n" not in body):
                raise RuntimeError(f"a bad scrape from port {port}: {answer.status}\n{body.decode()[:2000]}")
    finally:
        connection.close()
    return len(times) / (time.monotonic() - started), times


def measure_scrape(schedfs, options=()):
    """Returns {"mount": [...], "tmpfs": [...], "torn": n, "scrapes": n}: per round, scrapes a
    second and the p50 in seconds; and in page-cache mode the scrapes of a torn text, of all."""
    results = {"mount": [], "tmpfs": [], "torn": 0, "scrapes": 0}
    torn = [] if "page_cache" in options else None
    with Daemon([schedfs, "MNT", "-f", *options]) as daemon:
        static = tempfile.mkdtemp(prefix="schedfs-scrape.", dir="/dev/shm")
        try:
            # Read, not shutil.copyfile: its sendfile copies nothing of a file whose size is 0,
            # as a direct_io file's is (see README, "Reading").
            with open(daemon.path("metrics/schedfs.prom"), "rb") as live_text:
                text = live_text.read()
            with open(os.path.join(static, "schedfs.prom"), "wb") as copy:
                copy.write(text)
            with Exporter(daemon.path("metrics")) as live, Exporter(static) as fixed:
                for round_number in range(1, SCRAPE_ROUNDS + 1):
                    progress(f"scrapes through node_exporter, round {round_number}/{SCRAPE_ROUNDS}: "
                             f"the mount's metrics/, then a copy on tmpfs, {SCRAPE_SECONDS} s each")
                    for name, exporter in (("mount", live), ("tmpfs", fixed)):
                        rate, times = scrapes(exporter.port, SCRAPE_SECONDS, torn if name == "mount" else None)
                        results[name].append((rate, statistics.median(times)))
                        if name == "mount":
                            results["scrapes"] += len(times)
            results["torn"] = len(torn or [])
        finally:
            shutil.rmtree(static, ignore_errors=True)
    return results
