//! The live cross-check's traffic: a ping-pong connection and a streamed response, every
//! socket operation bounded by a timeout.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};

use super::{
    IO_TIMEOUT, PORT, REQUESTS, REQUEST_BYTES, RESPONSE_BYTES, SERVER, STREAM_BYTES, WRITE_CHUNK,
};

/// Lets the calling thread run on every online CPU: the bench pins itself to one CPU for
/// test_run, but live traffic, like a node's, spreads its client, server and reader.
pub(crate) fn unpin() {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in aya::util::online_cpus().unwrap_or_default() {
        // SAFETY: CPU_SET writes one bit inside `all` (online CPUs are below CPU_SETSIZE).
        unsafe { libc::CPU_SET(cpu as usize, &mut all) };
    }
    // SAFETY: `all` is a valid cpu_set_t of the size passed; failure leaves the thread pinned.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&all), &all) };
}

pub(super) fn accept(listener: &TcpListener) -> anyhow::Result<(TcpStream, std::net::SocketAddr)> {
    // A bounded wait: poll the non-blocking listener until the deadline.
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false)?;
                configure(&conn)?;
                return Ok((conn, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ensure!(
                    std::time::Instant::now() < deadline,
                    "no client connected within {IO_TIMEOUT:?}"
                );
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
}

pub(super) fn configure(conn: &TcpStream) -> anyhow::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(())
}

pub(super) fn connect() -> anyhow::Result<TcpStream> {
    let conn = TcpStream::connect_timeout(&SocketAddrV4::new(SERVER, PORT).into(), IO_TIMEOUT)
        .context("connecting to the server")?;
    configure(&conn)?;
    Ok(conn)
}

/// A 1 KiB HTTP/1.1 request, head and body in one write.
pub(super) fn request() -> Vec<u8> {
    let head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n";
    let body_len = REQUEST_BYTES - head.len() - "Content-Length: 0000\r\n\r\n".len();
    let mut req = format!("{head}Content-Length: {body_len:04}\r\n\r\n").into_bytes();
    req.resize(REQUEST_BYTES, b'x');
    req
}

pub(super) fn response_head(body: usize) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n")
}

pub(super) fn ping_pong() -> anyhow::Result<()> {
    let mut conn = connect()?;
    let req = request();
    let mut resp = [0u8; RESPONSE_BYTES];
    for _ in 0..REQUESTS {
        conn.write_all(&req)
            .context("ping-pong: sending a request")?;
        conn.read_exact(&mut resp)
            .context("ping-pong: reading a response")?;
    }
    Ok(())
}

pub(super) fn serve_ping_pong(mut conn: TcpStream) -> anyhow::Result<()> {
    // The body that makes head + body exactly RESPONSE_BYTES (its length's digits count).
    let mut body = RESPONSE_BYTES - response_head(0).len();
    while response_head(body).len() + body > RESPONSE_BYTES {
        body -= 1;
    }
    let mut response = response_head(body).into_bytes();
    response.resize(RESPONSE_BYTES, b'y');
    let mut req = [0u8; REQUEST_BYTES];
    for _ in 0..REQUESTS {
        conn.read_exact(&mut req)
            .context("ping-pong: reading a request")?;
        conn.write_all(&response)
            .context("ping-pong: sending a response")?;
    }
    wait_for_close(conn)
}

pub(super) fn stream() -> anyhow::Result<()> {
    let mut conn = connect()?;
    conn.write_all(&request())
        .context("stream: sending the request")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    let expected = response_head(STREAM_BYTES).len() + STREAM_BYTES;
    while got < expected {
        let n = conn.read(&mut buf).context("stream: reading")?;
        ensure!(
            n > 0,
            "stream: the server closed after {got} of {expected} bytes"
        );
        got += n;
    }
    Ok(())
}

pub(super) fn serve_stream(mut conn: TcpStream) -> anyhow::Result<()> {
    let mut req = [0u8; REQUEST_BYTES];
    conn.read_exact(&mut req)
        .context("stream: reading the request")?;
    conn.write_all(response_head(STREAM_BYTES).as_bytes())?;
    let chunk = vec![b'z'; WRITE_CHUNK];
    let mut sent = 0;
    while sent < STREAM_BYTES {
        let n = WRITE_CHUNK.min(STREAM_BYTES - sent);
        conn.write_all(&chunk[..n]).context("stream: sending")?;
        sent += n;
    }
    wait_for_close(conn)
}

/// Waits for the client's FIN, so the connection's last packets fall in its own snapshot.
pub(super) fn wait_for_close(mut conn: TcpStream) -> anyhow::Result<()> {
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => Ok(()),
        Ok(_) => bail!("unexpected bytes after the last request"),
        Err(e) => Err(e).context("waiting for the client to close"),
    }
}
