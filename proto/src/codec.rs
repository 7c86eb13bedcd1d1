//! Length-prefixed framing shared by every link.
//!
//! Layout: `u32` big-endian body length, then the body. The decoder checks the length against a
//! hard maximum *before* buffering anything, so a giant length prefix costs nothing, and it never
//! pre-allocates the announced length (a client announcing 16 MiB and then stalling holds only
//! what it actually sent).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtoError;

const LEN_PREFIX: usize = 4;

/// A message that can be written into / read from one frame body.
pub trait WireMessage: Sized {
    /// Append the encoded body (without the length prefix) to `dst`.
    fn encode_body(&self, dst: &mut BytesMut) -> Result<(), ProtoError>;
    /// Decode a complete body. `body` is a zero-copy slice of the read buffer.
    fn decode_body(body: Bytes) -> Result<Self, ProtoError>;
}

/// Encode a serde value with postcard into `dst`.
pub fn encode_postcard<T: serde::Serialize>(v: &T, dst: &mut BytesMut) -> Result<(), ProtoError> {
    let v = postcard::to_stdvec(v).map_err(|e| ProtoError::Encode(e.to_string()))?;
    dst.extend_from_slice(&v);
    Ok(())
}

/// Decode a postcard body, rejecting trailing bytes (a body means exactly one message).
pub fn decode_postcard<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    let (v, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(v)
}

/// Decode a postcard value from the *start* of `bytes`, ignoring what follows. For peeking at
/// the leading field of a body that has not fully arrived (trackerd reads the session token of
/// a large request before agreeing to buffer the rest).
pub fn decode_postcard_prefix<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, ProtoError> {
    let (v, _rest) = postcard::take_from_bytes(bytes)?;
    Ok(v)
}

/// Implements [`WireMessage`] for serde types as a plain postcard body.
#[macro_export]
macro_rules! postcard_wire {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::codec::WireMessage for $t {
            fn encode_body(&self, dst: &mut ::bytes::BytesMut) -> Result<(), $crate::ProtoError> {
                $crate::codec::encode_postcard(self, dst)
            }
            fn decode_body(body: ::bytes::Bytes) -> Result<Self, $crate::ProtoError> {
                $crate::codec::decode_postcard(&body)
            }
        }
    )*};
}

/// Framed codec that decodes `In` and encodes `Out`, with a maximum frame size.
pub struct FrameCodec<In, Out> {
    max_frame: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    pub fn new(max_frame: usize) -> Self {
        FrameCodec {
            max_frame,
            _types: PhantomData,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl<In, Out> Clone for FrameCodec<In, Out> {
    fn clone(&self) -> Self {
        Self::new(self.max_frame)
    }
}

impl<In: WireMessage, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtoError> {
        if src.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len == 0 {
            return Err(ProtoError::Malformed("empty frame".into()));
        }
        if src.len() < LEN_PREFIX + len {
            // Grow towards the frame, but at most 1 MiB ahead of what has arrived.
            src.reserve((LEN_PREFIX + len - src.len()).min(1 << 20));
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        let body = src.split_to(len).freeze();
        In::decode_body(body).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtoError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtoError::Truncated { have: src.len() }),
        }
    }
}

impl<In, Out: WireMessage> Encoder<Out> for FrameCodec<In, Out> {
    type Error = ProtoError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let start = dst.len();
        dst.put_u32(0);
        if let Err(e) = item.encode_body(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let len = dst.len() - start - LEN_PREFIX;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        dst[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control;

    type Codec = FrameCodec<control::Request, control::Request>;

    #[test]
    fn rejects_oversized_length_prefix_without_buffering() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::FrameTooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
        assert!(
            buf.capacity() < 1 << 20,
            "must not pre-allocate the announced length"
        );
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::new();
        codec
            .encode(control::Request::ListGroups, &mut buf)
            .unwrap();
        buf.truncate(buf.len() - 1);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(ProtoError::Truncated { .. })
        ));
    }

    #[test]
    fn garbage_body_is_malformed() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0xee, 0xee, 0xee][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn empty_frame_is_malformed() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn encoder_refuses_frames_over_the_limit() {
        let mut codec = Codec::new(8);
        let mut buf = BytesMut::new();
        let big = control::Request::CreateGroup {
            group: "x".repeat(100),
        };
        assert!(matches!(
            codec.encode(big, &mut buf),
            Err(ProtoError::FrameTooLarge { .. })
        ));
        assert!(
            buf.is_empty(),
            "a refused frame leaves nothing half-written"
        );
    }

    #[test]
    fn frames_split_across_reads_reassemble() {
        let mut codec = Codec::new(1024);
        let mut whole = BytesMut::new();
        codec
            .encode(
                control::Request::ListFiles { group: "g1".into() },
                &mut whole,
            )
            .unwrap();
        codec.encode(control::Request::Logout, &mut whole).unwrap();
        let mut buf = BytesMut::new();
        let mut out = vec![];
        for b in whole.iter() {
            buf.put_u8(*b);
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(
            out,
            vec![
                control::Request::ListFiles { group: "g1".into() },
                control::Request::Logout
            ]
        );
    }
}
