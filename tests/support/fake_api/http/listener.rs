//! The listener of the fake API server: it registers every accepted
//! connection, so that a restart (or dropping the server) can shut them all
//! down at once, like a real apiserver going away.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Open connections, each as a duplicate of its socket so they can all be shut
/// down at once (a restart of the fake drops every connection, like a real
/// apiserver going away).
#[derive(Default)]
pub struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Connections {
    /// Shuts down every open connection in both directions.
    pub fn shutdown_all(&self) {
        for conn in self.open.lock().expect("connections").values() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A `TcpListener` registering every accepted connection in [`Connections`].
pub struct TrackedListener {
    inner: TcpListener,
    conns: Arc<Connections>,
}

impl TrackedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, conns: Arc<Connections>) -> Self {
        TrackedListener { inner, conns }
    }
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let Ok(dup) = stream.as_fd().try_clone_to_owned() else {
                continue;
            };
            let id = self.conns.next.fetch_add(1, Ordering::Relaxed);
            self.conns
                .open
                .lock()
                .expect("connections")
                .insert(id, std::net::TcpStream::from(dup));
            let tracked = TrackedStream {
                inner: stream,
                id,
                conns: self.conns.clone(),
            };
            return (tracked, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; unregisters itself when hyper drops it.
pub struct TrackedStream {
    inner: TcpStream,
    id: u64,
    conns: Arc<Connections>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        if let Ok(mut open) = self.conns.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
