//! Finding the program a component names.
//!
//! A bare name (`ttp-processor`) is looked up next to the running flowctl binary, then in
//! `/usr/lib/flowctl`, then on `PATH`, so bundled components run from a source build and from
//! the package alike. A path with a slash is taken as written, relative to the component's
//! working directory.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where bundled components are installed by the package.
pub const LIB_DIR: &str = "/usr/lib/flowctl";

/// Why a program cannot be run.
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{command}`: {source}{hint}")]
pub struct CommandError {
    pub command: String,
    #[source]
    pub source: io::Error,
    hint: String,
}

/// Where bare names are searched, in order.
pub fn search_dirs(exe_dir: Option<&Path>, path_var: Option<&str>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = exe_dir {
        dirs.push(dir.to_path_buf());
    }
    dirs.push(PathBuf::from(LIB_DIR));
    if let Some(path) = path_var {
        dirs.extend(path.split(':').filter(|d| !d.is_empty()).map(PathBuf::from));
    }
    dirs
}

/// Resolves `command` to an executable file, or says why it cannot be run (with the OS
/// error, e.g. "No such file or directory (os error 2)").
pub fn resolve(
    command: &str,
    working_dir: Option<&Path>,
    dirs: &[PathBuf],
) -> Result<PathBuf, CommandError> {
    if command.is_empty() {
        return Err(CommandError {
            command: command.to_string(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
            hint: String::new(),
        });
    }
    if command.contains('/') {
        let path = Path::new(command);
        let path = match (path.is_absolute(), working_dir) {
            (true, _) => path.to_path_buf(),
            (false, Some(dir)) => dir.join(path),
            (false, None) => std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf()),
        };
        return check_executable(&path)
            .map(|()| path)
            .map_err(|source| CommandError {
                command: command.to_string(),
                source,
                hint: String::new(),
            });
    }
    let mut first_error: Option<io::Error> = None;
    for dir in dirs {
        let candidate = dir.join(command);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(CommandError {
        command: command.to_string(),
        source: first_error.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOENT)),
        hint: format!(" (searched {})", searched.join(":")),
    })
}

/// A regular file the supervisor may execute (`access(X_OK)` gives the OS's own answer).
fn check_executable(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn bare_names_search_in_order_and_missing_names_say_enoent() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let prog = b.path().join("tool");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(resolve("tool", None, &dirs).unwrap(), prog);
        let err = resolve("absent-tool", None, &dirs).unwrap_err();
        assert_eq!(err.source.raw_os_error(), Some(libc::ENOENT));
        assert!(err.to_string().contains("os error 2"), "{err}");
    }

    #[test]
    fn not_executable_is_eacces() {
        let d = tempfile::tempdir().unwrap();
        let prog = d.path().join("data");
        std::fs::write(&prog, "x").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o644)).unwrap();
        // root may execute nothing without an x bit either; access(2) says EACCES.
        let err = resolve(prog.to_str().unwrap(), None, &[]).unwrap_err();
        assert_eq!(err.source.raw_os_error(), Some(libc::EACCES), "{err}");
    }

    #[test]
    fn search_order_is_exe_dir_lib_dir_path() {
        let dirs = search_dirs(Some(Path::new("/opt/bin")), Some("/usr/bin::/bin"));
        let want: Vec<PathBuf> = ["/opt/bin", LIB_DIR, "/usr/bin", "/bin"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, want);
    }
}
