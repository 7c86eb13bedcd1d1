//! `Request::Watch`: subscribe to the event bus, then snapshot the matching downloads — in
//! that order, so a download that completes between the two is seen in the snapshot or as an
//! event (possibly both), never in neither. The control socket streams the rest.

use minitorr_proto::control::{DownloadStatus, ErrorKind, EventFilter, Request, Response};

use super::{fail, names, Daemon, Reply};
use crate::events::Subscription;

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
        let downloads = match self.show_downloads() {
            Response::Downloads(list) => list
                .into_iter()
                .filter(|d| {
                    filter.group.as_deref().is_none_or(|g| g == d.group)
                        && filter.file.as_deref().is_none_or(|f| f == d.file)
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((sub, downloads))
    }
}
