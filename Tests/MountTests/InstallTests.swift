import Glibc
import Testing

/// `make install` as a packager or an operator meets it: what it puts where, that each piece
/// works (the man page, the completions, the systemd unit), that `mount -t fuse.schedfs` and
/// the README's fstab line mount through the installed binary, and that `make uninstall`
/// leaves nothing behind. The debug build is installed into a temporary `DESTDIR`.
///
/// Part of the serialized `MountTests`: a new mount namespace copies every mount there is at
/// that moment, and would hold other tests' mounts alive until it ends.
extension MountTests {
@Suite struct Installation {
    static let prefix = "/usr/local"
    static let installed = [
        "bin/schedfs",
        "share/man/man8/schedfs.8",
        "share/bash-completion/completions/schedfs",
        "share/zsh/site-functions/_schedfs",
        "share/fish/vendor_completions.d/schedfs.fish",
        "lib/systemd/system/mnt-sched.mount",
    ]

    /// A `make install-files` of the binary under test into a fresh DESTDIR.
    struct Installed {
        let destination: TemporaryDirectory
        var root: String { destination.path + Installation.prefix }

        init() throws {
            destination = try TemporaryDirectory()
            let make = try runCommand(
                "/usr/bin/make",
                ["-s", "-C", packageRoot, "install-files", "BIN=\(try schedfsBinary())",
                 "DESTDIR=\(destination.path)", "PREFIX=\(Installation.prefix)"],
                timeout: .seconds(60))
            guard make.status == 0 else {
                Issue.record("make install-files failed: \(make.stderr)")
                destination.remove()
                throw SystemError(errno: EIO)
            }
        }

        func path(_ relative: String) -> String { root + "/" + relative }
    }

    /// Each of these programs must be here for the checks below; `make test` installs them.
    static func require(_ programs: [String]) throws {
        for program in programs {
            try #require(access(program, X_OK) == 0, "\(program) is missing: `make test` installs it (see test-deps)")
        }
    }

    @Test func installPutsEachPieceInPlaceAndUninstallRemovesThem() throws {
        let installation = try Installed()
        defer { installation.destination.remove() }
        for file in Self.installed {
            var attributes = stat()
            #expect(stat(installation.path(file), &attributes) == 0, "make install did not install \(file)")
            let mode = attributes.st_mode & 0o7777
            #expect(mode == (file.hasPrefix("bin/") ? 0o755 : 0o644), "\(file) has mode \(String(mode, radix: 8))")
        }
        let version = try runCommand(installation.path("bin/schedfs"), ["--version"])
        #expect(version.status == 0 && version.stdout.hasPrefix("schedfs "), "\(version)")

        let uninstall = try runCommand(
            "/usr/bin/make",
            ["-s", "-C", packageRoot, "uninstall", "DESTDIR=\(installation.destination.path)", "PREFIX=\(Self.prefix)"])
        #expect(uninstall.status == 0, "\(uninstall)")
        let left = try runCommand("/usr/bin/find", [installation.destination.path, "-type", "f"])
        #expect(left.stdout.isEmpty, "make uninstall left: \(left.stdout)")
    }

    /// The man page renders without a warning, and names the same options `--help` prints
    /// (`make test`'s check-man also checks that it is what the definitions make now).
    @Test func theManPageRendersAndNamesEveryOptionHelpDoes() throws {
        try Self.require(["/usr/bin/groff", "/usr/bin/man"])
        let installation = try Installed()
        defer { installation.destination.remove() }
        let page = installation.path("share/man/man8/schedfs.8")
        let lint = try runCommand("/usr/bin/groff", ["-t", "-mandoc", "-Tutf8", "-ww", "-z", page])
        #expect(lint.status == 0 && lint.stderr.isEmpty, "groff warns: \(lint.stderr)")
        let shown = try runCommand("/usr/bin/env", ["MANPATH=\(installation.path("share/man"))", "MANWIDTH=80", "man", "8", "schedfs"])
        #expect(shown.status == 0 && shown.stdout.contains("SCHEDFS(8)"), "man 8 schedfs: \(shown)")

        let help = try runCommand(try schedfsBinary(), ["--help"]).stdout
        let source = readWhole(page) ?? ""
        let items = source.split(separator: "\n").filter { $0.hasPrefix(".It Fl ") }.flatMap { $0.split(separator: " ") }
        let helpOptions = help.split(separator: "\n").drop { !$0.hasPrefix("OPTIONS:") }.dropFirst()
            .filter { $0.hasPrefix("  -") }
            // The names, in the column before the descriptions.
            .flatMap { $0.prefix(26).split(separator: " ").filter { $0.hasPrefix("-") } }
            .map { $0.hasSuffix(",") ? $0.dropLast() : $0 }
        #expect(helpOptions.count >= 6, "--help lists \(helpOptions)")
        for option in helpOptions {
            #expect(items.contains(Substring(option.dropFirst())), "the man page lacks \(option)")
        }
        let overview = help.split(separator: "\n").first { $0.hasPrefix("OVERVIEW: ") }?.dropFirst("OVERVIEW: ".count) ?? ""
        #expect(!overview.isEmpty && source.contains(".Nd \"\(overview)\""), "the man page's NAME is not --help's overview")
    }

