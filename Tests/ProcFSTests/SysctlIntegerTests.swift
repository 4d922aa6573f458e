@testable import ProcFSCore
import Glibc
import Testing
import SystemPackage

/// `proc_dointvec`'s parse, case by case. The mount test `ProcReference.Knobs` writes the same
/// kinds of text to a real `/proc/sys` integer beside the mount's knob.
@Suite struct SysctlIntegerTests {
    struct Taken: Sendable, CustomTestStringConvertible {
        let written: String
        let value: Int32
        let consumed: Int
        var testDescription: String { written.debugDescription }
    }

    static let taken: [Taken] = [
        Taken(written: "50", value: 50, consumed: 2),
        Taken(written: "50\n", value: 50, consumed: 3),
        Taken(written: "  \t50  \n", value: 50, consumed: 8),
        Taken(written: "\r\u{0B}\u{0C}50", value: 50, consumed: 5),
        Taken(written: "0x32", value: 50, consumed: 4),
        Taken(written: "0X1f", value: 31, consumed: 4),
        Taken(written: "062", value: 50, consumed: 3),
        Taken(written: "0", value: 0, consumed: 1),
        Taken(written: "-7\n", value: -7, consumed: 3),
        Taken(written: "-0x10", value: -16, consumed: 5),
        Taken(written: "2147483647", value: Int32.max, consumed: 10),
        Taken(written: "-2147483648", value: Int32.min, consumed: 11),
        Taken(written: "1 2", value: 1, consumed: 2),
        Taken(written: "5 junk\n", value: 5, consumed: 2),
        Taken(written: "00000000000000000007", value: 7, consumed: 20),
    ]

    @Test(arguments: taken)
    func takesWhatProcDointvecTakes(_ case: Taken) throws {
        let parsed = try SysctlInteger.parse(Array(`case`.written.utf8))
        #expect(parsed.value == `case`.value)
        #expect(parsed.consumed == `case`.consumed)
    }

    @Test(arguments: [
        "", "\n", "   ", "+50", "50x", "5.0", "08", "0x", "0xg", "-", "- 5", "--5", "abc", "x50",
        "2147483648", "-2147483649", "99999999999999999999999", "000000000000000000007",
        "50\u{0B}",
    ])
    func refusesWhatProcDointvecRefuses(_ written: String) {
        #expect(throws: Errno.invalidArgument) { try SysctlInteger.parse(Array(written.utf8)) }
    }

    /// The kernel's `isspace` also counts Latin-1's no-break space, 0xA0, which UTF-8 never
    /// writes alone; the number itself must still end at a space, a tab or a newline.
    @Test func theByteA0IsWhiteSpaceAroundTheNumber() throws {
        let leading = try SysctlInteger.parse([0xA0, UInt8(ascii: "5")])
        #expect(leading.value == 5 && leading.consumed == 2)
        let trailing = try SysctlInteger.parse([UInt8(ascii: "5"), UInt8(ascii: " "), 0xA0])
        #expect(trailing.value == 5 && trailing.consumed == 3)
        #expect(throws: Errno.invalidArgument) { try SysctlInteger.parse([UInt8(ascii: "5"), 0xA0]) }
    }

    /// The kernel looks at the first `PAGE_SIZE - 1` bytes only, and reports the rest consumed.
    @Test func looksAtNoMoreThanAPage() throws {
        let spaces = [UInt8](repeating: UInt8(ascii: " "), count: 5000)
        let padded = try SysctlInteger.parse(Array("7".utf8) + spaces)
        #expect(padded.value == 7)
        #expect(padded.consumed == 5001)
        let late = [UInt8](repeating: UInt8(ascii: " "), count: SysctlInteger.longestWrite) + Array("7".utf8)
        #expect(throws: Errno.invalidArgument) { try SysctlInteger.parse(late) }
    }
}
