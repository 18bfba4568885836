//! What an upstream sends is outside input: property tests (a stand-in
//! for `cargo fuzz`) feed the response parser and the chunked decoder any
//! bytes, and valid responses with bytes changed, in pieces of any size,
//! and assert that each is read or refused without a panic, and that a
//! body read never claims more than the bytes given.

use super::chunked::{ChunkedDecoder, Decoded};
use super::codec::{parse_response, BodyFraming};
use bytes::BytesMut;
use hyper::Method;
use proptest::prelude::*;

/// Feeds `input` in pieces of `step` bytes, as reads would deliver it: the
/// head, then the body as framed. Returns the body bytes read.
fn read_response(input: &[u8], step: usize, method: &Method) -> usize {
    let mut buf = BytesMut::new();
    let mut pieces = input.chunks(step.max(1));
    let head = loop {
        match parse_response(&mut buf, method) {
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return 0,
            },
            Err(_) => return 0,
        }
    };
    let mut body = 0;
    let mut decoder = ChunkedDecoder::default();
    loop {
        match head.framing {
            BodyFraming::Empty => return 0,
            BodyFraming::Length(length) => {
                let take = (length - body as u64).min(buf.len() as u64) as usize;
                body += buf.split_to(take).len();
                if body as u64 == length {
                    return body;
                }
            }
            BodyFraming::UntilClose => body += buf.split().len(),
            BodyFraming::Chunked => loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(data)) => body += data.len(),
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::End) | Err(_) => return body,
                }
            },
        }
        match pieces.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => return body,
        }
    }
}

const VALID: [&str; 4] = [
    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
    "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\nuntil the end",
    "HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n",
];

/// A valid response with bytes changed, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..VALID.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(|(which, edits)| {
            let mut bytes = VALID[which].as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let at = at.index(bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

proptest! {
    #[test]
    fn any_bytes_are_read_or_refused(input in prop::collection::vec(any::<u8>(), 0..512), step in 1usize..64) {
        let body = read_response(&input, step, &Method::GET);
        prop_assert!(body <= input.len());
    }

    #[test]
    fn mutated_responses_are_read_or_refused(input in mutated(), step in 1usize..32, head in any::<bool>()) {
        let method = if head { Method::HEAD } else { Method::GET };
        let body = read_response(&input, step, &method);
        prop_assert!(body <= input.len());
    }

    #[test]
    fn chunked_bodies_of_any_bytes_end_or_fail(input in prop::collection::vec(any::<u8>(), 0..512), step in 1usize..64) {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = 0;
        'feed: for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(bytes)) => data += bytes.len(),
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::End) | Err(_) => break 'feed,
                }
            }
        }
        prop_assert!(data <= input.len());
    }
}

#[test]
fn the_valid_responses_read_whole_in_any_pieces() {
    for step in [1, 3, 1000] {
        assert_eq!(read_response(VALID[0].as_bytes(), step, &Method::GET), 5);
        assert_eq!(read_response(VALID[1].as_bytes(), step, &Method::GET), 5);
        assert_eq!(read_response(VALID[2].as_bytes(), step, &Method::GET), 13);
        assert_eq!(read_response(VALID[3].as_bytes(), step, &Method::GET), 0);
        assert_eq!(read_response(VALID[0].as_bytes(), step, &Method::HEAD), 0);
    }
}
