import Glibc
import Testing

/// The real /proc is the reference: each test runs one probe on a kernel file and on the mount,
/// in the same test, and expects the same result, in both read modes.
extension MountTests {
    @Suite struct ProcReference {
        /// A `/proc/sys` integer (`proc_dointvec`, no range) whose value the test saves first
        /// and restores however the test ends.
        static let sysctl = "/proc/sys/kernel/printk_ratelimit_burst"

        /// One way of writing to a knob: the bytes, the open flags beside `O_WRONLY`, and
        /// whether each write goes at an offset (`pwrite`) and how many times it is made.
        struct KnobWrite: Sendable, CustomTestStringConvertible {
            var text: String
            var flags: Int32 = O_TRUNC
            var offset: off_t? = nil
            var times = 1
            var testDescription: String {
                "\(text.debugDescription)\(flags & O_APPEND != 0 ? " appended" : "")"
                    + "\(offset.map { " at \($0)" } ?? "")\(times > 1 ? " \(times) times" : "")"
            }
        }

        static let knobWrites: [KnobWrite] = [
            KnobWrite(text: "50\n"),
            KnobWrite(text: "50"),
            KnobWrite(text: "  50  \n"),
            KnobWrite(text: "\t50\n"),
            KnobWrite(text: "0x32\n"),
            KnobWrite(text: "062\n"),
            KnobWrite(text: "+50\n"),
            KnobWrite(text: "50x\n"),
            KnobWrite(text: "08\n"),
            KnobWrite(text: "1.5\n"),
            KnobWrite(text: "\n"),
            KnobWrite(text: "99999999999\n"),
            KnobWrite(text: "5 0\n"),
            KnobWrite(text: "50\n", flags: O_APPEND),
            KnobWrite(text: "60\n", flags: O_APPEND, times: 2),
            KnobWrite(text: "50\n", times: 2),
            KnobWrite(text: "50", flags: 0, offset: 2),
        ]

        /// What a write did: each call's result (bytes written, or minus the errno), and the
        /// value read back afterwards.
        struct Outcome: Equatable, CustomStringConvertible {
            var results: [Int]
            var after: String
            var description: String { "\(results) then \(after.debugDescription)" }
        }

        static func outcome(of write: KnobWrite, to path: String) throws -> Outcome {
            let descriptor = open(path, O_WRONLY | write.flags)
            guard descriptor >= 0 else { throw SystemError(errno: errno) }
            var results: [Int] = []
            for _ in 0..<write.times {
                let result = write.text.withCString { bytes in
                    if let offset = write.offset { pwrite(descriptor, bytes, strlen(bytes), offset) }
                    else { Glibc.write(descriptor, bytes, strlen(bytes)) }
                }
                results.append(result < 0 ? -Int(errno) : result)
            }
            close(descriptor)
            return Outcome(results: results, after: try readText(path))
        }

        /// Writes as `/proc/sys` takes them: white space, hex and octal, `>>`, a second write
        /// on one descriptor, a write past offset 0, a partial take, and every refusal.
        @Test(arguments: MountTests.readModes, knobWrites)
        func aKnobTakesWritesAsAProcSysInteger(mode: [String], write: KnobWrite) throws {
            let saved = try readText(Self.sysctl)
            defer { _ = try? writeText(Self.sysctl, saved) }
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            try writeText(Self.sysctl, "100\n")
            #expect(try readText(mount.path("timer/hz")) == "100\n")

            let reference = try Self.outcome(of: write, to: Self.sysctl)
            let knob = try Self.outcome(of: write, to: mount.path("timer/hz"))
            #expect(knob == reference, "\(Self.sysctl) gave \(reference); timer/hz gave \(knob)")
        }

        /// The shell's own `echo N >> file`, beside the same on `/proc/sys`.
        @Test(arguments: MountTests.readModes)
        func echoAppendingWorksAsOnProcSys(mode: [String]) throws {
            let saved = try readText(Self.sysctl)
            defer { _ = try? writeText(Self.sysctl, saved) }
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            for path in [Self.sysctl, mount.path("timer/hz")] {
                let shell = try runCommand("/bin/sh", ["-c", "echo 50 >> \(path)"])
                #expect(shell.status == 0, "echo 50 >> \(path): \(shell.stderr)")
                #expect(try readText(path) == "50\n", "\(path)")
            }
        }
    }
}
