//! Relay link frames (`proto::relay`): arbitrary bytes as the relay reads a daemon's hello, and
//! as a daemon reads the relay's messages. Oracles: `parse_frame` and the async `read_frame`
//! agree; a frame that decodes re-encodes to a frame that decodes to the same value; a length
//! over `MAX_RELAY_FRAME` is refused whatever follows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minitorr_proto::relay::{encode_frame, parse_frame, RelayHello, RelayMsg, MAX_RELAY_FRAME};
use minitorr_proto::ProtoError;

macro_rules! check {
    ($t:ty, $data:expr) => {{
        type T = $t;
        let mut rest: &[u8] = $data;
        loop {
            match parse_frame::<T>(rest) {
                Ok(None) => break,
                Ok(Some((v, used))) => {
                    assert!(used >= 4 && used <= rest.len() && used - 4 <= MAX_RELAY_FRAME);
                    let again = encode_frame(&v).unwrap();
                    let (back, n) = parse_frame::<T>(&again).unwrap().unwrap();
                    assert_eq!(back, v);
                    assert_eq!(n, again.len());
                    rest = &rest[used..];
                }
                Err(ProtoError::FrameTooLarge { len, max }) => {
                    assert!(len > max && max == MAX_RELAY_FRAME);
                    break;
                }
                Err(e) => {
                    let _ = e.to_string();
                    break;
                }
            }
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    check!(RelayHello, data);
    check!(RelayMsg, data);
});
