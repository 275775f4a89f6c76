//! Where the control socket lives and how it is created.
//!
//! `--runtime-dir DIR` gives `DIR/flowctl.sock`; otherwise `/run/flowctl/` for root and
//! `$XDG_RUNTIME_DIR/flowctl/` for anyone else. The socket is 0660, owned by the supervisor's
//! user and the `flowctl` group when that group exists, never world-writable: whoever can
//! write to it can stop pipelines.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

pub const SOCKET_NAME: &str = "flowctl.sock";
pub const GROUP: &str = "flowctl";

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("no runtime directory: XDG_RUNTIME_DIR is not set; pass --runtime-dir DIR")]
    NoRuntimeDir,
    #[error("another supervisor is already listening on {0}")]
    InUse(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The runtime directory: the one given, or the default for this user.
pub fn runtime_dir(given: Option<&Path>) -> Result<PathBuf, SocketError> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/run/flowctl"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join("flowctl")),
        _ => Err(SocketError::NoRuntimeDir),
    }
}

/// The socket path for a runtime directory.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

/// Creates the runtime directory and binds the socket with its permissions. A stale socket
/// (nobody listening) is replaced; a live one is an error.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err(path))?;
    }
    // The socket is created with the umask's mode: make that owner-only for the instant
    // between bind and chmod, so it is never reachable by others.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io_err(path))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name(GROUP) {
        std::os::unix::fs::chown(path, None, Some(group.gid.as_raw())).map_err(io_err(path))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err(path))?;
    Ok(listener)
}
