// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "schedfs",
    products: [
        .executable(name: "schedfs", targets: ["schedfs"]),
        .executable(name: "counterfs", targets: ["CounterFS"]),
        .executable(name: "statusfs", targets: ["StatusService"]),
        .executable(name: "procfs-scale", targets: ["ProcFSScale"]),
        .library(name: "ProcFS", targets: ["ProcFS"]),
        .library(name: "ProcFSCore", targets: ["ProcFSCore"]),
        .library(name: "ProcFSMetrics", targets: ["ProcFSMetrics"]),
        .library(name: "TaskQueue", targets: ["TaskQueue"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // `make docs`: the libraries' documentation, built with no warnings in `make test`.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // C: libfuse3's low-level API, and the Linux headers Glibc does not import (timerfd).
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CLinux"),

        // Kernel-style synchronisation: wait queues and joinable threads.
        .target(name: "KernelSync", dependencies: [
            "CLinux", .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The kernel's timer model: tasks, task queues, the tick source.
        .target(name: "TaskQueue", dependencies: ["KernelSync", "CLinux"]),
        // The /proc-like tree: entries, knobs, removal with rundown. No FUSE here.
        .target(name: "ProcFSCore", dependencies: [
            "KernelSync", .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The libfuse server that serves a tree; it re-exports ProcFSCore.
        .target(name: "ProcFS", dependencies: [
            "ProcFSCore", "CFuse3", "CLinux", "KernelSync",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        // The seed's kernel module: init and the cleanup protocol.
        .target(name: "Sched", dependencies: [
            "TaskQueue", "ProcFS", "ProcFSMetrics", "KernelSync",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The command: options, mount point checks, daemonizing, signals, logging.
        .executableTarget(name: "schedfs", dependencies: [
            "Sched", "ProcFS", "ProcFSMetrics", "TaskQueue", "KernelSync",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),

        // The embedding example: a tree of its own in under 50 lines.
        .executableTarget(name: "CounterFS", dependencies: [
            "ProcFS", .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], path: "Examples/CounterFS"),

        // A server on ServiceGroup that serves its own live state through ProcFSService.
        .executableTarget(name: "StatusService", dependencies: [
            "ProcFS", .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], path: "Examples/StatusService"),

        // make bench's tree of 100,000 files.
        .executableTarget(name: "ProcFSScale", dependencies: [
            "ProcFS", "KernelSync", .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], path: "Benchmarks/Scale"),

        // A swift-metrics backend that shows metrics as files of a tree, Prometheus's text too.
        .target(name: "ProcFSMetrics", dependencies: [
            "ProcFSCore", .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),

        .testTarget(name: "KernelSyncTests", dependencies: ["KernelSync"]),
        .testTarget(name: "ProcFSMetricsTests", dependencies: [
            "ProcFSMetrics", "ProcFSCore", .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        .testTarget(name: "TaskQueueTests", dependencies: ["TaskQueue", "KernelSync"]),
        .testTarget(name: "ProcFSTests", dependencies: [
            "ProcFS", "ProcFSCore", .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "SchedTests", dependencies: [
            "Sched", "TaskQueue", "ProcFS", .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // What the mount tests ask of Linux that Glibc does not import (file handles).
        .target(name: "CTestSupport", path: "Tests/CTestSupport"),
        // Drives the built `schedfs` and `counterfs` binaries against real mounts, and mounts
        // ProcFS trees of its own in-process.
        .testTarget(name: "MountTests", dependencies: [
            "schedfs", "CounterFS", "StatusService", "CLinux", "CTestSupport", "KernelSync", "ProcFS", "ProcFSMetrics",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
