//! HTTP/1.1 as the upstream side of a proxy speaks it: a request head
//! written from the downstream request, and a response head read with
//! how its body is framed (RFC 9112). Pure: bytes in, bytes out.

use arrayvec::ArrayVec;
use bytes::BytesMut;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use hyper::{Method, StatusCode};

/// At most this many response headers; more is a malformed response.
const MAX_HEADERS: usize = 128;
/// A response head longer than this is refused.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Whether a header describes one connection, not the message: never
/// passed on (RFC 9110 §7.6.1). `Transfer-Encoding` is each hop's own
/// framing; requests are also framed anew (`Content-Length` too).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    #[error("the response head is longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLong,
    #[error("the response head has an invalid header")]
    InvalidHeader,
    #[error("the response's Content-Length is invalid or repeated with other values")]
    InvalidLength,
    #[error("the response switches protocols, which this proxy does not forward")]
    SwitchingProtocols,
}

/// How a request's body is framed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no framing header.
    Empty,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// The framing for a body of `exact` bytes (`None`: not known ahead).
    /// An empty body is sent without a length unless the method expects
    /// a body, for which servers want a `Content-Length: 0`.
    pub fn of(method: &Method, exact: Option<u64>) -> RequestFraming {
        match exact {
            Some(0) if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
                RequestFraming::Empty
            }
            Some(length) => RequestFraming::Length(length),
            None => RequestFraming::Chunked,
        }
    }
}

/// Whether resending a request of `method` with a body of `length` bytes
/// needs the body kept (`Replay`): not when it is sent with no body at all.
pub fn replay_needed(method: &Method, length: usize) -> bool {
    RequestFraming::of(method, Some(length as u64)) != RequestFraming::Empty
}

/// Appends the request head to `out`: `target` in origin form, the
/// end-to-end headers, `Host` (from `authority` when the request has
/// none) and the framing header.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    authority: Option<&str>,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = connection_tokens(headers);
    for (name, value) in headers {
        if hop_by_hop(name)
            || *name == CONTENT_LENGTH
            || named
                .iter()
                .any(|token| token.eq_ignore_ascii_case(name.as_str()))
        {
            continue;
        }
        header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(HOST) {
        if let Some(authority) = authority {
            header(out, b"host", authority.as_bytes());
        }
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(length) => {
            header(out, b"content-length", itoa(length, &mut [0; 20]));
        }
        RequestFraming::Chunked => header(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The header names a `Connection` header lists: hop-by-hop as well.
fn connection_tokens(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect()
}

/// A response head as read, hop-by-hop headers removed.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Whether the upstream keeps the connection open after this response.
    pub keep_alive: bool,
    /// The body's framing, as the head declares it.
    pub framing: BodyFraming,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Read to the end of the connection, which cannot be used again.
    UntilClose,
}

/// Parses a response head from the start of `buf` and takes it off: `None`
/// when more bytes are needed. `method` is the request's (a response to
/// HEAD has no body, whatever its headers say). Header values are slices
/// of the head's one buffer, not copies.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, CodecError> {
    // Nothing read yet (each response's first look, before its read):
    // nothing to parse.
    if buf.is_empty() {
        return Ok(None);
    }
    // Where each header is in `buf`: (name start, name end, value start,
    // value end). Not zeroed first: 128 empty spans were 2 KiB to fill.
    let mut spans = ArrayVec::<(u32, u32, u32, u32), MAX_HEADERS>::new();
    let (status, minor, count, used) = {
        // Left uninitialised: filling 128 empty headers per response showed
        // in the profile.
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let used = match parsed {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(CodecError::HeadTooLong)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(CodecError::Malformed(e)),
        };
        if used > MAX_HEAD_BYTES {
            return Err(CodecError::HeadTooLong);
        }
        let (Some(code), Some(minor)) = (response.code, response.version) else {
            return Err(CodecError::Malformed(httparse::Error::Status));
        };
        let base = buf.as_ptr() as usize;
        let at = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
        for h in response.headers.iter() {
            let (name, value) = (at(h.name.as_bytes()), at(h.value));
            spans.push((
                name,
                name + h.name.len() as u32,
                value,
                value + h.value.len() as u32,
            ));
        }
        (code, minor, response.headers.len(), used)
    };
    let status =
        StatusCode::from_u16(status).map_err(|_| CodecError::Malformed(httparse::Error::Status))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(CodecError::SwitchingProtocols);
    }
    let head = buf.split_to(used).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut close = false;
    let mut keep_alive_named = false;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for &(name_start, name_end, value_start, value_end) in &spans {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|_| CodecError::InvalidHeader)?;
        let value = head.slice(value_start as usize..value_end as usize);
        match name.as_str() {
            "connection" => {
                for token in value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_named |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            "transfer-encoding" => {
                // Only the last coding decides whether the body is chunked.
                let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            "content-length" => {
                for each in value.split(|b| *b == b',') {
                    let each = parse_length(each.trim_ascii()).ok_or(CodecError::InvalidLength)?;
                    if length.is_some_and(|l| l != each) {
                        return Err(CodecError::InvalidLength);
                    }
                    length = Some(each);
                }
            }
            _ => {}
        }
        if hop_by_hop(&name) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| CodecError::InvalidHeader)?;
        headers.append(name, value);
    }
    let framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        BodyFraming::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) => BodyFraming::UntilClose,
            (None, Some(0)) => BodyFraming::Empty,
            (None, Some(length)) => BodyFraming::Length(length),
            (None, None) => BodyFraming::UntilClose,
        }
    };
    // With both Transfer-Encoding and Content-Length the message may have
    // been meant to smuggle: its connection is not used again.
    let ambiguous = chunked.is_some() && length.is_some();
    if chunked.is_some() {
        headers.remove(CONTENT_LENGTH);
    }
    let keep_alive = if minor == 1 {
        !close
    } else {
        keep_alive_named && !close
    };
    Ok(Some(ResponseHead {
        status,
        headers,
        keep_alive: keep_alive && !ambiguous && framing != BodyFraming::UntilClose,
        framing,
    }))
}

