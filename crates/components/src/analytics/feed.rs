//! The live WebSocket feed: every event as one JSON text message (the JSON lines' shape) to
//! every client of `ws://WEBSOCKET_PORT/ws`. A client that falls behind is disconnected with
//! a close frame saying why, and counted; the pipeline never waits for a client.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::broadcast;

use super::metrics::AnalyticsMetrics;
use crate::shutdown::Shutdown;

/// Messages a client may be behind before it is dropped.
pub const CLIENT_QUEUE: usize = 4096;

/// Longest a client may take to accept one message.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Arc<str>>,
    metrics: Arc<AnalyticsMetrics>,
}

impl Feed {
    /// Serves the feed on `addr` until `shutdown`; returns the address bound.
    pub async fn serve(
        addr: SocketAddr,
        metrics: Arc<AnalyticsMetrics>,
        shutdown: Shutdown,
    ) -> std::io::Result<(Feed, SocketAddr)> {
        let (tx, _) = broadcast::channel(CLIENT_QUEUE);
        let feed = Feed { tx, metrics };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/ws", get(upgrade))
            .with_state(feed.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.requested().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "WebSocket server stopped");
            }
        });
        Ok((feed, bound))
    }

    /// Sends one event's JSON to every client; never waits.
    pub fn send(&self, json: &str) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::from(json));
        }
    }

    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Largest message a client may send: the feed reads clients' messages only to see them go,
/// so none needs more than a close frame.
const MAX_CLIENT_MESSAGE: usize = 1024;

async fn upgrade(ws: WebSocketUpgrade, State(feed): State<Feed>) -> impl IntoResponse {
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| client(socket, feed))
}

async fn client(mut socket: WebSocket, feed: Feed) {
    let mut rx = feed.tx.subscribe();
    let m = feed.metrics.clone();
    m.websocket_connections.fetch_add(1, Ordering::Relaxed);
    let why = loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(text) => {
                    let sent = tokio::time::timeout(
                        SEND_TIMEOUT,
                        socket.send(Message::Text(text.as_ref().into())),
                    )
                    .await;
                    match sent {
                        Ok(Ok(())) => {
                            m.websocket_messages_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(_)) => break None,
                        Err(_) => break Some("too slow: a message waited 5 s".to_string()),
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    break Some(format!("too slow: {n} events behind"));
                }
                Err(broadcast::error::RecvError::Closed) => break None,
            },
            // A client's own messages are not read for anything but its going away.
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some(reason) = why {
        m.websocket_clients_dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%reason, "dropping a WebSocket client");
        let close = Message::Close(Some(CloseFrame {
            // 1008: policy violation, the closest code for "you fell behind".
            code: 1008,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(Duration::from_millis(200), socket.send(close)).await;
    }
    m.websocket_connections.fetch_sub(1, Ordering::Relaxed);
}
