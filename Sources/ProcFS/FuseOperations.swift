import CFuse3
import Glibc
import Logging
import Synchronization
import SystemPackage

/// libfuse's table of low-level callbacks: each turns its request's C arguments into a call
/// of the ``ProcFileSystem`` passed to `fuse_session_new` (as a ``FuseReplies``), and sends
/// what that returns with `fuse_reply_*`. This is the one file that replies (with
/// ``InterruptibleRequest``, which answers an interrupted caller). The operations that may run
/// a callback of the tree's (`LOOKUP`, `GETATTR`, `OPEN`, `READ`) let an interrupt answer first.
///
/// These are C function pointers, so they capture nothing and live in this library rather than
/// in `main.swift`, whose top-level code would make them main-actor isolated.
enum FuseOperations {
    static var table: fuse_lowlevel_ops {
        var operations = fuse_lowlevel_ops()
        operations.`init` = { userdata, connection in
            let capable = connection!.pointee.capable
            let wantsAutoInvalidation = replies(userdata).fileSystem.initialize(
                kernelOffersNoOpen: capable & UInt32(FUSE_CAP_NO_OPEN_SUPPORT) != 0,
                kernelOffersAutoInvalidation: capable & UInt32(FUSE_CAP_AUTO_INVAL_DATA) != 0)
            if wantsAutoInvalidation { connection!.pointee.want |= UInt32(FUSE_CAP_AUTO_INVAL_DATA) }
        }
        operations.lookup = { request, parent, name in
            let replies = replies(request)
            // The size of a file that announces its changes is its text's: a callback.
            guard let interruptible = InterruptibleRequest(request) else { return }
            do throws(Errno) {
                let found = try replies.fileSystem.lookup(parent: parent, name: String(cString: name!))
                guard interruptible.claim() else {
                    // Answered EINTR: the kernel holds no lookup of it.
                    replies.fileSystem.lookupNotDelivered(found)
                    return
                }
                var parameters = fuse_entry_param()
                parameters.ino = found.attributes.inode
                parameters.entry_timeout = found.entryTimeout
                parameters.attr = stat(found.attributes)
                parameters.attr_timeout = found.attributes.timeout
                let replied = fuse_reply_entry(request, &parameters)
                if replied != 0 { replies.fileSystem.lookupNotDelivered(found) }
                replies.checked(replied, "lookup")
            } catch {
                if interruptible.claim() { replies.send(request, error) }
            }
        }
        operations.forget = { request, node, lookups in
            replies(request).fileSystem.forget(node: node, lookups: lookups)
            fuse_reply_none(request)
        }
        operations.getattr = { request, node, info in
            let replies = replies(request)
            guard let interruptible = InterruptibleRequest(request) else { return }
            do throws(Errno) {
                let attributes = try replies.fileSystem.attributes(node: node, handle: info?.pointee.fh)
                if interruptible.claim() { replies.send(request, attributes, "getattr") }
            } catch {
                if interruptible.claim() { replies.send(request, error) }
            }
        }
        operations.setattr = { request, node, _, changes, _ in
            let replies = replies(request)
            do throws(Errno) {
                let truncates = changes & FUSE_SET_ATTR_SIZE != 0
                replies.send(request, try replies.fileSystem.setAttributes(node: node, truncates: truncates), "setattr")
            } catch {
                replies.send(request, error)
            }
        }
        operations.readlink = { request, node in
            let replies = replies(request)
            do throws(Errno) {
                replies.checked(fuse_reply_readlink(request, try replies.fileSystem.readlink(node: node)), "readlink")
            } catch {
                replies.send(request, error)
            }
        }
        operations.open = { request, node, info in
            let replies = replies(request)
            let who = caller(request)
            guard let interruptible = InterruptibleRequest(request) else { return }
            do throws(Errno) {
                let opened = try replies.fileSystem.open(node: node, flags: info!.pointee.flags, caller: who)
                guard interruptible.claim() else {
                    // Answered EINTR: no release will come for this handle.
                    replies.fileSystem.release(handle: opened.handle)?.release()
                    return
                }
                info!.pointee.fh = opened.handle
                info!.pointee.direct_io = opened.directIO ? 1 : 0
                // An interrupted open: no release will come for this handle.
                if fuse_reply_open(request, info) != 0 { replies.fileSystem.release(handle: opened.handle)?.release() }
            } catch {
                if interruptible.claim() { replies.send(request, error) }
            }
        }
        operations.read = { request, node, size, offset, info in
            let replies = replies(request)
            guard let interruptible = InterruptibleRequest(request) else { return }
            do throws(Errno) {
                switch try replies.fileSystem.read(node: node, handle: info!.pointee.fh, offset: Int(offset), size: size) {
                case .bytes(let bytes):
                    if interruptible.claim() { replies.sendBytes(request, bytes) }
                case .awaiting(let bytes):
                    // Still interruptible while the task awaits the text.
                    replies.later(interruptible) { request in
                        let text: Result<ArraySlice<UInt8>, Errno>
                        do throws(Errno) {
                            text = .success(try await bytes())
                        } catch {
                            text = .failure(error)
                        }
                        guard request.claim() else { return }
                        switch text {
                        case .success(let bytes): replies.sendBytes(request.request, bytes)
                        case .failure(let error): replies.send(request.request, error)
                        }
                    }
                }
            } catch {
                if interruptible.claim() { replies.send(request, error) }
            }
        }
        operations.write = { request, node, buffer, size, offset, info in
            let replies = replies(request)
            let written = replies.fileSystem.write(
                node: node, bytes: Array(UnsafeRawBufferPointer(start: buffer, count: size)), offset: Int(offset),
                flags: info!.pointee.flags)
            // Announced already, before the reply: the writer may read back at once.
            switch written {
            case .success(let count): replies.checked(fuse_reply_write(request, count), "write")
            case .failure(let error): replies.send(request, error)
            }
        }
        operations.poll = { request, node, info, handle in
            let replies = replies(request)
            let polled = replies.fileSystem.poll(node: node, fileHandle: info!.pointee.fh, handle: handle.map(PollHandle.init))
            polled.release.forEach { $0.release() }
            switch polled.result {
            case .success(let events): replies.checked(fuse_reply_poll(request, UInt32(events)), "poll")
            case .failure(let error): replies.send(request, error)
            }
            polled.notify.forEach { $0.notify() }
        }
        operations.release = { request, _, info in
            let replies = replies(request)
            replies.fileSystem.release(handle: info!.pointee.fh)?.release()
            replies.send(request, nil)
        }
        operations.opendir = { request, node, info in
            let replies = replies(request)
            do throws(Errno) {
                let opened = try replies.fileSystem.openDirectory(node: node)
                info!.pointee.fh = opened.handle
                info!.pointee.cache_readdir = opened.cachesListing ? 1 : 0
                info!.pointee.keep_cache = opened.cachesListing ? 1 : 0
                if fuse_reply_open(request, info) != 0 { replies.fileSystem.releaseDirectory(handle: opened.handle) }
            } catch {
                replies.send(request, error)
            }
        }
        operations.readdir = { request, node, size, offset, info in
            let replies = replies(request)
            do throws(Errno) {
                let items = try replies.fileSystem.readDirectory(node: node, handle: info!.pointee.fh, offset: Int(offset))
                replies.sendListing(request, items, size: size)
            } catch {
                replies.send(request, error)
            }
        }
        operations.releasedir = { request, _, info in
            let replies = replies(request)
            replies.fileSystem.releaseDirectory(handle: info!.pointee.fh)
            replies.send(request, nil)
        }
        // No extended attributes: an empty list, whose size is 0.
        operations.listxattr = { request, _, size in
            let replies = replies(request)
            replies.checked(size == 0 ? fuse_reply_xattr(request, 0) : fuse_reply_buf(request, nil, 0), "listxattr")
        }
        operations.getxattr = { request, _, _, _ in refuse(request, .getxattr) }
        operations.setxattr = { request, _, _, _, _, _ in refuse(request, .setxattr) }
        operations.removexattr = { request, _, _ in refuse(request, .removexattr) }
        operations.unlink = { request, _, _ in refuse(request, .unlink) }
        operations.rmdir = { request, _, _ in refuse(request, .rmdir) }
        operations.create = { request, _, _, _, _ in refuse(request, .create) }
        operations.mknod = { request, _, _, _, _ in refuse(request, .mknod) }
        operations.mkdir = { request, _, _, _ in refuse(request, .mkdir) }
        operations.symlink = { request, _, _, _ in refuse(request, .symlink) }
        operations.link = { request, _, _, _ in refuse(request, .link) }
        operations.rename = { request, _, _, _, _, _ in refuse(request, .rename) }
        return operations
    }
}

