"""The scale rows of make bench: a ProcFS tree of 100,000 files in 1,000 directories beside a
tmpfs tree of the same shape and texts (Benchmarks/Scale/ProcFSScale.swift serves it)."""
import os
import shutil
import subprocess
import tempfile
import time

from harness import Daemon, progress

DIRECTORIES = 1000
FILES = 100
RUNS = 3
ANNOUNCING = 10000
ANNOUNCE_HZ = 100
CPU_SECONDS = 10


def timed(command):
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tmpfs_tree():
    root = tempfile.mkdtemp(prefix="procfs-scale.", dir="/dev/shm")
    for directory in range(DIRECTORIES):
        os.mkdir(os.path.join(root, f"d{directory}"))
        for file in range(FILES):
            with open(os.path.join(root, f"d{directory}", f"f{file}"), "w") as text:
                text.write(f"{directory} {file}\n")
    return root


def workloads(root):
    read_all = f"find {root} -type f -print0 | xargs -0 -P 4 -n 500 cat > /dev/null"
    return {
        "`find MNT -type f`": ["find", root, "-type", "f"],
        "`ls -lR MNT`": ["ls", "-lR", root],
        "reading every file once, 4 processes": ["sh", "-c", read_all],
    }


def measure_scale(binary):
    """Rows for BENCHMARKS.md: the ratios, the memory per entry and the CPU of announcing."""
    progress(f"scale: making a tmpfs tree of {DIRECTORIES * FILES} files")
    reference = tmpfs_tree()
    times = {}
    try:
        command = [binary, "MNT", str(DIRECTORIES), str(FILES)]
        with Daemon(command, ready="d0/f0") as daemon:
            with open(daemon.log) as log:
                figures = dict(field.split("=") for field in log.readline().split())
            for name in workloads(reference):
                times[name] = {"tmpfs": [], "procfs": []}
            for run in range(1, RUNS + 1):
                for name in workloads(reference):
                    progress(f"scale, run {run}/{RUNS}: {name}")
                    times[name]["tmpfs"].append(timed(workloads(reference)[name]))
                    times[name]["procfs"].append(timed(workloads(daemon.mountpoint)[name]))
        per_entry = (int(figures["rss_kib_full"]) - int(figures["rss_kib_empty"])) * 1024 / int(figures["entries"])
        progress(f"scale: CPU while {ANNOUNCING} files announce a change at {ANNOUNCE_HZ} Hz, none open")
        with Daemon(command + [str(ANNOUNCING), str(ANNOUNCE_HZ)], ready="d0/f0") as daemon:
            time.sleep(1)
            before, started = cpu_seconds(daemon.process.pid), time.monotonic()
            time.sleep(CPU_SECONDS)
            cpu = (cpu_seconds(daemon.process.pid) - before) / (time.monotonic() - started) * 100
    finally:
        shutil.rmtree(reference, ignore_errors=True)
    return times, per_entry, cpu
