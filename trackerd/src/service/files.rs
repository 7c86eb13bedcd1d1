//! Files: list, share (within quotas), stop sharing, remove (owner), get details with peers
//! and a download ticket.

use minitorr_proto::names;
use minitorr_proto::ticket::{Ticket, TicketClaims};
use minitorr_proto::tracker::{ErrorCode, FileDetails, Holders, Response};
use minitorr_proto::types::{FileMeta, PeerInfo};

use super::{fail, valid, Caller, Fail, Outcome, Service};
use crate::store::{RemoveOutcome, ShareOutcome};

impl Service {
    /// `NotFound` for an unknown group, `Forbidden` for a non-member.
    async fn require_member(&self, caller: &Caller, group: &str) -> Result<(), Fail> {
        valid(names::validate_group(group))?;
        match self.store.group_state(group, &caller.session.user).await? {
            None => fail(ErrorCode::NotFound, format!("no group {group}")),
            Some(s) if !s.is_member => fail(
                ErrorCode::Forbidden,
                format!("you are not a member of {group}"),
            ),
            Some(_) => Ok(()),
        }
    }

    pub(super) async fn list_files(&self, caller: &Caller, group: &str) -> Outcome {
        self.require_member(caller, group).await?;
        Ok(Response::Files(
            self.store.list_files(group, self.online_since()).await?,
        ))
    }

    pub(super) async fn share(
        &self,
        caller: &Caller,
        group: &str,
        meta: FileMeta,
        complete: bool,
    ) -> Outcome {
        self.require_member(caller, group).await?;
        // The cheap bound first: the piece list is what makes an entry big in the database.
        let max_pieces = self.policy.max_pieces_per_file;
        if meta.pieces.len() as u64 > u64::from(max_pieces) {
            return fail(
                ErrorCode::QuotaExceeded,
                format!(
                    "quota exceeded: {} has {} pieces; this tracker allows at most {max_pieces} \
                     per file (use bigger pieces)",
                    meta.name,
                    meta.pieces.len()
                ),
            );
        }
        // A tree's check walks every path (up to 262,144 of them): off the async workers, so
        // other connections are not held up while it runs.
        let (meta, checked) = if meta.is_tree() {
            tokio::task::spawn_blocking(move || {
                let r = meta.check();
                (meta, r)
            })
            .await
            .map_err(|e| Fail::Other(format!("metadata check panicked: {e}")))?
        } else {
            let r = meta.check();
            (meta, r)
        };
        if let Err(e) = checked {
            return fail(ErrorCode::BadRequest, e);
        }
        if i64::try_from(meta.size).is_err() {
            return fail(
                ErrorCode::BadRequest,
                format!("file size {} is too large", meta.size),
            );
        }
        let user = &caller.session.user;
        let name = &meta.name;
        let now = self.now() as i64;
        let holder = PeerInfo {
            user: user.clone(),
            addr: caller.session.peer_addr.clone(),
            complete,
            device_key: caller.session.device_key,
        };
        match self.store.share_as(group, user, &meta, complete, now, &self.policy.quota, Some(&holder)).await? {
            // The membership was checked above; this means the user left in between.
            ShareOutcome::NotMember => fail(ErrorCode::Forbidden, format!("you are not a member of {group}")),
            ShareOutcome::DifferentSha1 => fail(
                ErrorCode::Conflict,
                format!(
                    "{group} already has {name} with a different SHA1; share yours under another \
                     name (upload_file --name), or ask the group's owner to remove it (remove_file)"
                ),
            ),
            ShareOutcome::DifferentKind => fail(
                ErrorCode::Conflict,
                format!(
                    "{group} already has {name} as {}; share yours under another name (upload_file --name)",
                    if meta.is_tree() { "a single file" } else { "a directory tree" }
                ),
            ),
            ShareOutcome::DifferentLayout => fail(
                ErrorCode::Conflict,
                format!("{group} already has {name} with the same SHA1 but a different size or piece size"),
            ),
            ShareOutcome::QuotaExceeded(q) => {
                tracing::info!(user, group, file = name, %q, "quota exceeded");
                fail(ErrorCode::QuotaExceeded, format!("quota exceeded: {q}"))
            }
            ShareOutcome::Shared => {
                tracing::debug!(user, group, file = name, complete, "shared");
                Ok(Response::ok(format!("sharing {name} in {group}")))
            }
        }
    }

    pub(super) async fn stop_share(&self, caller: &Caller, group: &str, file: &str) -> Outcome {
        // `file` may be a legacy (pre-NFC) spelling: try it as given, then normalised.
        let user = &caller.session.user;
        let mut stopped = self.store.stop_share(group, file, user).await?;
        if !stopped {
            if let Some(n) = nfc_if_different(file) {
                stopped = self.store.stop_share(group, &n, user).await?;
            }
        }
        if !stopped {
            return fail(
                ErrorCode::NotFound,
                format!("you are not sharing {file} in {group}"),
            );
        }
        Ok(Response::ok(format!("stopped sharing {file} in {group}")))
    }

