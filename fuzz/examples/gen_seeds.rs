//! Writes the committed seed corpus under `fuzz/seeds/` (valid frames of every link, example
//! configs, preambles). Run from `fuzz/`: `cargo run --example gen_seeds`.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use minitorr_proto::codec::{FrameCodec, WireMessage};
use minitorr_proto::handshake::preamble;
use minitorr_proto::ticket::{Ticket, TicketClaims};
use minitorr_proto::types::{Bitfield, FileMeta, FileSummary, GroupSummary, Membership, Sha1Hash};
use minitorr_proto::{control, peer::PeerMsg, tracker, Link, PROTOCOL_VERSION};
use tokio_util::codec::Encoder;

/// Header byte 0 with no chunking and the link's real limit, then the frames back to back.
/// A second seed delivers the same stream in 3-byte reads (header 0x01, chunk byte 2).
fn write_stream<M: WireMessage>(dir: &Path, name: &str, msgs: Vec<M>) {
    let mut codec = FrameCodec::<M, M>::new(usize::MAX);
    let mut wire = BytesMut::new();
    for m in msgs {
        codec.encode(m, &mut wire).unwrap();
    }
    let mut whole = vec![0u8];
    whole.extend_from_slice(&wire);
    fs::write(dir.join(format!("{name}-whole")), &whole).unwrap();
    let mut chunked = vec![1u8, 2];
    chunked.extend_from_slice(&wire);
    fs::write(dir.join(format!("{name}-chunked")), &chunked).unwrap();
}

fn ticket() -> Ticket {
    Ticket {
        claims: TicketClaims {
            user: "bob".into(),
            group: "g1".into(),
            file_name: "a.iso".into(),
            file_sha1: Sha1Hash([7; 20]),
            issued_unix: 1_899_996_400,
            expires_unix: 1_900_000_000,
            device_key: [5; 32],
        },
        key: [9; 32],
        signature: vec![0x5a; 64],
    }
}

fn meta() -> FileMeta {
    FileMeta {
        name: "a.iso".into(),
        size: 40_000,
        piece_size: 16384,
        sha1: Sha1Hash([1; 20]),
        pieces: vec![Sha1Hash([2; 20]); 3],
        tree: None,
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let d = |t: &str| {
        let p = root.join(t);
        fs::create_dir_all(&p).unwrap();
        p
    };

    use control::Request as C;
    write_stream(
        &d("control_frames"),
        "requests",
        vec![
            C::Login {
                user: "alice".into(),
                password: "pw".into(),
            },
            C::CreateGroup { group: "g1".into() },
            C::UploadFile {
                path: "/tmp/a.iso".into(),
                group: "g1".into(),
                name: None,
            },
            C::DownloadFile {
                group: "g1".into(),
                file: "a.iso".into(),
                dest: "/tmp/out".into(),
                only: vec!["docs/*.md".into()],
            },
            C::ListGroups,
            C::Status,
        ],
    );
    write_stream(
        &d("control_frames"),
        "responses",
        vec![
            control::Response::Done {
                message: "ok".into(),
            },
            control::Response::Groups(vec![GroupSummary {
                name: "g1".into(),
                owner: "alice".into(),
                members: 2,
                files: 1,
                membership: Membership::Owner,
            }]),
            control::Response::error(control::ErrorKind::NotFound, "no such group"),
        ],
    );

    use tracker::Call;
    let req = |call| tracker::Request {
        token: Some("tok".into()),
        call,
    };
    write_stream(
        &d("tracker_frames"),
        "requests",
        vec![
            tracker::Request {
                token: None,
                call: Call::Login {
                    user: "alice".into(),
                    password: "pw".into(),
                    peer_addr: "127.0.0.1:7001".into(),
                    device_key: [6; 32],
                },
            },
            req(Call::Share {
                group: "g1".into(),
                meta: meta().into(),
                complete: true,
            }),
            req(Call::GetFile {
                group: "g1".into(),
                file: "a.iso".into(),
            }),
            req(Call::Heartbeat),
        ],
    );
    write_stream(
        &d("tracker_frames"),
        "responses",
        vec![
            tracker::Response::LoggedIn(tracker::LoginGrant {
                token: "tok".into(),
                user: "alice".into(),
                tracker_keys: vec![minitorr_proto::ticket::TicketKey {
                    public: [3; 32],
                    valid_until: Some(1_700_000_000),
                }],
                heartbeat_secs: 5,
                peer_addr: "127.0.0.1:7001".into(),
                relay: Some("0.0.0.0:5001".into()),
            }),
            tracker::Response::Files(vec![FileSummary {
                group: "g1".into(),
                name: "a.iso".into(),
                size: 40_000,
                piece_size: 16384,
                sha1: Sha1Hash([1; 20]),
                seeders_online: 1,
                partial_online: 0,
                file_count: 1,
                is_tree: false,
                piece_count: 3,
            }]),
            tracker::Response::File(Box::new(tracker::FileDetails {
                group: "g1".into(),
                meta: meta(),
                peers: vec![],
                ticket: ticket(),
            })),
            tracker::Response::err(tracker::ErrorCode::Forbidden, "not a member"),
        ],
    );

    let mut have = Bitfield::new(10);
    have.set(0);
    have.set(9);
    write_stream(
        &d("peer_frames"),
        "session",
        vec![
            PeerMsg::Hello { ticket: ticket() },
            PeerMsg::Welcome { have },
            PeerMsg::Request { piece: 1 },
            PeerMsg::Piece {
                piece: 1,
                data: Bytes::from_static(b"piece bytes, raw"),
            },
            PeerMsg::Have { piece: 2 },
            PeerMsg::NoPiece { piece: 3 },
        ],
    );

    for (i, link) in [Link::Control, Link::Tracker, Link::Peer]
        .into_iter()
        .enumerate()
    {
        let mut s = preamble(link, PROTOCOL_VERSION).to_vec();
        s.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        fs::write(d("handshake").join(format!("preamble-{i}")), s).unwrap();
    }

    let ti = d("tracker_info");
    fs::write(ti.join("seed"), "127.0.0.1\n5000\n127.0.0.1\n6000\n").unwrap();
    fs::write(
        ti.join("mixed"),
        "# main\n\n10.0.0.1:5000\n\n::1\n6000\n[fe80::1%2]:7\n",
    )
    .unwrap();

    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib");
    for (t, f) in [
        ("minitorrd_config", "minitorrd.toml"),
        ("trackerd_config", "trackerd.toml"),
    ] {
        fs::copy(contrib.join(f), d(t).join(f)).unwrap();
    }
}
