//! Items (issue #13): `list_files GROUP ITEM` — one item's files, asked of the tracker
//! (`ListItem`: the listing without piece hashes or a ticket, members only).

use minitorr_proto::control::Response;
use minitorr_proto::tracker::{self, Call};

use super::{unexpected, Daemon, Reply};

impl Daemon {
    pub(super) async fn list_item(&self, group: String, item: String) -> Reply<Response> {
        match self.call(Call::ListItem { group, item }).await? {
            tracker::Response::Item(listing) => Ok(Response::Item(listing)),
            other => Err(unexpected(other)),
        }
    }
}
