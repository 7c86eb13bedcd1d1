//! Domain values shared by several links.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A SHA1 digest (whole file or one piece).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Sha1Hash(pub [u8; 20]);

impl Sha1Hash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 10 hex digits, for human output.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..5])
    }
}

impl fmt::Display for Sha1Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha1Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha1({})", self.short())
    }
}

impl FromStr for Sha1Hash {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Sha1Hash(out))
    }
}

/// Everything needed to download and verify an item (a single file or a directory tree, see
/// [`crate::item`]): registered with the tracker by a sharer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FileMeta {
    /// The item's name (one file-name component).
    pub name: String,
    /// Total bytes (all files of a tree).
    pub size: u64,
    pub piece_size: u32,
    /// A single file: SHA1 of its bytes. A tree: [`crate::item::Tree::digest`].
    pub sha1: Sha1Hash,
    /// Every piece's SHA1, file by file (each file starts a new piece; see [`crate::item`]).
    pub pieces: Vec<Sha1Hash>,
    /// `None`: the item is one file called `name`; `Some`: a directory tree called `name`.
    /// (`default` keeps state files written before trees existed readable.)
    #[serde(default)]
    pub tree: Option<crate::item::Tree>,
}

impl FileMeta {
    /// Number of pieces a file of `size` bytes has with `piece_size` pieces (0 for empty files).
    pub fn piece_count_for(size: u64, piece_size: u32) -> u32 {
        size.div_ceil(piece_size as u64) as u32
    }

    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// True if the item is a directory tree rather than one file.
    pub fn is_tree(&self) -> bool {
        self.tree.is_some()
    }

    /// Number of regular files (1 for a single-file item).
    pub fn file_count(&self) -> usize {
        self.tree.as_ref().map_or(1, |t| t.file_count())
    }

    /// Byte offset of piece `i` in a **single-file** item (a tree's pieces are located with
    /// [`crate::item::Layout`]).
    pub fn piece_offset(&self, i: u32) -> u64 {
        debug_assert!(
            self.tree.is_none(),
            "piece_offset of a tree; use item::Layout"
        );
        i as u64 * self.piece_size as u64
    }

    /// Length of piece `i` (the last piece of each file may be short). O(1) for a single
    /// file; a tree builds its [`crate::item::Layout`] — hot paths keep one instead.
    pub fn piece_len(&self, i: u32) -> u32 {
        match self.tree {
            None => {
                let start = self.piece_offset(i);
                (self.size - start).min(self.piece_size as u64) as u32
            }
            Some(_) => crate::item::Layout::new(self).piece_len(i),
        }
    }

    /// Internal consistency: piece count matches size, sizes within protocol limits.
    pub fn check(&self) -> Result<(), String> {
        crate::names::validate_file_name(&self.name).map_err(|e| e.to_string())?;
        if !(crate::MIN_PIECE_SIZE..=crate::MAX_PIECE_SIZE).contains(&self.piece_size) {
            return Err(format!(
                "piece size {} is outside the allowed range",
                self.piece_size
            ));
        }
        if self.pieces.len() > crate::item::MAX_ITEM_PIECES {
            return Err(format!(
                "{} piece hashes; at most {} are allowed",
                self.pieces.len(),
                crate::item::MAX_ITEM_PIECES
            ));
        }
        if let Some(tree) = &self.tree {
            crate::item::check_tree_meta(self, tree).map_err(|e| e.to_string())?;
            let want = crate::item::tree_piece_count(tree, self.piece_size);
            if want != self.pieces.len() as u64 {
                return Err(format!(
                    "{} piece hashes for a tree that needs {want} with {}-byte pieces",
                    self.pieces.len(),
                    self.piece_size
                ));
            }
            return Ok(());
        }
        if Self::piece_count_for(self.size, self.piece_size) as usize != self.pieces.len() {
            return Err(format!(
                "{} piece hashes for a {}-byte file with {}-byte pieces",
                self.pieces.len(),
                self.size,
                self.piece_size
            ));
        }
        Ok(())
    }
}

/// One file as listed in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FileSummary {
    pub group: String,
    pub name: String,
    pub size: u64,
    pub piece_size: u32,
    pub sha1: Sha1Hash,
    /// Peers online that hold the complete file.
    pub seeders_online: u32,
    /// Peers online that hold part of it (downloading and sharing what they have).
    pub partial_online: u32,
    /// Regular files in the item (1 for a single file; a tree may have 0).
    pub file_count: u64,
    /// The item is a directory tree (`list_files GROUP ITEM` lists its files).
    pub is_tree: bool,
    /// Pieces of the whole item (a tree's files each start a new piece, so this is not
    /// derivable from `size`).
    pub piece_count: u32,
}

/// One group as listed by `list_groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupSummary {
    pub name: String,
    pub owner: String,
    pub members: u32,
    pub files: u32,
    /// The asking user's relation to the group.
    pub membership: Membership,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Membership {
    None,
    Pending,
    Member,
    Owner,
}

