//! Tracker link (minitorrd ↔ trackerd): the byte stream decoded as trackerd reads it
//! (`tracker::Request`) and as minitorrd reads it (`tracker::Response`), in arbitrary chunks,
//! through `decode_eof`, with the round-trip oracle on every decoded message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minitorr_fuzz::{check_stream, StreamInput};
use minitorr_proto::{links, tracker};

fuzz_target!(|data: &[u8]| {
    let input = StreamInput::parse(data, links::tracker_server().max_frame());
    for req in check_stream::<tracker::Request>(&input) {
        // What trackerd does first with a request's metadata must not panic either.
        if let tracker::Call::Share { meta, .. } = &req.call {
            if meta.check().is_ok() {
                for i in 0..meta.piece_count() {
                    assert!(meta.piece_len(i) <= meta.piece_size);
                }
            }
        }
    }
    check_stream::<tracker::Response>(&input);
});
