//! `Request::Watch`: subscribe to the event bus, then snapshot the matching downloads — in
//! that order, so a download that completes between the two is seen in the snapshot or as an
//! event (possibly both), never in neither. The control socket streams the rest.
//!
//! Also the share events (`ShareAdded` / `ShareWithdrawn`), published where a complete share
//! starts or stops being served; download events are published by `Daemon::transition`.

use std::sync::Arc;

use minitorr_proto::control::{DownloadStatus, ErrorKind, EventFilter, EventKind, Request};

use super::{fail, names, Daemon, Reply};
use crate::events::Subscription;
use crate::sharing::SharedFile;

impl Daemon {
    /// Validate the filter, subscribe, snapshot. `req` must be a `Request::Watch`.
    pub fn watch(&self, mut req: Request) -> Reply<(Subscription, Vec<DownloadStatus>)> {
        names::normalize(&mut req)?;
        let Request::Watch { group, file } = req else {
            return Err(fail(
                ErrorKind::Internal,
                "watch called with another request",
            ));
        };
        let filter = EventFilter { group, file };
        let sub = self
            .bus
            .subscribe(filter.clone())
            .map_err(|e| fail(ErrorKind::Refused, e.to_string()))?;
        let downloads = self
            .download_list()
            .into_iter()
            .filter(|d| {
                filter.group.as_deref().is_none_or(|g| g == d.group)
                    && filter.file.as_deref().is_none_or(|f| f == d.file)
            })
            .collect();
        Ok((sub, downloads))
    }

    /// We serve `f` (complete) now.
    pub(crate) fn publish_share_added(&self, f: &SharedFile) {
        if !f.is_complete() {
            return;
        }
        self.bus.publish(EventKind::ShareAdded {
            group: f.group.clone(),
            file: f.meta.name.clone(),
            size: f.meta.size,
            sha1: f.meta.sha1,
        });
    }

    /// We no longer serve `file` in `group`.
    pub(crate) fn publish_withdrawn(&self, group: &str, file: &str, reason: &str) {
        self.bus.publish(EventKind::ShareWithdrawn {
            group: group.to_string(),
            file: file.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Stop serving every share of `group`, telling watchers of the complete ones.
    pub(crate) fn unshare_group(&self, group: &str, reason: &str) {
        let gone: Vec<Arc<SharedFile>> = self.shares.take_group(group);
        for f in gone.iter().filter(|f| f.is_complete()) {
            self.publish_withdrawn(group, &f.meta.name, reason);
        }
    }
}
