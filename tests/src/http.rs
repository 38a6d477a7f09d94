//! A minimal HTTP/1.1 client over a fresh TCP connection per request, so tests see the exact
//! bytes a server sent (and every request gets its own server goroutine).
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// A response as received: its status and the raw bytes.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub raw: Vec<u8>,
}

impl Response {
    /// The raw response without its `Date` header, the one part that differs per request.
    pub fn without_date(&self) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.raw);
        text.split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes()
    }

    pub fn body(&self) -> &[u8] {
        let at = self
            .raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.raw.len(), |p| p + 4);
        &self.raw[at..]
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Response> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .context("response timed out")??;
    let head = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    if !head.starts_with("HTTP/1.1 ") {
        bail!("not an HTTP/1.1 response: {head:?}");
    }
    Ok(Response { status, raw })
}
