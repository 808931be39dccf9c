//! Length-delimited frames on a byte stream: a 2-byte big-endian length,
//! then that many bytes. Handshake messages are one frame each; after the
//! handshake every frame is one chunk of a sealed message
//! ([`crate::crypto`]). A length of zero or above the maximum is refused
//! before anything is read.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 2;

/// A frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the connection was closed")]
    Closed,
    #[error("the connection was closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { expected: usize, got: usize },
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("read failed: {0}")]
    Io(String),
}

/// Reads one frame into `buf` (resized to the payload).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> Result<(), FrameError> {
    let mut header = [0u8; LEN_BYTES];
    let mut got = 0;
    while got < LEN_BYTES {
        let n = r.read(&mut header[got..]).await.map_err(|e| FrameError::Io(e.to_string()))?;
        if n == 0 {
            return Err(if got == 0 { FrameError::Closed } else { FrameError::Truncated { expected: LEN_BYTES, got } });
        }
        got += n;
    }
    let len = usize::from(u16::from_be_bytes(header));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.clear();
    buf.resize(len, 0);
    let mut got = 0;
    while got < len {
        let n = r.read(&mut buf[got..]).await.map_err(|e| FrameError::Io(e.to_string()))?;
        if n == 0 {
            return Err(FrameError::Truncated { expected: len + LEN_BYTES, got: got + LEN_BYTES });
        }
        got += n;
    }
    Ok(())
}

/// Appends a plaintext frame (used only during the handshake, whose
/// messages are far below 64 KiB).
pub fn put_plain_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload.get(..usize::from(len)).unwrap_or(payload));
}
