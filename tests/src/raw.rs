//! Raw connections for the hostile-client tests and the abuse benchmark: TCP and HTTP/2 from a
//! chosen loopback address (another peer, as far as the registry's per-peer limits go), and gRPC
//! requests a tonic client will not send (a length prefix that lies, a body sent slowly).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

/// A TCP connection to `addr` from the loopback address `from`.
pub async fn tcp_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// An HTTP/2 connection to `addr` from `from`, its connection task spawned.
pub async fn h2_from(
    from: IpAddr,
    addr: SocketAddr,
) -> Result<h2::client::SendRequest<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    let (client, connection) = h2::client::handshake(tcp_from(from, addr).await?).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The headers of a gRPC call to `path`.
pub fn grpc_request(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request")
}

/// gRPC framing of one message: uncompressed, its length, its bytes.
pub fn framed(message: &[u8]) -> Bytes {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    Bytes::from(body)
}

/// The start of a message that announces `len` bytes and brings one of them.
pub fn announcing(len: u32) -> Bytes {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.push(0x0a);
    Bytes::from(prefix)
}

/// `GET path` over a plain HTTP/1.1 connection (blocking; the metrics listener answers at
/// once): the body, after checking the status is 200.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("connects");
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// An HTTP/1.1 answer.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The head, header names lowercased.
    pub head: String,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request over a fresh connection (blocking): `POST` with `content_type` when a
/// body is given, `GET` otherwise.
pub fn http(addr: SocketAddr, path: &str, body: Option<(&str, &[u8])>) -> HttpReply {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("connects");
    let mut request = match body {
        Some((content_type, body)) => format!(
            "POST {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\nContent-Type: \
             {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        None => format!("GET {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    };
    if let Some((_, body)) = body {
        request.extend_from_slice(body);
    }
    tcp.write_all(&request).expect("sends");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).expect("reads");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let head: String = head
        .lines()
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}:{v}\n", n.to_lowercase()),
            None => format!("{l}\n"),
        })
        .collect();
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    HttpReply { status, head, body }
}

fn dechunk(mut chunked: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = chunked.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&chunked[..line_end]).expect("ASCII").split(';').next().unwrap(),
            16,
        )
        .expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&chunked[start..start + size]);
        chunked = &chunked[start + size + 2..];
    }
}
