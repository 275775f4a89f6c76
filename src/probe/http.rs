//! `http {port, path}`: a GET on 127.0.0.1:port/path answers 2xx.
//!
//! One short connection per check: a native GET costs tens of microseconds of CPU, far less
//! than running curl, and a fresh connection finds a restarted server without reconnect logic.

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

pub async fn check(port: u16, path: &str) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let request = Request::get(if path.is_empty() { "/" } else { path })
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let (response, _) = tokio::join!(sender.send_request(request), conn);
    let response = response.map_err(|e| format!("GET {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("GET {url}: {}", response.status()))
    }
}
