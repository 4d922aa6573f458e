#!/usr/bin/env python3
"""Finishes the schedfs(8) that swift-argument-parser's generate-manual plugin writes.

The plugin renders the same definitions that `schedfs --help` prints. Four things it writes
do not suit a command without subcommands, and are mended here (stdin to stdout):
- it lists the `help` subcommand that ArgumentParser gives every command, and `subcommand`
  in the synopsis: both are dropped;
- a blank line between paragraphs is not mdoc: it becomes `.Pp`;
- a run of indented lines (the table of -o options) is filled like prose: it is kept as
  written, in `.Bd -literal`;
- it has no SEE ALSO: one is added.
"""
import sys

SEE_ALSO = """.Sh "SEE ALSO"
.Xr fusermount3 1 ,
.Xr fuse 4 ,
.Xr mount.fuse3 8 ,
.Xr proc 5
"""

lines = sys.stdin.read().splitlines()
out = []
literal = False
skipping_help = False
for line in lines:
    if skipping_help:
        # The help subcommand's entry ends with its own nested list.
        if line == ".El":
            skipping_help = False
        continue
    if line == ".It Em help":
        skipping_help = True
        continue
    if line == ".Ar subcommand":
        continue
    indented = line.startswith(" ")
    if indented and not literal:
        out.append(".Bd -literal")
        literal = True
    elif not indented and literal:
        out.append(".Ed")
        literal = False
    out.append(".Pp" if line == "" else line)
if literal:
    out.append(".Ed")
print("\n".join(out))
print(SEE_ALSO, end="")
