#!/usr/bin/env python3
"""Finishes the schedfs(8) that swift-argument-parser's generate-manual plugin writes.

The plugin renders the same definitions that `schedfs --help` prints. Five things it writes
do not suit a command without subcommands, and are mended here (stdin to stdout):
- it lists the `help` subcommand that ArgumentParser gives every command, and `subcommand`
  in the synopsis: both are dropped;
- its synopsis is one line with an optional `mountpoint...`: it becomes the command's forms,
  `schedfs MOUNTPOINT [options]`, the mount helper's `schedfs SOURCE MOUNTPOINT -o options`,
  `schedfs --upgrade MOUNTPOINT`, and `--version`/`--help` (a flag it lists that these do not
  name stays on the first line);
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

# The lines of the generated synopsis that the forms below place themselves.
PLACED = {".Nm", ".Op Ar mountpoint...", ".Op Fl -upgrade", ".Op Fl -version", ".Op Fl -help"}


def synopsis(generated):
    """The command's forms, from the lines the plugin wrote after `.Sh SYNOPSIS`."""
    flags = [line for line in generated if line not in PLACED]
    return ([".Nm", ".Ar mountpoint"] + flags
            + [".Nm", ".Ar source", ".Ar mountpoint", ".Fl o Ar options..."]
            + [".Nm", ".Fl -upgrade", ".Ar mountpoint"]
            + [".Nm", ".Fl -version | -help"])


lines = sys.stdin.read().splitlines()
if ".Sh SYNOPSIS" in lines:
    start = lines.index(".Sh SYNOPSIS") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(".Sh "))
    lines[start:end] = synopsis(lines[start:end])
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
