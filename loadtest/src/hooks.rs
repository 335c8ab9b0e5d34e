//! A webhook receiver inside the loader, for `pay --webhook`: it counts the deliveries
//! the server posts and answers each 200 at once, on kept-alive HTTP/1.1 connections.
//! It reads only what it needs (the header block and `content-length`); it is a bench
//! peer, not an HTTP server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub(crate) struct Received {
    pub count: AtomicU64,
    pub last: Mutex<Option<Instant>>,
}

/// Listens on 127.0.0.1; answers the port and the counts.
pub(crate) async fn start() -> Result<(u16, Arc<Received>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let got = Arc::new(Received::default());
    let counts = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, counts.clone()));
        }
    });
    Ok((port, got))
}

async fn serve(mut stream: TcpStream, got: Arc<Received>) {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // One whole request (headers and body) at the front of `buf`?
        while let Some(end) = request_end(&buf) {
            buf.drain(..end);
            got.count.fetch_add(1, Ordering::Relaxed);
            *got.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            if stream.write_all(OK).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Where the first request in `buf` ends, once all of it is there.
fn request_end(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head]).ok()?;
    let length = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head + length).then_some(head + length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_after_its_body() {
        let one = b"POST /h HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(request_end(one), Some(one.len()));
        assert_eq!(request_end(&one[..one.len() - 1]), None);
        let two = [&one[..], &one[..]].concat();
        assert_eq!(request_end(&two), Some(one.len()));
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
    }
}
