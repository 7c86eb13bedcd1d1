//! Peer link (minitorrd ↔ minitorrd): the byte stream decoded as `peer::PeerMsg` (postcard
//! messages and raw piece frames) in arbitrary chunks, through `decode_eof`, with the round-trip
//! oracle; piece frames must re-encode byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minitorr_fuzz::{decode_stream, round_trip, StreamInput};
use minitorr_proto::{links, peer::PeerMsg};

fuzz_target!(|data: &[u8]| {
    let input = StreamInput::parse(data, links::peer().max_frame());
    let (whole, end) = decode_stream::<PeerMsg>(input.stream, &[], input.max_frame);
    if !input.chunks.is_empty() {
        let (chunked, chunked_end) =
            decode_stream::<PeerMsg>(input.stream, &input.chunks, input.max_frame);
        assert_eq!(chunked_end, end, "chunking changed the outcome");
        assert_eq!(chunked.len(), whole.len(), "chunking changed the messages");
        for (a, b) in chunked.iter().zip(&whole) {
            assert_eq!(a.msg, b.msg, "chunking changed a message");
        }
    }
    for d in &whole {
        let len = round_trip(&d.msg, d.frame_len, input.max_frame);
        match &d.msg {
            PeerMsg::Piece { data, .. } => {
                assert_eq!(len, d.frame_len, "piece frames re-encode byte for byte");
                assert_eq!(d.frame_len, 4 + 1 + 4 + data.len());
            }
            PeerMsg::Welcome { have } if have.is_well_formed() => {
                // What a downloader does with a well-formed bitfield must not panic.
                let set: Vec<u32> = have.iter_set().collect();
                assert_eq!(set.len() as u32, have.count());
                assert!(set.iter().all(|&i| i < have.len() && have.get(i)));
                let mut b = have.clone();
                if !b.is_empty() {
                    b.set(b.len() - 1);
                    assert!(b.get(b.len() - 1));
                }
            }
            _ => {}
        }
    }
});
