//! The seed's tracker_info.txt parser on arbitrary UTF-8. Oracles: errors name a line that
//! exists; what parsed, written back in either accepted form, parses to the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minitorr_proto::tracker_info::{parse, TrackerInfoError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, "fuzz.txt") {
        Ok(addrs) => {
            assert!(!addrs.is_empty());
            // IP:PORT form, one per line.
            let combined: String = addrs.iter().map(|a| format!("{a}\n")).collect();
            assert_eq!(parse(&combined, "x").unwrap(), addrs, "{combined:?}");
            // The seed's two-line form (IP, then port). IPv6 with a scope id has no bare form
            // that IpAddr parses, so those keep the combined form.
            let seed: String = addrs
                .iter()
                .map(|a| match a {
                    std::net::SocketAddr::V6(v6) if v6.scope_id() != 0 => format!("{a}\n"),
                    _ => format!("{}\n{}\n", a.ip(), a.port()),
                })
                .collect();
            assert_eq!(parse(&seed, "x").unwrap(), addrs, "{seed:?}");
        }
        Err(TrackerInfoError::Parse { line, path, .. }) => {
            assert_eq!(path, "fuzz.txt");
            assert!(line >= 1 && line <= text.lines().count(), "line {line}");
        }
        Err(TrackerInfoError::Empty { .. }) => {
            assert!(text
                .lines()
                .all(|l| l.trim().is_empty() || l.trim().starts_with('#')));
        }
        Err(e @ TrackerInfoError::Read { .. }) => panic!("parse cannot fail with {e}"),
    }
});
