//! Shared harness for the frame fuzz targets.
//!
//! A fuzz input is a small header followed by the byte stream a connection would deliver:
//!
//! * byte 0, bits 0–1: how many chunk-size bytes follow (0–3). Each chunk-size byte `b` means
//!   "the next read delivers `b + 1` bytes"; the sizes repeat until the stream is used up. With
//!   none, the whole stream arrives in one read.
//! * byte 0, bit 2: if set, the next byte `m` sets a small frame limit of `m + 1` bytes (so the
//!   fuzzer reaches the over-limit path with small inputs); otherwise the link's real limit.
//! * the rest: the stream.
//!
//! Oracles (beyond "no panic, no hang"):
//!
//! 1. Chunking does not matter: the stream decoded in the given chunks yields exactly the
//!    messages and the final outcome (clean end / error kind) of the stream decoded in one read.
//! 2. `decode` returning `Ok(None)` consumes nothing; `decode_eof` ends with `Ok(None)` only on
//!    an empty buffer.
//! 3. Round trip: every decoded message re-encodes (never failing, never longer than the frame it
//!    came from, since the encoding is canonical) and decodes back to an equal value.

use std::fmt::Debug;

use bytes::BytesMut;
use minitorr_proto::codec::{FrameCodec, WireMessage};
use minitorr_proto::ProtoError;
use tokio_util::codec::{Decoder, Encoder};

/// Parsed fuzz input header (see the module docs).
pub struct StreamInput<'a> {
    pub chunks: Vec<usize>,
    pub max_frame: usize,
    pub stream: &'a [u8],
}

impl<'a> StreamInput<'a> {
    pub fn parse(data: &'a [u8], real_max: usize) -> StreamInput<'a> {
        let Some((&h, mut rest)) = data.split_first() else {
            return StreamInput {
                chunks: vec![],
                max_frame: real_max,
                stream: &[],
            };
        };
        let n = (h & 0b11) as usize;
        let take = n.min(rest.len());
        let chunks = rest[..take].iter().map(|&b| b as usize + 1).collect();
        rest = &rest[take..];
        let mut max_frame = real_max;
        if h & 0b100 != 0 {
            if let Some((&m, r)) = rest.split_first() {
                max_frame = m as usize + 1;
                rest = r;
            }
        }
        StreamInput {
            chunks,
            max_frame,
            stream: rest,
        }
    }
}

/// How a decoded stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// EOF on a frame boundary.
    Clean,
    FrameTooLarge,
    Truncated,
    Malformed,
    Encode,
    Io,
}

fn end_of(e: &ProtoError) -> End {
    match e {
        ProtoError::FrameTooLarge { len, max } => {
            assert!(len > max, "FrameTooLarge with len {len} <= max {max}");
            End::FrameTooLarge
        }
        ProtoError::Truncated { have } => {
            assert!(*have > 0, "Truncated with nothing buffered");
            End::Truncated
        }
        ProtoError::Malformed(_) => End::Malformed,
        ProtoError::Encode(_) => End::Encode,
        ProtoError::Io(_) => End::Io,
    }
}

/// One decoded message and the number of stream bytes its frame took (prefix included).
pub struct Decoded<M> {
    pub msg: M,
    pub frame_len: usize,
}

/// Decode `stream` delivered in `chunks` (empty: one read), like `FramedRead` does: after each
/// read, `decode` until it needs more; at EOF, `decode_eof` until it returns `Ok(None)`. The first
/// error ends the connection.
pub fn decode_stream<M: WireMessage>(
    stream: &[u8],
    chunks: &[usize],
    max_frame: usize,
) -> (Vec<Decoded<M>>, End) {
    let mut codec = FrameCodec::<M, M>::new(max_frame);
    let mut buf = BytesMut::new();
    let mut out = vec![];
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if chunks.is_empty() {
            rest.len()
        } else {
            chunks[i % chunks.len()]
        }
        .min(rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(msg)) => {
                    let frame_len = before - buf.len();
                    assert!(frame_len > 4, "a message must consume a whole frame");
                    out.push(Decoded { msg, frame_len });
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) must not consume input");
                    break;
                }
                Err(e) => return (out, end_of(&e)),
            }
        }
    }
    loop {
        let before = buf.len();
        match codec.decode_eof(&mut buf) {
            Ok(Some(msg)) => {
                let frame_len = before - buf.len();
                assert!(frame_len > 4, "a message must consume a whole frame");
                out.push(Decoded { msg, frame_len });
            }
            Ok(None) => {
                assert!(buf.is_empty(), "decode_eof ended cleanly with bytes left");
                return (out, End::Clean);
            }
            Err(e) => return (out, end_of(&e)),
        }
    }
}

/// Oracle 3: `msg` (decoded from a frame of `frame_len` bytes) re-encodes into at most
/// `frame_len` bytes and decodes back to itself. Returns the re-encoded frame length.
pub fn round_trip<M>(msg: &M, frame_len: usize, max_frame: usize) -> usize
where
    M: WireMessage + Clone + PartialEq + Debug,
{
    let mut codec = FrameCodec::<M, M>::new(max_frame);
    let mut wire = BytesMut::new();
    if let Err(e) = codec.encode(msg.clone(), &mut wire) {
        panic!("decoded message does not re-encode: {e}: {msg:?}");
    }
    let len = wire.len();
    assert!(
        len <= frame_len,
        "re-encoding is longer ({len}) than the frame it came from ({frame_len}): {msg:?}"
    );
    let back = codec
        .decode_eof(&mut wire)
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is complete");
    assert!(wire.is_empty(), "re-encoded frame left bytes behind");
    assert_eq!(&back, msg, "decode(encode(x)) != x");
    len
}

/// Oracles 1–3 for one message type; returns the decoded messages (whole-stream decode).
pub fn check_stream<M>(input: &StreamInput<'_>) -> Vec<M>
where
    M: WireMessage + Clone + PartialEq + Debug,
{
    let (whole, whole_end) = decode_stream::<M>(input.stream, &[], input.max_frame);
    if !input.chunks.is_empty() {
        let (chunked, chunked_end) =
            decode_stream::<M>(input.stream, &input.chunks, input.max_frame);
        assert_eq!(chunked_end, whole_end, "chunking changed the outcome");
        assert_eq!(chunked.len(), whole.len(), "chunking changed the messages");
        for (a, b) in chunked.iter().zip(&whole) {
            assert_eq!(a.msg, b.msg, "chunking changed a message");
            assert_eq!(a.frame_len, b.frame_len);
        }
    }
    let consumed: usize = whole.iter().map(|d| d.frame_len).sum();
    assert!(consumed <= input.stream.len());
    if whole_end == End::Clean {
        assert_eq!(consumed, input.stream.len(), "clean end but bytes unused");
    }
    whole
        .into_iter()
        .map(|d| {
            round_trip(&d.msg, d.frame_len, input.max_frame);
            d.msg
        })
        .collect()
}
