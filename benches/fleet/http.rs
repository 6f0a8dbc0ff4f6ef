//! A minimal blocking HTTP client for loopback servers (the simulator's admin endpoint and
//! jobwarden's /metrics): one HTTP/1.0 request per connection, body read to the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `method path` (with a JSON body, if any) and returns the body of a 2xx answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<String, String> {
    let fail = |err: std::io::Error| format!("{method} http://{addr}{path}: {err}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    let body = json.unwrap_or("");
    let content_type = if json.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(fail)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} http://{addr}{path}: no HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if !status.starts_with('2') {
        return Err(format!(
            "{method} http://{addr}{path}: HTTP {status}: {body}"
        ));
    }
    Ok(body.to_owned())
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    request(addr, "GET", path, None)
}

/// `GET path`, decoded as JSON.
pub fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, String> {
    let body = get(addr, path)?;
    serde_json::from_str(&body).map_err(|err| format!("GET http://{addr}{path}: {err}"))
}

/// `POST path` with a JSON body; the answer decoded as JSON.
pub fn post_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<T, String> {
    let answer = request(addr, "POST", path, Some(&body.to_string()))?;
    serde_json::from_str(&answer).map_err(|err| format!("POST http://{addr}{path}: {err}"))
}
