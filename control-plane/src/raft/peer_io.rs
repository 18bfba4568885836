//! Frames of the Raft peer protocol (`meridian_proto::raft_wire`) read from
//! and written to a connection: the I/O that both of its sides share.

use meridian_proto::raft_wire::{self, Kind, HEAD};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes `bytes` (a frame, or the preface) and sends them on.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// The next frame, or None if the connection closed before one began.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
) -> std::io::Result<Option<(Kind, Vec<u8>)>> {
    let mut head = [0u8; HEAD];
    if io.read(&mut head[..1]).await? == 0 {
        return Ok(None);
    }
    io.read_exact(&mut head[1..]).await?;
    let (kind, len) = raft_wire::parse_head(head)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    // Grown as the bytes come, not taken on the head's word.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    io.take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((kind, body)))
}

/// Reads the preface a peer connection starts with; an error if it is not.
pub async fn read_preface<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<()> {
    let mut preface = [0u8; raft_wire::PREFACE.len()];
    io.read_exact(&mut preface).await?;
    if preface != raft_wire::PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a Raft peer connection",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_a_connection_whole_in_any_pieces() {
        let (mut client, mut server) = tokio::io::duplex(7);
        let body = vec![42u8; 10_000];
        let sent = raft_wire::frame(Kind::AppendEntries, &[&body]).expect("framed");
        let vote = raft_wire::frame(Kind::Vote, &[]).expect("framed");
        let writer = tokio::spawn(async move {
            write_frame(&mut client, raft_wire::PREFACE).await?;
            write_frame(&mut client, &sent).await?;
            write_frame(&mut client, &vote).await
        });
        read_preface(&mut server).await.expect("preface");
        let (kind, read) = read_frame(&mut server)
            .await
            .expect("read")
            .expect("a frame");
        assert_eq!((kind, read), (Kind::AppendEntries, body));
        let (kind, read) = read_frame(&mut server)
            .await
            .expect("read")
            .expect("a frame");
        assert_eq!((kind, read.len()), (Kind::Vote, 0));
        writer.await.expect("joined").expect("written");
        // Closed between frames: no frame, no error.
        assert!(read_frame(&mut server).await.expect("read").is_none());
    }

    #[tokio::test]
    async fn a_cut_frame_an_unknown_kind_and_a_wrong_preface_are_errors() {
        let (mut client, mut server) = tokio::io::duplex(64);
        // A head that promises 100 bytes, then 3 and the end.
        client
            .write_all(&[1, 0, 0, 0, 100, 1, 2, 3])
            .await
            .expect("written");
        drop(client);
        let cut = read_frame(&mut server).await.expect_err("cut short");
        assert_eq!(cut.kind(), std::io::ErrorKind::UnexpectedEof);

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[99, 0, 0, 0, 0]).await.expect("written");
        let unknown = read_frame(&mut server).await.expect_err("unknown kind");
        assert_eq!(unknown.kind(), std::io::ErrorKind::InvalidData);

        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\n")
            .await
            .expect("written");
        let wrong = read_preface(&mut server).await.expect_err("HTTP/2");
        assert_eq!(wrong.kind(), std::io::ErrorKind::InvalidData);
    }
}
