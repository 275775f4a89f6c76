//! `tcp {port}`: a connect to 127.0.0.1:port succeeds.

pub async fn check(port: u16) -> Result<(), String> {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map(drop)
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))
}
