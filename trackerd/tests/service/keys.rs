//! Ticket-signing keys: only public keys in the database, rotation with an overlap, several
//! trackers on one database, and moving a key an older trackerd stored in the database.

use ed25519_dalek::SigningKey;
use minitorr_proto::ticket::{Ticket, TicketClaims, TicketError, TicketKey};
use minitorr_proto::tracker::{Call, Response};
use trackerd::keys::{self, KeyError, KeySource};
use trackerd::store::PublicKeyRow;

use super::*;

fn new_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

async fn ticket_keys(h: &Harness, token: &str) -> Vec<TicketKey> {
    match h.call(Some(token), Call::TicketKeys).await {
        Response::TicketKeys(k) => k,
        other => panic!("{other:?}"),
    }
}

async fn ticket(h: &Harness, token: &str) -> Ticket {
    match h
        .call(
            Some(token),
            Call::GetFile {
                group: "g1".into(),
                file: "a.iso".into(),
            },
        )
        .await
    {
        Response::File(d) => d.ticket,
        other => panic!("{other:?}"),
    }
}

/// alice and bob in g1, bob shares a.iso; returns (alice, bob).
async fn setup(h: &Harness) -> (String, String) {
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&bob, share("g1", meta("a.iso", 40_000, 5), true))
        .await;
    (alice, bob)
}

/// On SQLite: the database file and its WAL (what a backup copies) contain neither the hex
/// nor the raw bytes of `secret`. PostgreSQL is checked through the tables instead.
fn assert_not_in_sqlite_files(h: &Harness, secret: &SigningKey) {
    if !h.url.starts_with("sqlite:") {
        return;
    }
    let hex_secret = hex::encode(secret.to_bytes());
    for name in ["tracker.db", "tracker.db-wal"] {
        let Ok(bytes) = std::fs::read(h.dir.path().join(name)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(!text.contains(&hex_secret), "{name} holds the secret (hex)");
        assert!(
            !bytes.windows(32).any(|w| w == secret.to_bytes()),
            "{name} holds the secret (raw)"
        );
    }
}

fn far_claims() -> TicketClaims {
    TicketClaims {
        user: "mallory".into(),
        group: "g1".into(),
        file_name: "a.iso".into(),
        file_sha1: meta("a.iso", 40_000, 5).sha1,
        expires_unix: u64::MAX,
        issued_unix: 0,
        device_key: [1; 32],
    }
}

#[tokio::test]
async fn the_database_holds_only_public_keys() {
    let h = Harness::new().await;
    let (alice, _bob) = setup(&h).await;
    let store = h.svc.store();
    assert_eq!(store.legacy_signing_key().await.unwrap(), None);
    let public = h.key.verifying_key().to_bytes();
    assert_eq!(
        store.valid_ticket_keys(h.now() as i64).await.unwrap(),
        vec![PublicKeyRow {
            public_hex: hex::encode(public),
            retire_at: None
        }]
    );
    assert_eq!(
        ticket_keys(&h, &alice).await,
        vec![TicketKey {
            public,
            valid_until: None
        }]
    );
    h.svc.store().close().await;
    assert_not_in_sqlite_files(&h, &h.key);
}

#[tokio::test]
async fn rotation_keeps_old_tickets_valid_for_the_overlap_then_retires_the_old_key() {
    let h = Harness::new().await;
    let (alice, bob) = setup(&h).await;
    let path = h.dir.path().join("ticket-signing.key");
    keys::write_new_key_file(&path, &h.key).unwrap();
    let old_public = h.key.verifying_key().to_bytes();
    let before = ticket(&h, &alice).await;
    assert_eq!(before.key, old_public);

    let r = keys::rotate(
        h.svc.store(),
        &KeySource::File(path.clone()),
        h.now(),
        3600,
        3600,
    )
    .await
    .unwrap();
    assert_eq!(r.old, old_public);
    assert_eq!(r.old_valid_until, h.now() + 3600);
    let new_key = keys::read_key_file(&path, false).unwrap();
    assert_eq!(new_key.verifying_key().to_bytes(), r.new);

    // Until the service picks up the new file, it signs with the old key, but never past the
    // old key's retirement.
    h.advance(1000);
    h.svc.refresh_signer().await.unwrap();
    let late_old = ticket(&h, &alice).await;
    assert_eq!(late_old.key, old_public);
    assert_eq!(late_old.claims.expires_unix, r.old_valid_until);

    h.svc.use_signing_key(new_key).await.unwrap();
    let after = ticket(&h, &alice).await;
    assert_eq!(after.key, r.new);
    assert_eq!(after.claims.expires_unix, h.now() + 3600);

    // The seeder's list: both keys, the old one with its end.
    let mut list = ticket_keys(&h, &bob).await;
    list.sort_by_key(|k| k.valid_until.is_none());
    assert_eq!(
        list,
        vec![
            TicketKey {
                public: old_public,
                valid_until: Some(r.old_valid_until)
            },
            TicketKey {
                public: r.new,
                valid_until: None
            }
        ]
    );
    for t in [&before, &late_old, &after] {
        t.verify_with(&list, h.now()).unwrap();
    }

    // After the overlap the old key is gone from the list, and a list fetched earlier knows
    // it is retired: an old-key ticket with any expiry is refused.
    h.advance(3600 - 1000 + 1);
    let list2 = ticket_keys(&h, &bob).await;
    assert_eq!(
        list2,
        vec![TicketKey {
            public: r.new,
            valid_until: None
        }]
    );
    let forged = Ticket::sign(far_claims(), &h.key);
    assert_eq!(
        forged.verify_with(&list2, h.now()),
        Err(TicketError::UnknownKey)
    );
    assert_eq!(
        forged.verify_with(&list, h.now()),
        Err(TicketError::RetiredKey)
    );
    after.verify_with(&list2, h.now()).unwrap();

    // The retired key file is refused at the next start.
    let old_copy = h.dir.path().join("old.key");
    keys::write_new_key_file(&old_copy, &h.key).unwrap();
    let e = keys::load_signing_key(h.svc.store(), &KeySource::File(old_copy), h.now(), 3600)
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::Retired { .. }), "{e}");
    assert!(e.to_string().contains("rotate-key"), "{e}");
}

