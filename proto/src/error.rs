use thiserror::Error;

/// Why a frame could not be read or written. Any of these closes the connection it came from.
#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a frame ({have} bytes buffered)")]
    Truncated { have: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("message cannot be encoded: {0}")]
    Encode(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<postcard::Error> for ProtoError {
    fn from(e: postcard::Error) -> Self {
        ProtoError::Malformed(e.to_string())
    }
}