/// A peer that holds (part of) a file, as the tracker hands it to a downloader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PeerInfo {
    pub user: String,
    /// `ip:port` where that peer's minitorrd serves pieces.
    pub addr: String,
    pub complete: bool,
    /// The holder's device key (Ed25519 public key) as recorded at its login: the downloader
    /// accepts the TLS peer link only if the holder proves possession of exactly this key.
    pub device_key: [u8; 32],
}

/// Which pieces a peer holds. Bit `i` is `bits[i / 8] & (0x80 >> (i % 8))` (BitTorrent order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Bitfield {
    len: u32,
    bits: Vec<u8>,
}

impl Bitfield {
    pub fn new(len: u32) -> Self {
        Bitfield {
            len,
            bits: vec![0; (len as usize).div_ceil(8)],
        }
    }

    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the encoded form is consistent (a peer could send anything).
    pub fn is_well_formed(&self) -> bool {
        self.bits.len() == (self.len as usize).div_ceil(8)
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len
            && self
                .bits
                .get(i as usize / 8)
                .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
    }

    pub fn set(&mut self, i: u32) {
        if i < self.len {
            self.bits[i as usize / 8] |= 0x80 >> (i % 8);
        }
    }

    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.bits[i as usize / 8] &= !(0x80 >> (i % 8));
        }
    }

    pub fn count(&self) -> u32 {
        (0..self.len).filter(|&i| self.get(i)).count() as u32
    }

    pub fn is_complete(&self) -> bool {
        self.count() == self.len
    }

    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_geometry() {
        let m = FileMeta {
            name: "a".into(),
            size: 1_000_001,
            piece_size: 500_000,
            sha1: Sha1Hash([0; 20]),
            pieces: vec![Sha1Hash([0; 20]); 3],
            tree: None,
        };
        assert_eq!(FileMeta::piece_count_for(m.size, m.piece_size), 3);
        assert_eq!(m.piece_len(0), 500_000);
        assert_eq!(m.piece_len(2), 1);
        assert_eq!(FileMeta::piece_count_for(0, 512), 0);
    }

    #[test]
    fn bitfield_ops() {
        let mut b = Bitfield::new(10);
        assert!(!b.get(9));
        b.set(9);
        b.set(0);
        b.set(10); // out of range: ignored
        assert!(b.get(9) && b.get(0) && !b.get(10));
        b.clear(0);
        assert!(!b.get(0));
        b.set(0);
        assert_eq!(b.count(), 2);
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 9]);
        assert!(Bitfield::full(10).is_complete());
    }

    #[test]
    fn sha1_hex_round_trip() {
        let h = Sha1Hash([0xab; 20]);
        assert_eq!(h.to_hex().parse::<Sha1Hash>().unwrap(), h);
        assert_eq!(h.short(), "ababababab");
    }
}

/// One device (a daemon's key) registered for a user by a password login, as `devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DeviceInfo {
    /// The device's name (the daemon's `device_name`, unique per user).
    pub name: String,
    /// The device's Ed25519 public key.
    pub device_key: [u8; 32],
    /// Unix seconds (tracker clock): first registration, and last login or heartbeat.
    pub created_unix: u64,
    pub last_seen_unix: u64,
    /// Where its last login came from (the peer address the tracker handed out).
    pub last_addr: String,
    /// A session of it is online now.
    pub online: bool,
    pub state: DeviceState,
    /// The device of the session asking (the daemon answering `devices`).
    pub current: bool,
}

/// Whether a device may log in by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum DeviceState {
    /// Automatic (device-key) login allowed.
    Active,
    /// Revoked by `revoke_device`: refused until a password login on it.
    Revoked,
    /// Logged out by `logout`: refused until a password login on it.
    LoggedOut,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Revoked => "revoked",
            DeviceState::LoggedOut => "logged_out",
        }
    }
}

/// An item's listing without its piece hashes (`ListItem`, `list_files GROUP ITEM`): what it
/// is, and for a tree every file and empty directory in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ItemListing {
    pub group: String,
    pub name: String,
    /// Total bytes (all files of a tree).
    pub size: u64,
    pub piece_size: u32,
    pub piece_count: u32,
    /// A single file: SHA1 of its bytes; a tree: [`crate::item::Tree::digest`].
    pub sha1: Sha1Hash,
    /// `None`: the item is one file called `name`; `Some`: its directory tree.
    pub tree: Option<crate::item::Tree>,
}

impl ItemListing {
    /// The listing of `meta` (its piece hashes left out).
    pub fn of(group: &str, meta: &FileMeta) -> Self {
        ItemListing {
            group: group.to_string(),
            name: meta.name.clone(),
            size: meta.size,
            piece_size: meta.piece_size,
            piece_count: meta.piece_count(),
            sha1: meta.sha1,
            tree: meta.tree.clone(),
        }
    }

    /// Regular files (1 for a single file).
    pub fn file_count(&self) -> usize {
        self.tree.as_ref().map_or(1, |t| t.file_count())
    }
}
