"""What make bench and make soak share: daemons on fresh mounts, waiting, /proc readings."""
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time


def progress(message):
    print(f"[{os.path.basename(sys.argv[0])} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mounted(path):
    with open("/proc/self/mountinfo") as table:
        return any(line.split()[4] == path for line in table)


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.001)


def unmount(mountpoint, seconds=2):
    """`fusermount3 -u`, again while it says the mount is busy: right after a file on the
    mount was closed it is sometimes refused so for a few milliseconds (7 mounts of 40 here,
    the readiness check's file closed just before). Returns when the attempt that unmounted
    began (time.monotonic())."""
    deadline = time.monotonic() + seconds
    while True:
        started = time.monotonic()
        result = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
        if result.returncode == 0:
            return started
        if "busy" not in result.stderr or started > deadline:
            raise RuntimeError(f"fusermount3 -u {mountpoint}: {result.stderr.strip()}")
        time.sleep(0.001)


def readable(path):
    try:
        with open(path) as f:
            return bool(f.read())
    except OSError:
        return False


class Daemon:
    """A file server in the foreground on a fresh directory; unmounted and reaped on exit."""

    def __init__(self, command, log=None, ready="sched"):
        self.ready = ready
        self.root = tempfile.mkdtemp(prefix="schedfs-bench.")
        self.mountpoint = os.path.join(self.root, "mnt")
        os.mkdir(self.mountpoint)
        self.log = log or os.path.join(self.root, "log")
        self.command = [a.replace("MNT", self.mountpoint) for a in command]

    def __enter__(self):
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_for(lambda: mounted(self.mountpoint), 10, f"{self.command[0]} to mount")
        wait_for(lambda: readable(self.path(self.ready)), 60, f"{self.ready} to answer")
        return self

    def path(self, name):
        return os.path.join(self.mountpoint, name)

    def unmount(self):
        unmount(self.mountpoint)
        return self.process.wait(timeout=10)

    def __exit__(self, *failure):
        if self.process.poll() is None:
            if mounted(self.mountpoint):
                subprocess.run(["fusermount3", "-u", self.mountpoint])
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint])
        shutil.rmtree(self.root, ignore_errors=True)


def kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def wait_exactly(process, seconds):
    """Waits for `process` to exit and returns its status; a pidfd wakes at the exit itself,
    where Popen.wait(timeout=...) polls with growing sleeps and would add up to half its delay."""
    pidfd = os.pidfd_open(process.pid)
    try:
        if not select.select([pidfd], [], [], seconds)[0]:
            raise RuntimeError(f"pid {process.pid} did not exit within {seconds} s")
    finally:
        os.close(pidfd)
    return process.wait()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
