/// The Prometheus text exposition format: names, labels and numbers as Prometheus parses them
/// (https://prometheus.io/docs/instrumenting/exposition_formats/).
enum Exposition {
    /// `label` as a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`): every other character
    /// becomes `_`, and a leading digit gets a `_` before it.
    static func metricName(_ label: String) -> String {
        var name = String(label.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "_" || scalar == ":")
                ? Character(scalar) : "_"
        })
        if name.isEmpty || name.first!.isNumber { name = "_" + name }
        return name
    }

    /// `key` as a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    static func labelName(_ key: String) -> String {
        metricName(key).replacingColons()
    }

    /// The labels `{k="v",…}` of `dimensions`, values escaped as the format asks; empty when
    /// there are none.
    static func labels(_ dimensions: [(String, String)]) -> String {
        guard !dimensions.isEmpty else { return "" }
        return "{" + dimensions.map { "\(labelName($0.0))=\"\(escaped($0.1))\"" }.joined(separator: ",") + "}"
    }

    /// `labels` (as ``labels(_:)`` wrote them) with one more label.
    static func labels(_ labels: String, adding key: String, _ value: String) -> String {
        let added = "\(key)=\"\(value)\""
        return labels.isEmpty ? "{\(added)}" : String(labels.dropLast()) + ",\(added)}"
    }

    /// A label value with `\`, `"` and newlines escaped.
    static func escaped(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    /// A `# HELP` text, with `\` and newlines escaped.
    static func help(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// A number as Prometheus writes one: integers without a point, `+Inf`, `-Inf`, `NaN`.
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Inf" : "+Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}

extension String {
    fileprivate func replacingColons() -> String {
        String(map { $0 == ":" ? "_" : $0 })
    }

    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
