//! Client settings for the components' long server streams (ledgers, events).

use tonic::transport::Endpoint;

/// Bytes a stream may have in flight before the receiver grants more. HTTP/2's default,
/// 64 KiB, is less than one busy ledger: the sender then stops after every ledger or few
/// hundred events until the receiver's process is scheduled to send a window update, and a
/// pipeline on shared cores ends up waiting instead of working.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// The connection's window, across its streams.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// `endpoint` with the windows above and no Nagle delay.
pub fn streaming(endpoint: Endpoint) -> Endpoint {
    endpoint
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
}
