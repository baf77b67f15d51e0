//! Bounds on what scrapers can hold: a hung or slow client, or many at once, must not grow the
//! agent's memory without bound nor keep other scrapes from being answered.
//!
//! Each connection runs as its own task, so a client that stops reading or writing blocks only
//! itself. What needs bounding is how many such connections exist and how long they live: at
//! most [`MAX_CONNECTIONS`] are served at once (more wait in the kernel's listen backlog), and a
//! connection with no progress for [`IDLE_TIMEOUT`] in either direction is closed (a client that
//! never finishes its request, or never reads its answer). A connection's memory is hyper's
//! buffers plus at most one /metrics body, so the whole endpoint's memory is bounded.

use std::{pin::Pin, sync::Arc, time::Duration};

use axum::serve::Listener;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_io_timeout::TimeoutStream;

/// Connections served at once. A scrape takes milliseconds, so a handful of Prometheus servers
/// and people with curl never come near it; past it, new connections wait (at most
/// [`IDLE_TIMEOUT`]) for a hung one to be closed. Each costs a few KiB idle and at most one
/// /metrics body (~100 KiB) when its reader stalls: the endpoint stays under ~30 MiB.
pub const MAX_CONNECTIONS: usize = 256;

/// A connection that moves no byte either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener whose connections are bounded in number and in idle time.
pub struct Bounded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

pub fn bounded(inner: TcpListener) -> Bounded {
    Bounded {
        inner,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    }
}

/// A connection with its slot: the slot is freed when hyper drops the connection.
pub struct Conn {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _slot: OwnedSemaphorePermit,
}

impl Listener for Bounded {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        // The semaphore is never closed, so acquiring only waits.
        let slot = loop {
            if let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await {
                break slot;
            }
        };
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        let mut io = TimeoutStream::new(stream);
        io.set_read_timeout(Some(IDLE_TIMEOUT));
        io.set_write_timeout(Some(IDLE_TIMEOUT));
        (
            Conn {
                io: Box::pin(io),
                _slot: slot,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}
