//! Outbound HTTP/1.1 from a shard: the client the node uses to call the Arweave services it is
//! configured with (a bundler, a gateway). hyper's client over glommio sockets, on the caller's
//! task queue: keep-alive connections held by the caller (`Option<Sender>` slots), a timeout on
//! every request, bounded answers. Plain HTTP only: an HTTPS service is reached through a local
//! TLS proxy. DNS names are resolved by the blocking resolver when a connection opens.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::http::GlommioIo;

/// Longest one request (connect, send, answer) may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A service URL split for the client: where to connect, the `Host` header, the path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` (port 80 when the URL names none).
    pub authority: String,
    pub host: String,
    /// The URL's path without a trailing slash (empty for the root).
    pub base_path: String,
}

impl Endpoint {
    /// Splits an `http://host[:port][/path]` URL (already checked by the configuration).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let authority = if host
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Endpoint {
            authority,
            host: host.to_owned(),
            base_path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// One keep-alive connection's request handle.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Spawns `future` in the task queue of the caller (the uploader's low-share queue), where
/// `glommio::spawn_local` would use the default one.
pub fn spawn_here<T: 'static>(future: impl std::future::Future<Output = T> + 'static) -> glommio::Task<T> {
    glommio::spawn_local_into(future, glommio::executor().current_task_queue()).expect("the current task queue exists")
}

async fn connect(endpoint: &Endpoint) -> Result<Sender, String> {
    // Name resolution blocks: it runs on glommio's blocking thread, not on the shard's.
    let authority = endpoint.authority.clone();
    let addresses = glommio::executor()
        .spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&authority).map(Vec::from_iter))
        .await
        .map_err(|e| format!("resolve {}: {e}", endpoint.authority))?;
    let address = addresses
        .first()
        .ok_or_else(|| format!("resolve {}: no address", endpoint.authority))?;
    let stream = glommio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {}: {e}", endpoint.authority))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(GlommioIo(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", endpoint.authority))?;
    spawn_here(async move {
        let _ = connection.await;
    })
    .detach();
    Ok(sender)
}

/// One request on the connection in `slot` (opened if needed; dropped after a failure): its
/// status and at most `answer_bytes_max` bytes of its answer (a longer answer is an error).
pub async fn call(
    slot: &mut Option<Sender>,
    endpoint: &Endpoint,
    method: http::Method,
    path: &str,
    body: Option<(&'static str, Bytes)>,
    answer_bytes_max: usize,
) -> Result<(StatusCode, Bytes), String> {
    let attempt = async {
        if slot.as_ref().is_none_or(|sender| sender.is_closed()) {
            *slot = Some(connect(endpoint).await?);
        }
        let sender = slot.as_mut().expect("connected above");
        sender
            .ready()
            .await
            .map_err(|e| format!("connection to {}: {e}", endpoint.authority))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", endpoint.base_path))
            .header(http::header::HOST, endpoint.host.as_str());
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(http::header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {path} to {}: {e}", endpoint.authority))?;
        let status = response.status();
        let answer = http_body_util::Limited::new(response.into_body(), answer_bytes_max)
            .collect()
            .await
            .map_err(|e| format!("reading the answer to {method} {path} (at most {answer_bytes_max} bytes): {e}"))?
            .to_bytes();
        Ok((status, answer))
    };
    let timed = futures_lite::future::or(attempt, async {
        glommio::timer::sleep(REQUEST_TIMEOUT).await;
        Err(format!(
            "{path} at {}: no answer within {REQUEST_TIMEOUT:?}",
            endpoint.authority
        ))
    })
    .await;
    if timed.is_err() {
        *slot = None;
    }
    timed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_host_port_and_path() {
        let e = Endpoint::parse("http://127.0.0.1:4000").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.host.as_str(), e.base_path.as_str()),
            ("127.0.0.1:4000", "127.0.0.1:4000", "")
        );
        let e = Endpoint::parse("http://bundler.local/api/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.base_path.as_str()),
            ("bundler.local:80", "/api")
        );
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("http:///x").is_err());
    }
}