/// A Content-Length value: decimal digits only, no sign, no overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &Method, headers: &[(&str, &str)], framing: RequestFraming) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let mut out = Vec::new();
        encode_request_head(&mut out, method, "/a?b=1", &map, Some("web.shop"), framing);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_request_head_keeps_end_to_end_headers_and_is_framed_anew() {
        let written = head(
            &Method::POST,
            &[
                ("host", "web.shop"),
                ("x-a", "1"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "hop"),
                ("transfer-encoding", "chunked"),
                ("content-length", "99"),
                ("te", "trailers"),
                ("x-a", "2"),
            ],
            RequestFraming::Length(12),
        );
        assert_eq!(
            written,
            "POST /a?b=1 HTTP/1.1\r\nhost: web.shop\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 12\r\n\r\n"
        );
        let written = head(&Method::GET, &[], RequestFraming::Empty);
        assert_eq!(written, "GET /a?b=1 HTTP/1.1\r\nhost: web.shop\r\n\r\n");
        let written = head(&Method::PUT, &[("host", "h")], RequestFraming::Chunked);
        assert_eq!(
            written,
            "PUT /a?b=1 HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn an_empty_body_has_a_length_only_where_the_method_expects_one() {
        assert_eq!(
            RequestFraming::of(&Method::GET, Some(0)),
            RequestFraming::Empty
        );
        assert_eq!(
            RequestFraming::of(&Method::POST, Some(0)),
            RequestFraming::Length(0)
        );
        assert_eq!(
            RequestFraming::of(&Method::GET, Some(7)),
            RequestFraming::Length(7)
        );
        assert_eq!(
            RequestFraming::of(&Method::POST, None),
            RequestFraming::Chunked
        );
        // What is sent with no body and no framing is resent without a copy.
        assert!(!replay_needed(&Method::GET, 0));
        assert!(replay_needed(&Method::GET, 7));
        assert!(replay_needed(&Method::PUT, 0));
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(
            itoa(u64::MAX, &mut [0; 20]),
            u64::MAX.to_string().as_bytes()
        );
    }

    fn parse(text: &str, method: &Method) -> Result<Option<ResponseHead>, CodecError> {
        parse_response(&mut BytesMut::from(text), method)
    }

    fn framing(text: &str) -> (BodyFraming, bool) {
        let head = parse(text, &Method::GET)
            .expect("parses")
            .expect("complete");
        (head.framing, head.keep_alive)
    }

    #[test]
    fn a_response_head_says_how_its_body_ends_and_whether_the_connection_stays() {
        let text =
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-b: 1\r\nconnection: keep-alive\r\n\r\nhello";
        let mut buf = BytesMut::from(text);
        let head = parse_response(&mut buf, &Method::GET)
            .expect("ok")
            .expect("complete");
        assert_eq!(&buf[..], b"hello", "the head is taken off, the body left");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers.get("x-b").expect("x-b"), "1");
        assert_eq!(head.headers.get("content-length").expect("kept"), "5");
        assert!(head.headers.get("connection").is_none());
        assert_eq!(
            (head.framing, head.keep_alive),
            (BodyFraming::Length(5), true)
        );

        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            (BodyFraming::Chunked, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
            (BodyFraming::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n"),
            (BodyFraming::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\n"),
            (BodyFraming::Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n"),
            (BodyFraming::Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n"),
            (BodyFraming::Length(3), true)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\n"),
            (BodyFraming::Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n"),
            (BodyFraming::Length(3), true)
        );
        let head = parse(
            "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            &Method::HEAD,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(head.framing, BodyFraming::Empty);
        assert_eq!(
            head.headers.get("content-length").expect("kept for HEAD"),
            "9"
        );
    }

    #[test]
    fn a_response_framed_two_ways_is_read_chunked_and_its_connection_closed() {
        let head = parse(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            &Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(head.framing, BodyFraming::Chunked);
        assert!(!head.keep_alive);
        assert!(head.headers.get("content-length").is_none());
    }

    #[test]
    fn malformed_heads_are_errors_and_partial_ones_wait() {
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\ncontent-le", &Method::GET),
            Ok(None)
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SMTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\n\r\n",
        ] {
            assert!(parse(bad, &Method::GET).is_err(), "{bad:?}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(
            parse(&long, &Method::GET).err(),
            Some(CodecError::HeadTooLong)
        );
    }
}
