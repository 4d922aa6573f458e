// `import ProcFS` gives the tree (ProcFSCore, with swift-system) and the server, with what its
// API names from other packages: swift-log's `Logger`, and swift-service-lifecycle's
// `Service` and `ServiceGroup`. An embedder names the one product.
@_exported import Logging
@_exported import ProcFSCore
@_exported import ServiceLifecycle
