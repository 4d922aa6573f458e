import CoreMetrics
import FoundationEssentials
import Glibc
import ProcFS
import ProcFSMetrics
import Testing

/// The mount's figures as a fleet reads them: Prometheus's own parser, node_exporter's textfile
/// collector pointed into the mount, and a Prometheus scraping that node_exporter, each the
/// program from Debian's packages (`make test` installs them), on loopback, stopped by PID.
extension MountTests {
    @Suite struct Fleet {
        static let promtool = "/usr/bin/promtool"

        /// `promtool check metrics` parses and lints `schedfs.prom` as the mount serves it.
        @Test func promtoolAcceptsSchedfsExposition() throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100"])
            defer { mount.cleanUp() }
            #expect(eventually(timeout: .seconds(2)) { (try? mount.count()) ?? 0 > 0 }, "a tick to show")
            let checked = try runCommand(Self.promtool, ["check", "metrics"], stdin: mount.path("metrics/schedfs.prom"))
            #expect(checked.status == 0, "promtool check metrics: \(checked.stdout)\(checked.stderr)")
            #expect(checked.stdout + checked.stderr == "", "no lint remarks")
        }

        /// The same for the library's every kind of metric, with labels that need escaping,
        /// read through a mount of a tree of the test's own.
        @Test func promtoolAcceptsEveryKindTheLibraryWrites() throws {
            let tree = ProcTree()
            let metrics = try ProcFSMetrics(
                tree: tree, expositionFile: "test.prom",
                help: [
                    "requests": "Requests served, by method.", "queue.depth": "Requests waiting.",
                    "payload_bytes": "Sizes of payloads.", "last_size": "The last size seen.",
                    "request_duration": "How long requests took.",
                ])
            metrics.makeCounter(label: "requests", dimensions: [("method", "GET")]).increment(by: 3)
            metrics.makeCounter(label: "requests", dimensions: [("method", "odd \"quoted\"\nand \\ slashed")])
                .increment(by: 1)
            metrics.makeMeter(label: "queue.depth", dimensions: []).set(Int64(4))
            metrics.makeRecorder(label: "payload_bytes", dimensions: [("kind", "text")], aggregate: true).record(Int64(512))
            metrics.makeRecorder(label: "last_size", dimensions: [], aggregate: false).record(Double(2.5))
            metrics.makeTimer(label: "request_duration", dimensions: [("method", "GET")]).recordNanoseconds(3_000_000)
            // And the figures a program keeps itself, read when shown.
            try metrics.addCounter(label: "kept_events", help: "Events the program counted.") { 12 }
            try metrics.addGauge(label: "kept_level", help: "A level the program keeps.") { 0.25 }
            try metrics.addHistogram(label: "kept_wait_seconds", help: "Waits the program measured.", bounds: [0.01, 0.1]) {
                HistogramFigures(counts: [2, 1, 1], sum: 0.75)
            }
            let mount = try LibraryMount(tree, directIO: false)
            defer { mount.cleanUp() }
            let exposition = try readText(mount.path("metrics/test.prom"))
            #expect(exposition.contains(#"requests_total{method="odd \"quoted\"\nand \\ slashed"} 1"#), "\(exposition)")
            #expect(exposition.contains(#"request_duration_seconds_bucket{method="GET",le="0.005"} 1"#), "\(exposition)")
            #expect(exposition.contains("kept_events_total 12\n") && exposition.contains(#"kept_wait_seconds_bucket{le="0.1"} 3"#),
                    "\(exposition)")
            let checked = try runCommand(Self.promtool, ["check", "metrics"], stdin: mount.path("metrics/test.prom"))
            #expect(checked.status == 0, "promtool check metrics: \(checked.stdout)\(checked.stderr)")
            #expect(checked.stdout + checked.stderr == "", "no lint remarks")
        }

        /// node_exporter's textfile collector, its directory in the mount, serves the mount's
        /// counter, and the counter grows from one scrape to the next. node_exporter runs as an
        /// ordinary user, as Debian's service does (user `prometheus`), so the mount needs
        /// `allow_other`, as the README says.
        @Test func nodeExporterServesTheTickCounter() throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100,allow_other"])
            defer { mount.cleanUp() }
            let user = try TemporaryUser()
            defer { user.remove() }
            chmod(mount.root.path, 0o755)  // mkdtemp made it 0700: the user could not reach the mount
            let exporter = try LoopbackServer.nodeExporter(textfiles: mount.path("metrics"), as: user)
            defer { exporter.stop() }
            #expect(exporter.listeningAddresses() == ["127.0.0.1"], "on loopback only")

            let scrape = try exporter.get("/metrics")
            let first = try #require(Self.value(of: "schedfs_timer_ticks_total", in: scrape), "in:\n\(scrape)")
            #expect(Self.value(of: "node_textfile_scrape_error", in: scrape) == 0, "node_exporter read the file")
            let exposition = try readText(mount.path("metrics/schedfs.prom"))
            for line in exposition.split(separator: "\n") where line.hasPrefix("# TYPE ") {
                #expect(scrape.contains(line), "\(line) in the scrape")
            }
            #expect(eventually(timeout: .seconds(5), every: .milliseconds(100)) {
                let later = (try? exporter.get("/metrics")).flatMap { Self.value(of: "schedfs_timer_ticks_total", in: $0) }
                return (later ?? 0) > first
            }, "schedfs_timer_ticks_total grows past \(first) from one scrape to the next")
        }

        /// Prometheus, scraping that node_exporter every second, sees the counter rise at the
        /// mount's rate: `rate(schedfs_timer_ticks_total[10s])` is within 5 % of `hz`. Ten
        /// seconds, not five: Prometheus stamps a sample when its scrape begins, and on a busy
        /// machine (the unit suites run beside this one) node_exporter may read the file a few
        /// hundred milliseconds later, which over a 4 s span moved the rate by 8 %.
        @Test func prometheusSeesTheTickRate() throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100"])
            defer { mount.cleanUp() }
            let exporter = try LoopbackServer.nodeExporter(textfiles: mount.path("metrics"))
            defer { exporter.stop() }
            let prometheus = try LoopbackServer.prometheus(scraping: exporter)
            defer { prometheus.stop() }
            #expect(prometheus.listeningAddresses() == ["127.0.0.1"], "on loopback only")

            // Scrapes start a few seconds after Prometheus is ready (its discovery's first
            // update), and the rate needs the 10 s window filled: 10 samples, a second apart.
            let filled = eventually(timeout: .seconds(40), every: .milliseconds(250)) {
                ((try? prometheus.query("count_over_time(schedfs_timer_ticks_total[10s])"))?.first ?? 0) >= 10
            }
            try #require(filled, "Prometheus did not get 10 scrapes of schedfs_timer_ticks_total within 40 s")
            let rates = try prometheus.query("rate(schedfs_timer_ticks_total[10s])")
            let hz = try #require(Double(try readOnce(mount.path("timer/hz")).dropLast()))
            #expect(rates.count == 1, "one series: \(rates)")
            let rate = try #require(rates.first)
            let samples = (try? prometheus.get("/api/v1/query", query: ["query=schedfs_timer_ticks_total[10s]"])) ?? "?"
            #expect(abs(rate - hz) <= 0.05 * hz, "rate(schedfs_timer_ticks_total[10s]) = \(rate) against hz = \(hz); samples: \(samples)")
        }

        /// The value of the unlabelled sample `name` in a scrape.
        static func value(of name: String, in scrape: String) -> Double? {
            scrape.split(separator: "\n").first { $0.hasPrefix(name + " ") }
                .flatMap { Double($0.dropFirst(name.count + 1)) }
        }
    }
}