/// What the callbacks reach through libfuse's user data: the file system, and the sending of
/// replies.
final class FuseReplies: Sendable {
    let fileSystem: ProcFileSystem
    private let logger: Logger
    private let failureLogged = Atomic<Bool>(false)

    init(fileSystem: ProcFileSystem, logger: Logger) {
        self.fileSystem = fileSystem
        self.logger = logger
    }

    /// Replies with `error`, or success when it is `nil`.
    func send(_ request: fuse_req_t?, _ error: Errno?) {
        checked(fuse_reply_err(request, error?.rawValue ?? 0), "reply")
    }

    /// Replies with attributes.
    func send(_ request: fuse_req_t?, _ attributes: ProcFileSystem.Attributes, _ operation: String) {
        var converted = stat(attributes)
        checked(fuse_reply_attr(request, &converted, attributes.timeout), operation)
    }

    /// Replies with `bytes`, the data of a `READ`.
    func sendBytes(_ request: fuse_req_t?, _ bytes: ArraySlice<UInt8>) {
        let replied = bytes.withUnsafeBufferPointer { buffer in
            fuse_reply_buf(request, UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: CChar.self), buffer.count)
        }
        checked(replied, "read")
    }

    /// The replies that tasks will send later: the session must outlive them.
    let awaitedReplies = RundownGate()

    /// Answers `request` from a task that runs `answer`, which must claim it and, if it may,
    /// reply to it once: the request thread goes back to serving meanwhile. Once the server
    /// stops (the gate is closed), the request is answered `EINTR` at once.
    func later(_ request: InterruptibleRequest, _ answer: @escaping @Sendable (InterruptibleRequest) async -> Void) {
        guard awaitedReplies.enter() else {
            if request.claim() { send(request.request, .interrupted) }
            return
        }
        Task(executorPreference: AwaitingExecutor.shared) { [awaitedReplies] in
            await answer(request)
            awaitedReplies.leave()
        }
    }

    /// Replies with as many of `items` as fit in `size` bytes.
    func sendListing(_ request: fuse_req_t?, _ items: ArraySlice<ProcFileSystem.DirectoryItem>, size: Int) {
        var buffer = [CChar](repeating: 0, count: size)
        var used = 0
        for item in items {
            var attributes = stat()
            attributes.st_ino = UInt(item.inode)
            attributes.st_mode = item.type
            let needed = buffer.withUnsafeMutableBufferPointer { bytes in
                fuse_add_direntry(request, bytes.baseAddress! + used, size - used, item.name, &attributes, off_t(item.nextOffset))
            }
            if needed > size - used { break }
            used += needed
        }
        checked(fuse_reply_buf(request, buffer, used), "readdir")
    }

    /// Logs a reply that could not be sent: the caller gave up (interrupted) or the mount is
    /// going away. Neither is the daemon's fault, and neither may stop it. The first is logged
    /// at notice level, the rest at debug level, so a storm of them cannot flood the log.
    func checked(_ result: Int32, _ operation: String) {
        guard result != 0 else { return }
        let message = "\(operation): reply not delivered: \(Errno(rawValue: -result))"
        if failureLogged.exchange(true, ordering: .relaxed) {
            logger.debug("\(message)")
        } else {
            logger.notice("\(message); further undelivered replies are logged at debug level")
        }
    }
}

