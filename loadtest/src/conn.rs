//! The timed loops' HTTP client: one keep-alive HTTP/1.1 connection per till (or per
//! `/healthz` client) on hyper's own connection API, with every header that does not
//! change built once. reqwest, kept for the set-up, turns its URL back into a URI (with
//! IDNA checks) on every request and goes through its pool and connector each time; on a
//! machine the loader shares with the server, that work is taken from the server: it cost
//! the loader about twice the CPU a payment (docs/BENCHMARKS.md, fifty-fourth to
//! fifty-sixth runs).

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One client's connection to the server, opened on first use and again after a failure.
pub(crate) struct Conn {
    /// `host:port`.
    authority: String,
    host: HeaderValue,
    /// `Bearer …`, when the client signs in.
    auth: Option<HeaderValue>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A client of the server at `base` (`http://host:port`), signing in with `token`.
    pub(crate) fn new(base: &str, token: Option<&str>) -> Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .context("the timed loops speak plain HTTP (a base URL of http://host:port)")?
            .trim_end_matches('/')
            .to_string();
        Ok(Conn {
            host: HeaderValue::from_str(&authority)?,
            auth: token
                .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
                .transpose()?,
            authority,
            sender: None,
        })
    }

    /// A `GET` of `path`.
    pub(crate) async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        let req = self
            .request(Method::GET, path)
            .body(Full::new(Bytes::new()))?;
        self.send(req).await
    }

    /// A `GET` of `path` with these extra headers (an app's signature).
    pub(crate) async fn get_with(
        &mut self,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = self.request(Method::GET, path);
        for (name, value) in headers {
            req = req.header(*name, value.clone());
        }
        self.send(req.body(Full::new(Bytes::new()))?).await
    }

    /// A `POST` of the JSON `body` to `path`, with an `Idempotency-Key` when `key` is
    /// given.
    pub(crate) async fn post_json(
        &mut self,
        path: &str,
        body: Vec<u8>,
        key: Option<&str>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        self.send(req).await
    }

    /// A `POST` of the JSON `body` to `path` for someone else: `bearer` is their token (a
    /// phone's), whatever this client signed in with; with an `Idempotency-Key` when `key`
    /// is given.
    pub(crate) async fn post_json_as(
        &mut self,
        path: &str,
        body: Vec<u8>,
        bearer: &HeaderValue,
        key: Option<&str>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(AUTHORIZATION, bearer.clone());
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        self.send(req.body(Full::new(Bytes::from(body)))?).await
    }

    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        req
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
        let alive = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        let sender = match self.sender.take() {
            Some(s) if alive => s,
            _ => self.open().await?,
        };
        let sender = self.sender.insert(sender);
        let answer = async {
            let res = sender.send_request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        if answer.is_err() {
            // The next request opens a new connection, as a till would after a failure.
            self.sender = None;
        }
        Ok(answer?)
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when its sender is dropped or the server closes it;
            // the request that meets the closed connection reports the failure.
            let _ = conn.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers each connection's first request with `200 ok` and closes it,
    /// sending what it read to `heads`.
    async fn closing_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, heads) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(String::from_utf8_lossy(&got).to_lowercase());
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        (base, heads)
    }

    #[tokio::test]
    async fn a_closed_connection_is_opened_again_for_the_next_request() {
        let (base, mut heads) = closing_server().await;
        let mut conn = Conn::new(&base, None).unwrap();
        for _ in 0..3 {
            let (status, body) = conn.get("/healthz").await.unwrap();
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
        }
        let mut seen = 0;
        while let Ok(head) = heads.try_recv() {
            assert!(head.starts_with("get /healthz http/1.1\r\n"), "{head}");
            seen += 1;
        }
        assert_eq!(seen, 3, "each request came on a connection of its own");
    }

    #[tokio::test]
    async fn a_post_carries_the_host_token_key_and_json_type() {
        let (base, mut heads) = closing_server().await;
        let mut conn = Conn::new(&base, Some("till-token")).unwrap();
        let (status, _) = conn
            .post_json("/api/v1/payments", br#"{"amount":1}"#.to_vec(), Some("k-1"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let head = heads.recv().await.unwrap();
        let authority = base.trim_start_matches("http://");
        for line in [
            "post /api/v1/payments http/1.1".to_string(),
            format!("host: {authority}"),
            "authorization: bearer till-token".to_string(),
            "idempotency-key: k-1".to_string(),
            "content-type: application/json".to_string(),
            "content-length: 12".to_string(),
        ] {
            assert!(
                head.contains(&format!("{line}\r\n")),
                "{line} missing in {head}"
            );
        }
    }

    #[test]
    fn only_plain_http_bases_are_taken() {
        assert!(Conn::new("https://example.org", None).is_err());
        assert!(Conn::new("http://127.0.0.1:8080/", None).is_ok());
    }
}
