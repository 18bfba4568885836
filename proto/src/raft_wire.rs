//! The Raft peer protocol: openraft's messages between control-plane nodes
//! on a connection of their own beside gRPC on the same port (chosen by
//! ALPN over TLS; a plaintext connection starts with [`PREFACE`]), one
//! request and then its reply at a time.
//!
//! Every message is a frame: a kind byte, the body's length (4 bytes, big
//! endian) and the body. Requests carry openraft's message as JSON; an
//! InstallSnapshot's body is the chunk's JSON header (its length first, 4
//! bytes) followed by the chunk's raw data. A reply is the JSON of
//! openraft's result, or a refusal: why, in UTF-8.
//!
//! Pure: framing only, no I/O.

/// ALPN of a Raft peer connection over TLS.
pub const ALPN: &[u8] = b"meridian-raft/1";

/// What a plaintext Raft peer connection starts with. Its first byte is
/// never an HTTP/2 client's (`P`), which tells the two apart on one port.
pub const PREFACE: &[u8] = b"MERIDIAN-RAFT/1\n";

/// The largest body a frame may carry (entry batches, snapshot chunks).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The bytes before a frame's body.
pub const HEAD: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// openraft's result of the request, as JSON.
    Reply,
    /// The request was not served: why.
    Refused,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::AppendEntries => 1,
            Kind::Vote => 2,
            Kind::InstallSnapshot => 3,
            Kind::Reply => 16,
            Kind::Refused => 17,
        }
    }

    fn of(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::AppendEntries,
            2 => Kind::Vote,
            3 => Kind::InstallSnapshot,
            16 => Kind::Reply,
            17 => Kind::Refused,
            _ => return None,
        })
    }

    /// The request's name where access is decided and refusals counted.
    pub fn method(self) -> &'static str {
        match self {
            Kind::AppendEntries => "/meridian.v1.Raft/AppendEntries",
            Kind::Vote => "/meridian.v1.Raft/Vote",
            Kind::InstallSnapshot => "/meridian.v1.Raft/InstallSnapshot",
            Kind::Reply | Kind::Refused => "/meridian.v1.Raft/Reply",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    UnknownKind(u8),
    TooLarge(usize),
    /// A snapshot chunk's header length points past its body.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::UnknownKind(byte) => write!(f, "unknown Raft frame kind {byte}"),
            FrameError::TooLarge(len) => {
                write!(f, "a Raft frame of {len} bytes (at most {MAX_BODY})")
            }
            FrameError::Truncated => f.write_str("a snapshot chunk shorter than its header says"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A frame of `kind` whose body is `parts`, one after another.
pub fn frame(kind: Kind, parts: &[&[u8]]) -> Result<Vec<u8>, FrameError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_BODY {
        return Err(FrameError::TooLarge(len));
    }
    let mut frame = Vec::with_capacity(HEAD + len);
    frame.push(kind.byte());
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        frame.extend_from_slice(part);
    }
    Ok(frame)
}

/// The kind and body length a frame's head announces.
pub fn parse_head(head: [u8; HEAD]) -> Result<(Kind, usize), FrameError> {
    let kind = Kind::of(head[0]).ok_or(FrameError::UnknownKind(head[0]))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_BODY {
        return Err(FrameError::TooLarge(len));
    }
    Ok((kind, len))
}

/// An InstallSnapshot request: the chunk's JSON header and its data.
pub fn snapshot_frame(header: &[u8], data: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header_len = u32::try_from(header.len()).map_err(|_| FrameError::TooLarge(header.len()))?;
    frame(
        Kind::InstallSnapshot,
        &[&header_len.to_be_bytes(), header, data],
    )
}

/// An InstallSnapshot body split into the chunk's header and its data.
pub fn split_snapshot(body: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    let (len, rest) = body.split_first_chunk::<4>().ok_or(FrameError::Truncated)?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(FrameError::Truncated);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(frame: &[u8]) -> [u8; HEAD] {
        frame[..HEAD].try_into().expect("a head")
    }

    #[test]
    fn a_frame_reads_back_as_its_kind_and_body() {
        let frame = frame(Kind::Vote, &[b"{\"a\":", b"1}"]).expect("framed");
        assert_eq!(parse_head(head_of(&frame)), Ok((Kind::Vote, 7)));
        assert_eq!(&frame[HEAD..], b"{\"a\":1}");
        for kind in [
            Kind::AppendEntries,
            Kind::InstallSnapshot,
            Kind::Reply,
            Kind::Refused,
        ] {
            let frame = super::frame(kind, &[]).expect("framed");
            assert_eq!(parse_head(head_of(&frame)), Ok((kind, 0)));
        }
    }

    #[test]
    fn unknown_kinds_and_oversized_bodies_are_refused() {
        assert_eq!(parse_head([0, 0, 0, 0, 1]), Err(FrameError::UnknownKind(0)));
        // An HTTP/2 client's first bytes are not a frame.
        assert_eq!(parse_head(*b"PRI *"), Err(FrameError::UnknownKind(b'P')));
        let over = (MAX_BODY as u32 + 1).to_be_bytes();
        assert_eq!(
            parse_head([1, over[0], over[1], over[2], over[3]]),
            Err(FrameError::TooLarge(MAX_BODY + 1))
        );
        let max = (MAX_BODY as u32).to_be_bytes();
        assert_eq!(
            parse_head([1, max[0], max[1], max[2], max[3]]),
            Ok((Kind::AppendEntries, MAX_BODY))
        );
    }

    #[test]
    fn a_snapshot_chunk_carries_its_header_and_raw_data() {
        let frame = snapshot_frame(b"{\"offset\":0}", &[0, 255, 7]).expect("framed");
        let (kind, len) = parse_head(head_of(&frame)).expect("head");
        assert_eq!((kind, len), (Kind::InstallSnapshot, frame.len() - HEAD));
        let (header, data) = split_snapshot(&frame[HEAD..]).expect("split");
        assert_eq!(header, b"{\"offset\":0}");
        assert_eq!(data, &[0, 255, 7]);
        // A header length past the body, or no length at all.
        assert_eq!(split_snapshot(&[0, 0, 0, 9, 1]), Err(FrameError::Truncated));
        assert_eq!(split_snapshot(&[0, 0]), Err(FrameError::Truncated));
    }

    #[test]
    fn the_plaintext_preface_cannot_be_taken_for_http2() {
        assert_ne!(PREFACE[0], b"PRI * HTTP/2.0"[0]);
    }
}