extension stat {
    /// The `stat` that libfuse sends for `attributes`.
    fileprivate init(_ attributes: ProcFileSystem.Attributes) {
        self.init()
        st_ino = UInt(attributes.inode)
        st_mode = attributes.mode
        st_nlink = UInt(attributes.linkCount)
        st_uid = attributes.owner.uid
        st_gid = attributes.owner.gid
        st_size = off_t(attributes.size)
        st_blksize = 4096
        st_atim = attributes.created
        st_mtim = attributes.modified
        st_ctim = attributes.modified
    }
}

private func replies(_ request: fuse_req_t?) -> FuseReplies {
    replies(fuse_req_userdata(request))
}

private func replies(_ userdata: UnsafeMutableRawPointer?) -> FuseReplies {
    Unmanaged<FuseReplies>.fromOpaque(userdata!).takeUnretainedValue()
}

/// Who sent `request`, as the kernel names them.
private func caller(_ request: fuse_req_t?) -> ProcCaller {
    let context = fuse_req_ctx(request)!.pointee
    return ProcCaller(uid: context.uid, gid: context.gid, pid: context.pid)
}

private func refuse(_ request: fuse_req_t?, _ operation: ProcFileSystem.RefusedOperation) {
    replies(request).send(request, ProcFileSystem.refusal(of: operation))
}