    /// bash completes options and, for the mountpoint, directories only; zsh's and fish's
    /// scripts load, and fish completes options.
    @Test func theCompletionsComplete() throws {
        try Self.require(["/bin/bash", "/usr/bin/zsh", "/usr/bin/fish"])
        let installation = try Installed()
        defer { installation.destination.remove() }
        let bash = installation.path("share/bash-completion/completions/schedfs")
        let scratch = try TemporaryDirectory()
        defer { scratch.remove() }
        mkdir(scratch.path + "/a-directory", 0o755)
        close(open(scratch.path + "/a-file", O_CREAT | O_WRONLY, 0o644))
        func completeInBash(_ word: String) throws -> [Substring] {
            let script = """
                cd \(scratch.path) && source \(bash) && COMP_WORDS=(schedfs '\(word)') && COMP_CWORD=1 \
                && COMP_LINE='schedfs \(word)' && COMP_POINT=${#COMP_LINE} && _schedfs schedfs '\(word)' schedfs \
                && printf '%s\\n' "${COMPREPLY[@]}"
                """
            let result = try runCommand("/bin/bash", ["-c", script])
            #expect(result.status == 0 && result.stderr.isEmpty, "bash completion of '\(word)': \(result)")
            return result.stdout.split(separator: "\n")
        }
        #expect(try completeInBash("--he") == ["--help"])
        let mountpoints = try completeInBash("a-")
        #expect(mountpoints == ["a-directory"], "bash offers \(mountpoints) for the mountpoint")

        let zsh = try runCommand("/usr/bin/zsh", ["-n", installation.path("share/zsh/site-functions/_schedfs")])
        #expect(zsh.status == 0 && zsh.stderr.isEmpty, "zsh: \(zsh)")
        // compinit finds the function where it was installed and binds it to the command.
        let bound = try runCommand("/usr/bin/zsh", [
            "-f", "-c",
            "fpath=(\(installation.path("share/zsh/site-functions")) $fpath); autoload -Uz compinit; "
                + "compinit -u -D; autoload -Uz +X _schedfs; print -r -- ${_comps[schedfs]} ${+functions[_schedfs]}",
        ])
        #expect(bound.status == 0 && bound.stdout == "_schedfs 1\n", "zsh: \(bound)")

        let fish = try runCommand(
            "/usr/bin/fish",
            ["--no-config", "-c", "source \(installation.path("share/fish/vendor_completions.d/schedfs.fish")); complete -C 'schedfs --he'"])
        #expect(fish.status == 0 && fish.stdout.hasPrefix("--help"), "fish: \(fish)")
    }

    /// The unit passes `systemd-analyze verify` (its man page reference included), and it is
    /// the unit systemd's own fstab generator makes of the README's fstab line.
    @Test func theMountUnitIsWhatTheReadmesFstabLineMakes() throws {
        try Self.require(["/usr/bin/systemd-analyze", "/lib/systemd/system-generators/systemd-fstab-generator"])
        let installation = try Installed()
        defer { installation.destination.remove() }
        let unit = installation.path("lib/systemd/system/mnt-sched.mount")
        let verify = try runCommand(
            "/usr/bin/env", ["MANPATH=\(installation.path("share/man"))", "systemd-analyze", "verify", unit], timeout: .seconds(30))
        #expect(verify.status == 0 && verify.stderr.isEmpty, "systemd-analyze verify: \(verify)")

        let line = try Self.readmeFstabLine()
        let scratch = try TemporaryDirectory()
        defer { scratch.remove() }
        let fstab = scratch.path + "/fstab"
        #expect(writeFile(fstab, line + "\n"))
        for directory in ["normal", "early", "late"] { mkdir(scratch.path + "/" + directory, 0o755) }
        let generate = try runCommand(
            "/usr/bin/env",
            ["SYSTEMD_FSTAB=\(fstab)", "/lib/systemd/system-generators/systemd-fstab-generator",
             scratch.path + "/normal", scratch.path + "/early", scratch.path + "/late"])
        #expect(generate.status == 0, "systemd-fstab-generator: \(generate)")
        let generated = readWhole(scratch.path + "/normal/mnt-sched.mount") ?? ""
        #expect(Self.mountSection(generated) == Self.mountSection(readWhole(unit) ?? ""),
                "the fstab line makes\n\(generated)\nbut the unit says\n\(readWhole(unit) ?? "")")
        #expect(!Self.mountSection(generated).isEmpty)
    }

