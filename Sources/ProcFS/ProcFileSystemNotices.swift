/// What the kernel and the pollers must be told of each change in the tree: decided here,
/// without a mount, and sent by the ``TreeNotifier``.
extension ProcFileSystem {
    /// What the kernel must be told when `entry` announces a change: it must ask for the
    /// file's attributes again, unless it holds nothing of the file or what it holds is stale
    /// already. In page-cache mode that drops the stale pages at the next read. In direct_io
    /// mode the next `stat` gets the new size; a change that keeps the text's length
    /// (`keepingLength`) leaves the kernel's attributes true, and is not told.
    func noticesOfChange(to entry: ProcEntry, keepingLength: Bool = false) -> [KernelNotice] {
        let inode = entry.inode
        let stale = readMode == .pageCache
            ? nodes.copy(of: inode)?.invalidate()
            : keepingLength ? false : nodes.keptAttributes(of: inode)?.invalidate()
        return stale == true ? [.attributes(inode)] : []
    }

    /// What the kernel must be told when `entry` is added, if it holds the parent: ask again for
    /// the parent's attributes (its link count, its modification time) and drop the listing it
    /// may have cached.
    func noticesOfAddition(of entry: ProcEntry) -> [KernelNotice] {
        guard let parent = nodes.entry(entry.parentInode), !parent.isDynamicDirectory else { return [] }
        return [.attributesAndContents(entry.parentInode)]
    }

    /// What the kernel must be told when `entry` is removed: forget its name, refresh the parent
    /// as for an addition, and ask for the attributes of the entry before using it again (a
    /// file then fails with `EIO`; a directory, which lists nothing now, drops its listing too).
    func noticesOfRemoval(of entry: ProcEntry) -> [KernelNotice] {
        var notices = noticesOfAddition(of: entry)
        if !inDynamicDirectory(entry) { notices.insert(.name(parent: entry.parentInode, name: entry.name), at: 0) }
        // Held by the kernel: a node this server's lookups counted, or one adopted from the
        // server before, whose count here is 0.
        if nodes.entry(entry.inode) != nil {
            notices.append(entry.kind == .directory ? .attributesAndContents(entry.inode) : .attributes(entry.inode))
        }
        return notices
    }

    /// Whether `entry` is in a dynamic directory, whose names and attributes the kernel does not
    /// keep, and which is changed while the kernel looks in it: it holds the directory locked
    /// for the lookup, and dropping a name there would wait on that lock for ever.
    private func inDynamicDirectory(_ entry: ProcEntry) -> Bool {
        nodes.entry(entry.parentInode)?.isDynamicDirectory ?? false
    }

    /// Wakes the pollers of `entry` after a change or its removal.
    func notifyPollers(of entry: ProcEntry) {
        for handle in pollers.wake(entry) { handle.notify() }
    }
}
