//! Control link (minitorrctl ↔ minitorrd): the byte stream decoded as the daemon reads it
//! (`control::Request`) and as the CLI reads it (`control::Response`), in arbitrary chunks,
//! through `decode_eof`, with the round-trip oracle on every decoded message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minitorr_fuzz::{check_stream, StreamInput};
use minitorr_proto::{control, links};

fuzz_target!(|data: &[u8]| {
    let input = StreamInput::parse(data, links::control_server().max_frame());
    for req in check_stream::<control::Request>(&input) {
        let _ = req.command_name();
    }
    assert_eq!(
        links::control_client().max_frame(),
        links::control_server().max_frame()
    );
    check_stream::<control::Response>(&input);
});
