//! Serves the control socket: one JSON request per line, one JSON response per line.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Request, Response};
use crate::supervisor::SupervisorHandle;

/// Longest request line accepted; requests are tiny, so anything bigger is a mistake.
const MAX_REQUEST: usize = 64 * 1024;

/// Where `reload` requests go: the daemon re-reads its configuration and answers on the
/// enclosed channel. The supervisor alone cannot reload: it does not know the files.
pub type ReloadRequests = mpsc::Sender<oneshot::Sender<Response>>;

/// Answers connections until the listener fails or the task is dropped.
pub async fn serve(listener: UnixListener, handle: SupervisorHandle) {
    serve_with_reload(listener, handle, None).await
}

/// [`serve`], with `reload` requests passed to `reload`.
pub async fn serve_with_reload(
    listener: UnixListener,
    handle: SupervisorHandle,
    reload: Option<ReloadRequests>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handle = handle.clone();
                let reload = reload.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, handle, reload).await {
                        tracing::debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    stream: UnixStream,
    handle: SupervisorHandle,
    reload: Option<ReloadRequests>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut lines)
            .take(MAX_REQUEST as u64)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n >= MAX_REQUEST {
            // The rest of an oversized line must never run as a request of its own: skip it
            // up to its newline and refuse the request whole.
            skip_line(&mut lines).await?;
            let response = Response::error(format!(
                "request too large: over {MAX_REQUEST} bytes without a newline"
            ));
            let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
            out.push(b'\n');
            write.write_all(&out).await?;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(line.trim()) {
            Ok(Request::Reload) => match &reload {
                Some(daemon) => {
                    let (reply, answer) = oneshot::channel();
                    match daemon.send(reply).await {
                        Ok(()) => answer
                            .await
                            .unwrap_or_else(|_| Response::error("the daemon is stopping")),
                        Err(_) => Response::error("the daemon is stopping"),
                    }
                }
                None => handle.request(Request::Reload).await,
            },
            Ok(request) => handle.request(request).await,
            Err(e) => Response::error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
}

/// Discards input up to and including the next newline (or the end), in bounded memory.
async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(input: &mut R) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = buf.len();
                input.consume(len);
            }
        }
    }
}