    /// `mount -t fuse.schedfs` and `mount -a` on the README's fstab line (with a temporary
    /// mountpoint) start the installed binary through mount.fuse3, which finds it only in its
    /// fixed PATH. So they run in a private mount namespace where the DESTDIR's `bin` is bound
    /// on /usr/local/bin: nothing on this machine is changed.
    @Test func mountAndTheFstabLineMountThroughTheInstalledBinary() throws {
        try requireFuse()
        try Self.require(["/usr/bin/unshare", "/sbin/mount.fuse3"])
        let installation = try Installed()
        defer { installation.destination.remove() }
        let scratch = try TemporaryDirectory()
        defer {
            // Should a step fail, a daemon in the namespace would keep it alive: end it.
            for pid in livePIDs(mentioning: scratch.path) { kill(pid, SIGKILL) }
            if !eventually(timeout: .seconds(5), { livePIDs(mentioning: scratch.path).isEmpty }) {
                Issue.record("processes of \(scratch.path) outlived SIGKILL: \(livePIDs(mentioning: scratch.path))")
            }
            scratch.remove()
        }
        let byType = scratch.path + "/by-type"
        let byFstab = scratch.path + "/by-fstab"
        mkdir(byType, 0o755)
        mkdir(byFstab, 0o755)
        let line = try Self.readmeFstabLine().replacing("/mnt/sched", with: byFstab)
        let fstab = scratch.path + "/fstab"
        #expect(writeFile(fstab, line + "\n"))
        let script = """
            set -e
            mount --bind \(installation.path("bin")) /usr/local/bin
            mount -t fuse.schedfs schedfs \(byType) -o hz=250
            grep -q ' \(byType) .* fuse.schedfs ' /proc/self/mountinfo && echo "mounted by type"
            cat \(byType)/sched \(byType)/timer/hz
            fusermount3 -u \(byType)
            mount -a -T \(fstab)
            grep -q ' \(byFstab) .* fuse.schedfs ' /proc/self/mountinfo && echo "mounted by fstab"
            cat \(byFstab)/sched \(byFstab)/timer/hz
            fusermount3 -u \(byFstab)
            grep -c " \(scratch.path)/[^ ]* .* fuse.schedfs " /proc/self/mountinfo || true
            """
        let result = try runCommand("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script], timeout: .seconds(60))
        #expect(result.status == 0 && result.stderr.isEmpty, "\(result)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 7, "\(result.stdout)")
        guard lines.count == 7 else { return }
        #expect(lines[0] == "mounted by type" && parseSched(lines[1] + "\n") != nil && lines[2] == "250", "\(lines)")
        #expect(lines[3] == "mounted by fstab" && parseSched(lines[4] + "\n") != nil && lines[5] == "250", "\(lines)")
        #expect(lines[6] == "0", "a schedfs mount was left in the namespace")
        #expect(eventually(timeout: .seconds(3)) { livePIDs(mentioning: scratch.path).isEmpty }, "a daemon outlived its unmount")
    }

    /// The fstab line the README shows: the line that starts `schedfs /mnt/sched fuse.schedfs`.
    static func readmeFstabLine() throws -> String {
        let readme = readWhole(packageRoot + "/README.md") ?? ""
        let line = readme.split(separator: "\n").first { $0.hasPrefix("schedfs /mnt/sched fuse.schedfs ") }
        return try #require(line.map(String.init), "README.md shows no fstab line for /mnt/sched")
    }

    /// The `[Mount]` section of a unit, one setting a line, without comments.
    static func mountSection(_ unit: String) -> [Substring] {
        unit.split(separator: "\n").drop { $0 != "[Mount]" }.dropFirst()
            .prefix { !$0.hasPrefix("[") }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }
}
}

/// Writes `text` to a new file at `path`; whether it did.
func writeFile(_ path: String, _ text: String) -> Bool {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    let bytes = Array(text.utf8)
    return write(descriptor, bytes, bytes.count) == bytes.count
}
