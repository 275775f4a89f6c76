//! Talks to a supervisor's control socket (blocking: the CLI sends one request and exits).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source} (is flowctl-sup running? pass --socket PATH)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} answered something that is not a flowctl response: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Sends one request and returns the response.
pub fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    // A reload reads and resolves every pipeline file before it answers.
    let wait = match request {
        Request::Reload => Duration::from_secs(120),
        _ => Duration::from_secs(10),
    };
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| io(std::io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ClientError::Decode {
        path: socket.to_path_buf(),
        source,
    })
}

/// Sends `request` to `socket` (or the default socket) and returns what to print: the status
/// as a table or JSON, or nothing for a successful command. A refusal is an error.
pub fn run(socket: Option<&Path>, request: &Request, json: bool) -> anyhow::Result<String> {
    let path = match socket {
        Some(path) => path.to_path_buf(),
        None => super::socket::socket_path(&super::socket::runtime_dir(None)?),
    };
    let response = self::request(&path, request)?;
    if let Some(report) = &response.reload {
        if json {
            println!("{}", serde_json::to_string_pretty(report)?);
            if response.ok {
                return Ok(String::new());
            }
        } else if !response.ok {
            // What was applied, before the error says what was not.
            print!("{}", report.diff);
        }
    }
    if !response.ok {
        anyhow::bail!(
            "{}",
            response
                .error
                .unwrap_or_else(|| "the supervisor refused without a reason".into())
        );
    }
    Ok(match (response.status, response.reload, json) {
        (Some(status), _, true) => format!("{}\n", serde_json::to_string_pretty(&status)?),
        (Some(status), _, false) => super::render::table(&status),
        (None, Some(report), _) => report.to_string(),
        (None, None, _) => String::new(),
    })
}
