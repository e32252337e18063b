//! A stand-in for the Arweave services a node calls (a bundler, a gateway): a small HTTP/1.1
//! server on loopback, run by the test itself, answering each request with what the test's
//! handler decides, including faults (an error status, a connection closed without an answer).
//!
//! It understands just what those clients send: a request line, headers, a `Content-Length`
//! body, keep-alive. One thread per connection; it lives as long as the test process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// One request as the stub read it.
#[derive(Clone, Debug)]
pub struct StubRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// What the handler tells the stub to do.
pub enum StubAnswer {
    Respond(u16, Vec<u8>),
    /// Close the connection without answering (a crashed or unreachable service).
    Hang,
}

type Handler = dyn Fn(&StubRequest) -> StubAnswer + Send + Sync;

/// A running stub; `url` is `http://127.0.0.1:<port>`.
pub struct StubServer {
    pub url: String,
}

impl StubServer {
    pub fn start(handler: impl Fn(&StubRequest) -> StubAnswer + Send + Sync + 'static) -> StubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || serve(stream, &*handler));
            }
        });
        StubServer { url }
    }
}

fn serve(stream: TcpStream, handler: &Handler) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            return;
        };
        let (method, path) = (method.to_owned(), path.to_owned());
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match handler(&StubRequest { method, path, body }) {
            StubAnswer::Hang => return,
            StubAnswer::Respond(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} Stub\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
                    return;
                }
            }
        }
    }
}