    /// The group owner removes a file entry and all its shares, whoever registered it: a bogus
    /// registration (wrong hashes under a wanted name) must not block the real file for good.
    pub(super) async fn remove_file(&self, caller: &Caller, group: &str, file: &str) -> Outcome {
        let owner = &caller.session.user;
        let alt = nfc_if_different(file);
        match self.store.remove_file(group, owner, file, alt.as_deref()).await? {
            RemoveOutcome::NoGroup => fail(ErrorCode::NotFound, format!("no group {group}")),
            RemoveOutcome::NotOwner { .. } => fail(
                ErrorCode::Forbidden,
                format!(
                    "only the owner of {group} can remove its files; stop sharing yours with stop_share"
                ),
            ),
            RemoveOutcome::NoFile => fail(ErrorCode::NotFound, format!("{group} has no file {file}")),
            RemoveOutcome::Removed(removed) => {
                // The store wrote a `FileRemoved` event in the same transaction: the holders'
                // daemons stop serving it at once (and forget the share).
                tracing::info!(owner, group, file = removed.name, holders = ?removed.holders, "file removed by the group owner");
                let n = removed.holders.len();
                Ok(Response::ok(format!(
                    "removed {} from {group} ({n} holder{} dropped)",
                    removed.name,
                    if n == 1 { "" } else { "s" }
                )))
            }
        }
    }

    /// An item's listing (a tree's files and empty directories) for members, like `GetFile`
    /// without piece hashes, holders or a ticket.
    pub(super) async fn list_item(&self, caller: &Caller, group: &str, item: &str) -> Outcome {
        self.require_member(caller, group).await?;
        let Some(listing) = self.store.item(group, item).await? else {
            return fail(ErrorCode::NotFound, format!("{group} has no file {item}"));
        };
        Ok(Response::Item(Box::new(listing)))
    }

    pub(super) async fn get_file(&self, caller: &Caller, group: &str, file: &str) -> Outcome {
        self.require_member(caller, group).await?;
        valid(names::validate_file_name(file))?;
        let Some(meta) = self.store.file(group, file).await? else {
            return fail(ErrorCode::NotFound, format!("{group} has no file {file}"));
        };
        let (peers, ticket) = self
            .holders_and_ticket(caller, group, file, &meta.name, meta.sha1)
            .await?;
        Ok(Response::File(Box::new(FileDetails {
            group: group.to_string(),
            meta,
            peers,
            ticket,
        })))
    }

    /// The online holders of `file` (the caller's own session left out) and a download ticket
    /// for `ticket_name`/`sha1`, bound to the caller's device key: only a peer link
    /// authenticated with that key can use it.
    async fn holders_and_ticket(
        &self,
        caller: &Caller,
        group: &str,
        file: &str,
        ticket_name: &str,
        sha1: minitorr_proto::types::Sha1Hash,
    ) -> Result<(Vec<PeerInfo>, Ticket), Fail> {
        let peers = self
            .store
            .file_peers(group, file, self.online_since(), &caller.token_hash)
            .await?;
        let claims = TicketClaims {
            user: caller.session.user.clone(),
            group: group.to_string(),
            file_name: ticket_name.to_string(),
            file_sha1: sha1,
            issued_unix: self.now(),
            expires_unix: self.now() + self.timing.ticket_ttl_secs,
            device_key: caller.session.device_key,
        };
        Ok((peers, self.sign_ticket(claims)))
    }

    /// A running download's refresh: `get_file` without the metadata (a big tree's listing
    /// is neither loaded from the database nor sent).
    pub(super) async fn get_holders(&self, caller: &Caller, group: &str, file: &str) -> Outcome {
        self.require_member(caller, group).await?;
        valid(names::validate_file_name(file))?;
        let Some(sha1) = self.store.file_sha1(group, file).await? else {
            return fail(ErrorCode::NotFound, format!("{group} has no file {file}"));
        };
        let (peers, ticket) = self
            .holders_and_ticket(caller, group, file, file, sha1)
            .await?;
        Ok(Response::Holders(Box::new(Holders {
            group: group.to_string(),
            file: file.to_string(),
            sha1,
            peers,
            ticket,
        })))
    }

    /// Hole punching (issue #14): the caller cannot connect to the holder at `peer`; tell that
    /// holder (and nobody else) to connect to the caller at the same moment. Only members may
    /// ask, only for a session that holds the file now; the holder is sent the caller's
    /// address as this tracker sees it, never one the caller chose.
    pub(super) async fn punch(
        &self,
        caller: &Caller,
        group: &str,
        file: &str,
        peer: &str,
        nonce: [u8; 16],
    ) -> Outcome {
        self.require_member(caller, group).await?;
        if !self
            .punches
            .lock()
            .expect("lock")
            .take(&caller.session.user, self.now())
        {
            return fail(
                ErrorCode::RateLimited,
                format!(
                    "too many hole punches: at most {} per {} s",
                    super::punch_budget::PER_WINDOW,
                    super::punch_budget::WINDOW_SECS
                ),
            );
        }
        let holders = self
            .store
            .file_peers(group, file, self.online_since(), &caller.token_hash)
            .await?;
        let Some(holder) = holders.into_iter().find(|h| h.addr == peer) else {
            return fail(
                ErrorCode::NotFound,
                format!("{peer} is not an online holder of {file} in {group}"),
            );
        };
        let from = PeerInfo {
            user: caller.session.user.clone(),
            addr: caller.session.peer_addr.clone(),
            complete: false,
            device_key: caller.session.device_key,
        };
        self.store
            .punch_request(group, file, &holder, from, nonce)
            .await?;
        tracing::debug!(user = %caller.session.user, group, file, holder = %holder.addr, "punch requested");
        Ok(Response::ok(format!("asked {} to connect", holder.addr)))
    }
}

/// The NFC form of `name`, if it differs (a legacy name typed as stored, or not).
fn nfc_if_different(name: &str) -> Option<String> {
    let n = names::nfc(name);
    (n != name).then_some(n)
}