/// A server from Debian's packages started by a test on a free port of 127.0.0.1, with a
/// scratch directory of its own for its log and data; ``stop()`` (call it in a `defer`) ends it
/// by its PID and removes the directory.
final class LoopbackServer: Sendable {
    let name: String
    let port: UInt16
    let scratch: TemporaryDirectory
    private let process: ChildProcess

    /// Starts `path` with the arguments `arguments` makes of a free loopback address and the
    /// scratch directory, and waits at most `timeout` until it answers `GET readyPath`. A port
    /// taken by someone else in between is given up for another, at most twice.
    init(
        _ name: String, _ path: String, readyPath: String, timeout: Duration = .seconds(20),
        arguments: (_ address: String, _ scratch: String) -> [String]
    ) throws {
        self.name = name
        scratch = try TemporaryDirectory()
        let log = scratch.path + "/\(name).log"
        var started: (port: UInt16, process: ChildProcess)?
        for _ in 1...3 where started == nil {
            let port = try Self.freeLoopbackPort()
            let process = try ChildProcess(path, arguments("127.0.0.1:\(port)", scratch.path), stdout: log, stderr: log)
            let answered = { (try? runCommand("/usr/bin/curl", ["-sSf", "--max-time", "2", "http://127.0.0.1:\(port)\(readyPath)"]))?.status == 0 }
            if eventually(timeout: timeout, every: .milliseconds(50), { answered() || process.wait(timeout: .zero) != nil }),
                process.wait(timeout: .zero) == nil
            {
                started = (port, process)
            } else if process.wait(timeout: .zero) == nil {
                Self.end(process, name: name)
                break
            }
        }
        guard let started else {
            Issue.record("\(name) did not start on 127.0.0.1; its log:\n\(readWhole(log) ?? "")")
            scratch.remove()
            throw SystemError(errno: ECONNREFUSED)
        }
        (port, process) = started
    }

