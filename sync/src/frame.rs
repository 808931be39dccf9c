//! Length-delimited frames on a byte stream: a 4-byte big-endian length,
//! then that many bytes of payload. A length of zero or above the maximum is
//! refused before anything is allocated.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;

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

/// Reads one frame into `buf` (resized to the payload); returns the length
/// prefix as sent, which sealed frames authenticate.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<[u8; LEN_BYTES], FrameError> {
    let mut header = [0u8; LEN_BYTES];
    let mut got = 0;
    while got < LEN_BYTES {
        let n = r.read(&mut header[got..]).await.map_err(|e| FrameError::Io(e.to_string()))?;
        if n == 0 {
            return Err(if got == 0 { FrameError::Closed } else { FrameError::Truncated { expected: LEN_BYTES, got } });
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
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
    Ok(header)
}

/// Appends a plaintext frame (used only during the handshake).
pub fn put_plain_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}
