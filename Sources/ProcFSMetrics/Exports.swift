// `import ProcFSMetrics` gives swift-metrics's API too (`MetricsSystem`, `Counter`, …), which a
// program bootstraps with this backend.
@_exported import CoreMetrics
