// `import ProcFS` gives the tree (ProcFSCore) with the server that serves it.
@_exported import ProcFSCore
