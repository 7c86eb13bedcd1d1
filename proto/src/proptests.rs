//! Property tests: every message of every link survives encode → frame → decode unchanged,
//! also when the byte stream arrives in arbitrary chunks; arbitrary bytes never panic the
//! decoder.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{FrameCodec, WireMessage};
use crate::{control, peer, tracker, MAX_MESSAGE_FRAME, MAX_PEER_FRAME};

fn round_trip<M>(msg: M, max: usize, chunk: usize)
where
    M: WireMessage + Clone + PartialEq + std::fmt::Debug,
{
    let mut codec = FrameCodec::<M, M>::new(max);
    let mut wire = BytesMut::new();
    codec.encode(msg.clone(), &mut wire).unwrap();
    codec.encode(msg.clone(), &mut wire).unwrap();
    let mut buf = BytesMut::new();
    let mut out = vec![];
    for part in wire.chunks(chunk.max(1)) {
        buf.put_slice(part);
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            out.push(m);
        }
    }
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    assert_eq!(out, vec![msg.clone(), msg]);
}

fn never_panics<M: WireMessage>(bytes: &[u8], max: usize) {
    let mut codec = FrameCodec::<M, M>::new(max);
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
}

proptest! {
    #[test]
    fn control_requests(m: control::Request, chunk in 1usize..64) {
        round_trip(m, MAX_MESSAGE_FRAME, chunk);
    }

    #[test]
    fn control_responses(m: control::Response, chunk in 1usize..64) {
        round_trip(m, MAX_MESSAGE_FRAME, chunk);
    }

    #[test]
    fn tracker_requests(m: tracker::Request, chunk in 1usize..64) {
        round_trip(m, MAX_MESSAGE_FRAME, chunk);
    }

    #[test]
    fn tracker_responses(m: tracker::Response, chunk in 1usize..64) {
        round_trip(m, MAX_MESSAGE_FRAME, chunk);
    }

    #[test]
    fn peer_messages(m: peer::PeerMsg, chunk in 1usize..64) {
        round_trip(m, MAX_PEER_FRAME, chunk);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        never_panics::<control::Request>(&bytes, 4096);
        never_panics::<control::Response>(&bytes, 4096);
        never_panics::<tracker::Request>(&bytes, 4096);
        never_panics::<tracker::Response>(&bytes, 4096);
        never_panics::<peer::PeerMsg>(&bytes, 4096);
    }
}
