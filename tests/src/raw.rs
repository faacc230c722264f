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