#[tokio::test]
async fn rotation_refuses_without_a_key_file() {
    let h = Harness::new().await;
    let missing = h.dir.path().join("none.key");
    let e = keys::rotate(h.svc.store(), &KeySource::File(missing), h.now(), 60, 60)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no ticket-signing key file"), "{e}");
}

#[tokio::test]
async fn two_trackers_on_one_database_accept_each_others_tickets() {
    let h = Harness::new().await;
    let (alice, _) = setup(&h).await;
    // bob (the seeder) logs in at tracker 1 before tracker 2 exists.
    let grant = h.login_at("bob", "127.0.0.1:7003").await;
    assert_eq!(grant.tracker_keys.len(), 1);

    let key2 = new_key();
    let svc2 = open(&h.url, &h.clock, &key2, h.policy).await;
    let t2 = match svc2
        .handle(
            Request {
                token: Some(alice.clone()),
                call: Call::GetFile {
                    group: "g1".into(),
                    file: "a.iso".into(),
                },
            },
            LOCAL,
        )
        .await
    {
        Response::File(d) => d.ticket,
        other => panic!("{other:?}"),
    };
    assert_eq!(t2.key, key2.verifying_key().to_bytes());
    // Unknown to bob's login-time list: that is what makes the seeder refresh...
    assert_eq!(
        t2.verify_with(&grant.tracker_keys, h.now()),
        Err(TicketError::UnknownKey)
    );
    // ...and the refreshed list, from either tracker, has both keys.
    let list = ticket_keys(&h, &grant.token).await;
    assert_eq!(list.len(), 2);
    t2.verify_with(&list, h.now()).unwrap();
    ticket(&h, &alice)
        .await
        .verify_with(&list, h.now())
        .unwrap();
    svc2.store().close().await;
}

async fn plant_legacy_key(h: &Harness, secret: &SigningKey) {
    sqlx::query("INSERT INTO tracker_key (id, secret_hex, created) VALUES (1, $1, 0)")
        .bind(hex::encode(secret.to_bytes()))
        .execute(h.svc.store().pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_stored_in_the_database_moves_to_the_key_file() {
    let h = Harness::new().await;
    let legacy = new_key();
    plant_legacy_key(&h, &legacy).await;
    let path = h.dir.path().join("state/ticket-signing.key");
    let store = h.svc.store();
    let key = keys::load_signing_key(store, &KeySource::File(path.clone()), h.now(), 3600)
        .await
        .unwrap();
    assert_eq!(
        key.to_bytes(),
        legacy.to_bytes(),
        "the same key keeps signing"
    );
    assert_eq!(
        keys::read_key_file(&path, false).unwrap().to_bytes(),
        legacy.to_bytes()
    );
    assert_eq!(store.legacy_signing_key().await.unwrap(), None);
    assert!(store
        .valid_ticket_keys(h.now() as i64)
        .await
        .unwrap()
        .contains(&PublicKeyRow {
            public_hex: hex::encode(legacy.verifying_key().to_bytes()),
            retire_at: None
        }));
    store.close().await;
    assert_not_in_sqlite_files(&h, &legacy);
}

#[tokio::test]
async fn a_key_in_the_database_beside_an_existing_key_file_only_verifies_old_tickets() {
    let h = Harness::new().await;
    let legacy = new_key();
    plant_legacy_key(&h, &legacy).await;
    let path = h.dir.path().join("ticket-signing.key");
    keys::write_new_key_file(&path, &h.key).unwrap();
    let store = h.svc.store();
    let key = keys::load_signing_key(store, &KeySource::File(path), h.now(), 3600)
        .await
        .unwrap();
    assert_eq!(key.to_bytes(), h.key.to_bytes(), "the key file wins");
    assert_eq!(store.legacy_signing_key().await.unwrap(), None);
    assert_eq!(
        store
            .ticket_key(&hex::encode(legacy.verifying_key().to_bytes()))
            .await
            .unwrap(),
        Some(Some((h.now() + 3600) as i64)),
        "tickets it signed verify until they expire, no longer"
    );
}
