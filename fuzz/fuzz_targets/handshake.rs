//! Connection preamble: `check_preamble` on arbitrary 9-byte input, for every link and an
//! arbitrary local version. Oracle: accepted exactly when the input equals `preamble(link,
//! version)`, and the error names the right reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minitorr_proto::handshake::{
    check_preamble, parse_punch_preamble, preamble, punch_preamble, MAGIC,
};
use minitorr_proto::{HandshakeError, Link};

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let p: [u8; 9] = data[..9].try_into().unwrap();
    let ours = u16::from_be_bytes([data[9], data[10]]);
    // The hole-punch preamble (issue #14): accepted exactly when it is ours with some nonce,
    // and then that nonce comes back.
    if data.len() >= 25 {
        let pp: [u8; 25] = data[..25].try_into().unwrap();
        let nonce: [u8; 16] = pp[9..].try_into().unwrap();
        match parse_punch_preamble(&pp) {
            Ok(n) => {
                assert_eq!(n, nonce);
                assert_eq!(pp, punch_preamble(&nonce));
            }
            Err(_) => assert_ne!(pp, punch_preamble(&nonce)),
        }
    }
    for link in [Link::Control, Link::Tracker, Link::Peer, Link::Relay, Link::Punch] {
        let r = check_preamble(&p, link, ours);
        let expected = preamble(link, ours);
        assert_eq!(r.is_ok(), p == expected, "{p:?} vs {expected:?}: {r:?}");
        assert!(check_preamble(&expected, link, ours).is_ok());
        match r {
            Ok(()) => {}
            Err(HandshakeError::NotMinitorr) => assert_ne!(p[..6], MAGIC),
            Err(HandshakeError::WrongLink { expected: e, got }) => {
                assert_eq!(p[..6], MAGIC);
                assert_eq!(e, link);
                assert_ne!(p[6], link as u8);
                assert!(!got.is_empty());
            }
            Err(HandshakeError::VersionMismatch { ours: o, theirs }) => {
                assert_eq!(p[..7], expected[..7]);
                assert_eq!(o, ours);
                assert_eq!(theirs, u16::from_be_bytes([p[7], p[8]]));
                assert_ne!(theirs, ours);
            }
            Err(e) => panic!("check_preamble cannot fail with {e:?}"),
        }
        if let Err(e) = check_preamble(&p, link, ours) {
            let _ = e.to_string();
        }
    }
});