    /// node_exporter with only its textfile collector, reading `*.prom` in `textfiles`; as
    /// `user` when given (through setpriv, which becomes node_exporter: the PID is its own).
    static func nodeExporter(textfiles: String, as user: TemporaryUser? = nil) throws -> LoopbackServer {
        let program = "/usr/bin/prometheus-node-exporter"
        return try LoopbackServer("node_exporter", user == nil ? program : "/usr/bin/setpriv", readyPath: "/metrics") {
            address, _ in
            (user.map { $0.setprivArguments + [program] } ?? []) + [
                "--web.listen-address=\(address)", "--collector.disable-defaults", "--collector.textfile",
                "--collector.textfile.directory=\(textfiles)",
            ]
        }
    }

    /// Prometheus scraping `target` every second, its data in its scratch directory.
    static func prometheus(scraping target: LoopbackServer) throws -> LoopbackServer {
        try LoopbackServer("prometheus", "/usr/bin/prometheus", readyPath: "/-/ready") { address, scratch in
            let configuration = """
                global:
                  scrape_interval: 1s
                  evaluation_interval: 1s
                scrape_configs:
                  - job_name: schedfs
                    static_configs:
                      - targets: ['127.0.0.1:\(target.port)']

                """
            let file = scratch + "/prometheus.yml"
            let descriptor = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            _ = configuration.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count - 1) }
            close(descriptor)
            return ["--config.file=\(file)", "--storage.tsdb.path=\(scratch)/data", "--web.listen-address=\(address)"]
        }
    }

    /// The body of `GET path`; throws when the server does not answer 200 within 5 s.
    func get(_ path: String, query: [String] = []) throws -> String {
        let encoded = query.flatMap { ["--data-urlencode", $0] }
        let answer = try runCommand(
            "/usr/bin/curl", ["-sSf", "--max-time", "5", "-G", "http://127.0.0.1:\(port)\(path)"] + encoded)
        guard answer.status == 0 else {
            Issue.record("GET \(path) from \(name): \(answer.stderr)")
            throw SystemError(errno: EIO)
        }
        return answer.stdout
    }

    /// The values of a PromQL instant query, one per series, through Prometheus's HTTP API.
    func query(_ expression: String) throws -> [Double] {
        let body = try get("/api/v1/query", query: ["query=\(expression)"])
        let answer = try JSONDecoder().decode(QueryAnswer.self, from: Data(body.utf8))
        return answer.data.result.compactMap { Double($0.value.text) }
    }

    /// The addresses the server listens on at its port, from /proc/net/tcp and tcp6.
    func listeningAddresses() -> [String] {
        let listening = ["tcp", "tcp6"].flatMap { table in
            (readWhole("/proc/net/\(table)") ?? "").split(separator: "\n").dropFirst().compactMap { line -> String? in
                let fields = line.split(separator: " ")
                guard fields.count > 3, fields[3] == "0A" else { return nil }  // TCP_LISTEN
                let local = fields[1].split(separator: ":")
                guard local.count == 2, UInt16(local[1], radix: 16) == port else { return nil }
                return String(local[0])
            }
        }
        return listening.map(Self.address)
    }

    /// Ends the server by its PID (SIGTERM, then SIGKILL if it lingers) and removes its scratch
    /// directory.
    func stop() {
        Self.end(process, name: name)
        scratch.remove()
    }

    private static func end(_ process: ChildProcess, name: String) {
        process.send(SIGTERM)
        if process.wait(timeout: .seconds(10)) == nil {
            Issue.record("\(name) (pid \(process.pid)) did not stop on SIGTERM within 10 s; killing it")
            process.send(SIGKILL)
            _ = process.wait(timeout: .seconds(5))
        }
    }

    /// A free TCP port of 127.0.0.1, as the kernel picks one for a bind to port 0.
    private static func freeLoopbackPort() throws -> UInt16 {
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard probe >= 0 else { throw SystemError(errno: errno) }
        defer { close(probe) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(probe, $0, length) == 0 && getsockname(probe, $0, &length) == 0
            }
        }
        guard bound else { throw SystemError(errno: errno) }
        return UInt16(bigEndian: address.sin_port)
    }

    /// An address of /proc/net/tcp (IPv4: 8 hex digits of a little-endian word) as text; an
    /// IPv6 one stays in hex.
    private static func address(_ hex: String) -> String {
        guard hex.count == 8, let word = UInt32(hex, radix: 16) else { return hex }
        return (0..<4).map { String(word >> (8 * $0) & 0xff) }.joined(separator: ".")
    }

    /// What `/api/v1/query` answers: `{"data": {"result": [{"value": [time, "text"]}, ...]}}`.
    private struct QueryAnswer: Decodable {
        let data: Payload

        struct Payload: Decodable { let result: [Series] }
        struct Series: Decodable { let value: Sample }
        struct Sample: Decodable {
            let text: String

            init(from decoder: any Decoder) throws {
                var pair = try decoder.unkeyedContainer()
                _ = try pair.decode(Double.self)
                text = try pair.decode(String.self)
            }
        }
    }
}
