// `import ProcFSCore` gives swift-system too, whose `FilePermissions` and `Errno` its API names.
@_exported import SystemPackage
