//! `secrets: [{name, host_path, env}]`: passwords stay in files only their owner can read, out
//! of pipeline files; the supervisor reads them when it resolves the pipeline.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The file's content with one trailing newline removed (what `echo pw > file` adds).
/// Refuses a file that others can read or write: its secret is not secret.
pub fn read(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("secret file {shown} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o006 != 0 {
        let what = if mode & 0o004 != 0 {
            "readable"
        } else {
            "writable"
        };
        return Err(format!(
            "secret file {shown} is {what} by everyone (mode {mode:04o}): run `chmod o-rw {shown}`"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("secret file {shown} is not UTF-8 text"))?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    if text.contains('\0') {
        return Err(format!(
            "secret file {shown} contains a NUL byte, which no environment variable can hold"
        ));
    }
    Ok(text)
}
