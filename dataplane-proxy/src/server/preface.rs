//! Telling an HTTP/2 connection from an HTTP/1.1 one by its first bytes,
//! which are then read again by the server that serves it.

use crate::coalesce::PREFACE;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Reads until the bytes read either are HTTP/2's preface or cannot become
/// it (or the client closed the connection): whether it is HTTP/2, and the
/// connection with those bytes to read again.
pub async fn read<I: AsyncRead + Unpin>(mut io: I) -> io::Result<(bool, Rewind<I>)> {
    let mut read = [0u8; PREFACE.len()];
    let mut len = 0;
    while len < PREFACE.len() && read[..len] == PREFACE[..len] {
        match io.read(&mut read[len..]).await? {
            0 => break,
            n => len += n,
        }
    }
    Ok((
        read[..len] == *PREFACE,
        Rewind {
            read,
            from: 0,
            to: len,
            inner: io,
        },
    ))
}

/// A connection whose first bytes, already read, are read again.
pub struct Rewind<I> {
    read: [u8; PREFACE.len()],
    from: usize,
    to: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.from < me.to {
            let n = (me.to - me.from).min(buf.remaining());
            buf.put_slice(&me.read[me.from..me.from + n]);
            me.from += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What the server reads after the decision, given what the client sent.
    async fn decide(sent: &'static [&'static [u8]]) -> (bool, Vec<u8>) {
        let (client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut client = client;
            for part in sent {
                client
                    .write_all(part)
                    .await
                    .expect("the pipe takes the bytes");
                tokio::task::yield_now().await;
            }
        });
        let (http2, mut rewound) = read(server).await.expect("the first bytes read");
        writer.await.expect("the writer");
        let mut all = Vec::new();
        rewound
            .read_to_end(&mut all)
            .await
            .expect("the bytes read again");
        (http2, all)
    }

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2_and_read_again_whole() {
        let (http2, read) = decide(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12"]).await;
        assert!(http2);
        assert_eq!(read, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12");
    }

    #[tokio::test]
    async fn anything_else_is_http1_and_read_again_whole() {
        let (http2, read) = decide(&[b"PRIVATE /x HTTP/1.1\r\n\r\n"]).await;
        assert!(!http2);
        assert_eq!(read, b"PRIVATE /x HTTP/1.1\r\n\r\n");
        let (http2, read) = decide(&[b"PR"]).await;
        assert!(!http2, "closed before the preface ended");
        assert_eq!(read, b"PR");
    }
}
