import CFuse3
import Glibc

/// libfuse's table of low-level callbacks, each handing its request to the
/// ``FuseRequestHandler`` passed to `fuse_session_new` as user data.
///
/// These are C function pointers, so they capture nothing and live in this library rather than
/// in `main.swift`, whose top-level code would make them main-actor isolated.
enum FuseOperations {
    static var table: fuse_lowlevel_ops {
        var operations = fuse_lowlevel_ops()
        operations.lookup = { request, parent, name in
            requestHandler(request).lookup(request!, parent: parent, name: String(cString: name!))
        }
        operations.forget = { request, node, lookups in
            requestHandler(request).forget(request!, node: node, lookups: lookups)
        }
        operations.getattr = { request, node, info in
            requestHandler(request).getattr(request!, node: node, handle: info?.pointee.fh)
        }
        operations.setattr = { request, node, _, changes, _ in
            requestHandler(request).setattr(request!, node: node, changes: changes)
        }
        operations.readlink = { request, node in
            requestHandler(request).readlink(request!, node: node)
        }
        operations.open = { request, node, info in
            requestHandler(request).open(request!, node: node, info: info!)
        }
        operations.`init` = { userdata, connection in
            Unmanaged<FuseRequestHandler>.fromOpaque(userdata!).takeUnretainedValue().initialize(connection!)
        }
        operations.read = { request, node, size, offset, info in
            requestHandler(request).read(request!, node: node, size: size, offset: offset, info: info!)
        }
        operations.release = { request, _, info in
            requestHandler(request).release(request!, info: info!)
        }
        operations.opendir = { request, node, info in
            requestHandler(request).opendir(request!, node: node, info: info!)
        }
        operations.readdir = { request, _, size, offset, info in
            requestHandler(request).readdir(request!, size: size, offset: offset, info: info!)
        }
        operations.releasedir = { request, _, info in
            requestHandler(request).releasedir(request!, info: info!)
        }
        operations.poll = { request, node, info, handle in
            requestHandler(request).poll(request!, node: node, fileHandle: info!.pointee.fh, handle: handle.map(PollHandle.init))
        }
        operations.listxattr = { request, _, size in
            requestHandler(request).listxattr(request!, size: size)
        }
        operations.write = { request, node, buffer, size, offset, info in
            requestHandler(request).write(
                request!, node: node, bytes: UnsafeRawBufferPointer(start: buffer, count: size), offset: offset,
                flags: info!.pointee.flags)
        }
        operations.getxattr = { request, _, _, _ in refuse(request, ENOTSUP) }
        operations.setxattr = { request, _, _, _, _, _ in refuse(request, EACCES) }
        operations.removexattr = { request, _, _ in refuse(request, EACCES) }
        operations.unlink = { request, _, _ in refuse(request, EACCES) }
        operations.rmdir = { request, _, _ in refuse(request, EACCES) }
        operations.create = { request, _, _, _, _ in refuse(request, ENOENT) }
        operations.mknod = { request, _, _, _, _ in refuse(request, ENOENT) }
        operations.mkdir = { request, _, _, _ in refuse(request, ENOENT) }
        operations.symlink = { request, _, _, _ in refuse(request, ENOENT) }
        operations.link = { request, _, _, _ in refuse(request, ENOENT) }
        operations.rename = { request, _, _, _, _, _ in refuse(request, ENOENT) }
        return operations
    }

}

private func requestHandler(_ request: fuse_req_t?) -> FuseRequestHandler {
    Unmanaged<FuseRequestHandler>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
}

private func refuse(_ request: fuse_req_t?, _ error: Int32) {
    requestHandler(request).reply(request!, error: error)
}
