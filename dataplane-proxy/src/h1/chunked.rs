//! The chunked transfer coding of a response body, decoded from a read
//! buffer (RFC 9112 §7.1). Strict: a chunk size that is not hexadecimal,
//! overflows or has a stray byte, and a chunk not ended by CRLF, are
//! errors, never guessed at. Trailers are read and dropped. Pure.

use bytes::{Bytes, BytesMut};

/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    InvalidSize,
    #[error("a chunk is not followed by CRLF")]
    MissingCrlf,
    #[error("a chunk-size or trailer line is too long")]
    LineTooLong,
    #[error("the trailers are too long")]
    TrailersTooLong,
}

/// What the buffer held.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed.
    NeedMore,
    /// The last chunk and the trailers have been read.
    End,
}

#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Takes what it can from the start of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let rest = remaining - take as u64;
                    self.state = if rest == 0 {
                        State::DataEnd
                    } else {
                        State::Data(rest)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                        return Ok(Decoded::End);
                    }
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLong);
                    }
                }
                State::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// The next CRLF-ended line without its CRLF, `None` if it is not all
/// here yet. A bare LF is refused.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, ChunkError> {
    let Some(at) = buf.iter().take(MAX_LINE + 2).position(|b| *b == b'\n') else {
        if buf.len() > MAX_LINE + 1 {
            return Err(ChunkError::LineTooLong);
        }
        return Ok(None);
    };
    if at == 0 || buf[at - 1] != b'\r' {
        return Err(ChunkError::InvalidSize);
    }
    let mut line = buf.split_to(at + 1);
    line.truncate(at - 1);
    Ok(Some(line))
}

/// A chunk-size line: hexadecimal digits, then optionally whitespace and
/// `;` extensions, which are ignored.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::InvalidSize);
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(ChunkError::InvalidSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError::InvalidSize)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError::InvalidSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: the data, or the error.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(data) => out.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((out, buf.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunks_decode_whole_or_fed_a_byte_at_a_time() {
        let body = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            assert_eq!(
                decode(body, step),
                Ok((b"hello world".to_vec(), true)),
                "step {step}"
            );
        }
        assert_eq!(
            decode(b"A\r\n0123456789\r\n0\r\n\r\n", 4),
            Ok((b"0123456789".to_vec(), true))
        );
        // Bytes after the last chunk stay in the buffer (the connection is not reused).
        assert_eq!(decode(b"0\r\n\r\nHTTP/1.1", 100), Ok((Vec::new(), false)));
        // Not ended yet.
        assert_eq!(decode(b"5\r\nhel", 100), Ok((b"hel".to_vec(), false)));
    }

    #[test]
    fn invalid_chunks_are_errors() {
        for (bad, error) in [
            (&b"x\r\n"[..], ChunkError::InvalidSize),
            (b"\r\n", ChunkError::InvalidSize),
            (b"-5\r\nhello\r\n", ChunkError::InvalidSize),
            (b"5 5\r\nhello\r\n", ChunkError::InvalidSize),
            (b"0x5\r\nhello\r\n", ChunkError::InvalidSize),
            (b"5\nhello\r\n", ChunkError::InvalidSize),
            (b"11111111111111111\r\n", ChunkError::InvalidSize),
            (b"5\r\nhelloXY0\r\n\r\n", ChunkError::MissingCrlf),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingCrlf),
        ] {
            assert_eq!(
                decode(bad, 100),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("5;{}\r\n", "a".repeat(MAX_LINE + 10));
        assert_eq!(decode(long.as_bytes(), 1000), Err(ChunkError::LineTooLong));
        let trailers = format!("0\r\n{}", "x: y\r\n".repeat(MAX_TRAILERS / 4));
        assert_eq!(
            decode(trailers.as_bytes(), 1000),
            Err(ChunkError::TrailersTooLong)
        );
        // The largest size that fits is accepted (and waits for its data).
        assert!(decode(b"ffffffffffffffff\r\nabc", 100).is_ok());
    }
}
