#!/usr/bin/env python3
"""The newcomer's path, as `make test` runs it: a package of its own, outside this one, that
depends on this repository by path as the README's "Use it in your package" says, is built
from nothing and mounted; and every Swift snippet of the libraries' documentation (the README's
library section, the public doc comments, the DocC articles) is compiled in it, against the
public API alone.

Usage: embed.py REPOSITORY   (needs root and /dev/fuse, as the mount tests do)

It prints how long the build and the mount took. Whatever happens, it unmounts what it
mounted, stops what it started, and removes its temporary directory."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SNIPPET_SOURCES = ["Sources/ProcFS", "Sources/ProcFSCore", "Sources/ProcFSMetrics", "Sources/TaskQueue"]
IMPORTS = "import ProcFS\nimport ProcFSMetrics\nimport Synchronization\nimport TaskQueue\n\n"


def fail(message):
    print(f"embed: {message}", file=sys.stderr)
    sys.exit(1)


def swift_blocks(text):
    """The ```swift blocks of a Markdown text, in order."""
    return [block.strip("\n") for block in re.findall(r"^```swift\n(.*?)^```", text, re.S | re.M)]


def readme_parts(repository):
    """The README's Package.swift and program of "Use it in your package", and the other
    snippets of its library section."""
    readme = open(os.path.join(repository, "README.md"), encoding="utf-8").read()
    start = readme.index("## The ProcFS library")
    end = readme.index("\n## ", start + 1)
    blocks = swift_blocks(readme[start:end])
    manifest = next((b for b in blocks if b.startswith("// swift-tools-version")), None)
    program = next((b for b in blocks if "@main" in b), None)
    if manifest is None or program is None:
        fail("the README's library section has no Package.swift or no @main program")
    return manifest, program, [b for b in blocks if b not in (manifest, program)]


def documentation_snippets(repository):
    """(where, code) for each ```swift block of the public doc comments and the DocC articles."""
    found = []
    for folder in SNIPPET_SOURCES:
        for directory, _, files in os.walk(os.path.join(repository, folder)):
            for name in sorted(files):
                path = os.path.join(directory, name)
                text = open(path, encoding="utf-8").read()
                if name.endswith(".swift"):
                    # Doc comment lines, their `///` (and one space) taken off.
                    text = "\n".join(
                        re.sub(r"^\s*/// ?", "", line) if line.lstrip().startswith("///") else "\u0000"
                        for line in text.split("\n"))
                for block in swift_blocks(text):
                    if "\u0000" not in block:
                        found.append((os.path.relpath(path, repository), block))
    return found


def is_mounted(path):
    """Whether `path` is a mount point in /proc/self/mountinfo, live or dead."""
    with open("/proc/self/mountinfo") as table:
        return any(line.split(" ")[4] == path for line in table)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    repository = os.path.abspath(sys.argv[1])
    if not os.path.exists("/dev/fuse"):
        fail("/dev/fuse is missing: the embedding test mounts, and cannot run here")
    manifest, program, readme_snippets = readme_parts(repository)
    snippets = [("README.md", code) for code in readme_snippets] + documentation_snippets(repository)

    scratch = tempfile.mkdtemp(prefix="schedfs-embed.")
    daemon = None
    mountpoint = os.path.join(scratch, "mnt")
    try:
        # As the README has it: this repository in a folder named `schedfs`, beside the package.
        os.symlink(repository, os.path.join(scratch, "schedfs"))
        package = os.path.join(scratch, "hello-procfs")
        os.makedirs(os.path.join(package, "Sources", "hello-procfs"))
        os.makedirs(os.path.join(package, "Sources", "Snippets"))
        # The snippets' target beside the README's own, in the README's Package.swift.
        snippets_target = ('.target(name: "Snippets", dependencies: [\n'
                           '            .product(name: "ProcFS", package: "schedfs"),\n'
                           '            .product(name: "ProcFSMetrics", package: "schedfs"),\n'
                           '            .product(name: "TaskQueue", package: "schedfs"),\n'
                           '        ]),\n        ')
        if "targets: [\n        " not in manifest:
            fail("the README's Package.swift has no `targets: [` list to add the snippets to")
        open(os.path.join(package, "Package.swift"), "w").write(
            manifest.replace("targets: [\n        ", "targets: [\n        " + snippets_target, 1) + "\n")
        open(os.path.join(package, "Sources", "hello-procfs", "HelloProcFS.swift"), "w").write(program + "\n")
        shutil.copy(os.path.join(repository, "Tests", "Embedding", "SnippetContext.swift"),
                    os.path.join(package, "Sources", "Snippets"))
        for number, (where, code) in enumerate(snippets):
            body = "\n".join("    " + line if line else "" for line in code.split("\n"))
            open(os.path.join(package, "Sources", "Snippets", f"Snippet{number}.swift"), "w").write(
                f"{IMPORTS}// From {where}.\nfunc snippet{number}() async throws {{\n{body}\n}}\n")
        print(f"embed: building a package outside this one, with the README's Package.swift and program "
              f"and {len(snippets)} snippets of the documentation", flush=True)

        started = time.monotonic()
        # Bounded: a build that hangs is killed, and reported as not built.
        build = subprocess.Popen(["timeout", "--kill-after=10", "1200", "swift", "build"], cwd=package,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = []
        for line in build.stdout:
            output.append(line)
            # Progress: a line per phase, not per file.
            if line.startswith(("Fetching", "Computing", "Building for", "Build complete")):
                print(f"embed:   {line.rstrip()}", flush=True)
        if build.wait() != 0:
            errors = list(dict.fromkeys(line.rstrip() for line in output if ": error:" in line))
            origins = [f"Snippet{number}.swift is from {where}" for number, (where, _) in enumerate(snippets)
                       if any(f"/Snippet{number}.swift:" in line for line in errors)]
            fail("the outside package did not build:\n" + "\n".join((errors or output[-40:]) + origins))
        built = time.monotonic() - started

        os.mkdir(mountpoint)
        log = os.path.join(scratch, "log")
        started = time.monotonic()
        with open(log, "w") as stderr:
            daemon = subprocess.Popen([os.path.join(package, ".build", "debug", "hello-procfs"), mountpoint],
                                      stderr=stderr)
        said = lambda: open(log).read().strip()
        text = None
        while time.monotonic() - started < 10 and daemon.poll() is None:
            if is_mounted(mountpoint):
                # Bounded: a server that never answers fails the test, it does not hang it.
                text = subprocess.run(["cat", os.path.join(mountpoint, "uptime")], capture_output=True, text=True,
                                      timeout=5).stdout
                break
            time.sleep(0.001)
        mounted = time.monotonic() - started
        if text is None:
            fail(f"hello-procfs did not serve within 10 s: {said()}")
        if not re.fullmatch(r"\d+\n", text):
            fail(f"mnt/uptime read {text!r}, not a number of seconds")
        unmount = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
        if unmount.returncode != 0:
            fail(f"fusermount3 -u: {unmount.stderr.strip()}")
        status = daemon.wait(timeout=10)
        if status != 0:
            fail(f"hello-procfs exited {status} after the unmount: {said()}")
        daemon = None
        print(f"embed: ok: built in {built:.1f} s; mounted and read mnt/uptime ({text.strip()} s) "
              f"{mounted * 1000:.0f} ms after the start; unmounted, and it exited 0")
    except subprocess.TimeoutExpired as expired:
        fail(f"{' '.join(expired.cmd)} did not finish within {expired.timeout} s")
    finally:
        # A dead mount too: os.path.ismount cannot tell one.
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True)
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
