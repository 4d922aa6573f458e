import Glibc
import SystemPackage

/// Parses what is written to an integer knob exactly as `/proc/sys` parses it for one `int`
/// (`proc_dointvec` in the kernel's `kernel/sysctl.c`), so that a knob of the tree takes and
/// refuses the same writes, with the same byte counts.
///
/// - White space (space, tab, newline, vertical tab, form feed, carriage return, and the byte
///   0xA0) before the number is skipped, and so is white space after it.
/// - The base is detected as by `strtoul(…, 0)`: `0x10` is 16, `010` is 8, `10` is 10. A `-`
///   sign is taken; a `+` sign is not.
/// - The number must end at white space (space, tab or newline) or at the end of the write;
///   `12abc` and `08` are refused. Numbers of 21 characters or more are refused.
/// - A value outside the range of a C `int` is refused.
/// - Only the first number is taken: the write is reported as consumed up to the white space
///   after it, so `1 2` stores 1 and consumes 2 bytes.
///
/// Every refusal is `EINVAL`.
enum SysctlInteger {
    /// The longest write the kernel looks at: `PAGE_SIZE - 1`.
    static let longestWrite = 4095
    /// `TMPBUFLEN - 1` in `proc_get_long`: a number this long is refused.
    private static let numberBuffer = 21

    /// The value written in `bytes`, and how many of the bytes the write consumed.
    static func parse(_ bytes: some Collection<UInt8>) throws(Errno) -> (value: Int32, consumed: Int) {
        let written = Array(bytes)
        var position = 0
        var left = min(written.count, longestWrite)
        skipSpaces(written, &position, &left)
        guard left > 0 else { throw .invalidArgument }

        // proc_get_long: the number is parsed from a copy of at most 21 bytes.
        let window = Array(written[position..<position + min(left, numberBuffer)])
        var index = 0
        let negative = window[0] == UInt8(ascii: "-") && left > 1
        if negative { index += 1 }
        guard index < window.count, isDigit(window[index]) else { throw .invalidArgument }
        let magnitude = try parseUnsigned(window, &index)
        guard index < numberBuffer else { throw .invalidArgument }
        if index < left, ![UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n")].contains(written[position + index]) {
            throw .invalidArgument
        }
        position += index
        left -= index

        // do_proc_dointvec_conv: the value must fit an int.
        let value: Int32
        if negative {
            guard magnitude <= UInt64(Int32.max) + 1 else { throw .invalidArgument }
            value = Int32(truncatingIfNeeded: 0 &- Int64(magnitude))
        } else {
            guard magnitude <= UInt64(Int32.max) else { throw .invalidArgument }
            value = Int32(magnitude)
        }
        skipSpaces(written, &position, &left)
        return (value, written.count - left)
    }

    /// `strtoul_lenient(p, &p, 0, …)`: the digits at `index` in the base their prefix says.
    private static func parseUnsigned(_ bytes: [UInt8], _ index: inout Int) throws(Errno) -> UInt64 {
        func byte(_ at: Int) -> UInt8 { at < bytes.count ? bytes[at] : 0 }
        var base: UInt64 = 10
        if byte(index) == UInt8(ascii: "0") {
            if byte(index + 1) | 0x20 == UInt8(ascii: "x"), isxdigit(Int32(byte(index + 2))) != 0 {
                base = 16
                index += 2
            } else {
                base = 8
            }
        }
        var result: UInt64 = 0
        while let digit = digitValue(byte(index)), digit < base {
            let (shifted, overflowed) = result.multipliedReportingOverflow(by: base)
            let (sum, carried) = shifted.addingReportingOverflow(digit)
            guard !overflowed, !carried else { throw .invalidArgument }
            result = sum
            index += 1
        }
        return result
    }

    private static func digitValue(_ byte: UInt8) -> UInt64? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt64(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt64(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    /// `proc_skip_spaces`: the kernel's `isspace`, whose table (`lib/ctype.c`) also counts
    /// Latin-1's no-break space, 0xA0.
    private static func skipSpaces(_ bytes: [UInt8], _ position: inout Int, _ left: inout Int) {
        while left > 0, [0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0xa0].contains(bytes[position]) {
            position += 1
            left -= 1
        }
    }
}
