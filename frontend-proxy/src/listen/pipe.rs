//! Pipe (Unix domain socket) listeners: binding the socket file as Envoy
//! does, and removing it when the listener closes.

use crate::config::model::Pipe;
use socket2::{Domain, Socket, Type};
use std::sync::Arc;

/// Binds a pipe listener's socket as Envoy does: whatever is at the path
/// (a socket a previous run left) is removed first, and the file gets
/// `mode` once bound. An abstract name has no file.
pub(super) fn bind_pipe(pipe: &Pipe) -> std::io::Result<(Socket, Option<Arc<PipeFile>>)> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    if pipe.is_abstract() {
        socket.bind(&pipe.sockaddr()?)?;
        return Ok((socket, None));
    }
    // Failing that, bind says why.
    let _ = std::fs::remove_file(&pipe.path);
    socket.bind(&pipe.sockaddr()?)?;
    let file = PipeFile::new(&pipe.path)?;
    if pipe.mode != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pipe.path, std::fs::Permissions::from_mode(pipe.mode))?;
    }
    Ok((socket, Some(Arc::new(file))))
}

/// The socket file of a pipe listener: removed when the last accept loop
/// lets go of it (the listener closed), unless another process has put a
/// file of its own at the path since.
#[derive(Debug)]
pub(super) struct PipeFile {
    path: std::path::PathBuf,
    /// Device and inode of the file bind(2) made.
    id: (u64, u64),
}

impl PipeFile {
    fn new(path: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self { path: path.into(), id: (meta.dev(), meta.ino()) })
    }
}

impl Drop for PipeFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
