//! The relay's questions to the tracker's state (the relay itself is trackerd/src/relay/): who
//! a device key speaks for, and whether two users may be joined.

use super::Service;
use crate::store::StoreError;

impl Service {
    /// The user whose *online* session (heartbeat within the peer timeout) is on `device_key`:
    /// a relay connection signed by that key acts for that user. `None`: an outsider, a
    /// logged-out or revoked device, or a daemon that stopped heartbeating.
    pub async fn relay_identity(
        &self,
        device_key: &[u8; 32],
    ) -> Result<Option<String>, StoreError> {
        self.store
            .online_user_of_device(device_key, self.online_since())
            .await
    }

    /// Whether a relay may join `downloader` to `holder`: only members of a common group
    /// (the only ones who could exchange files anyway), so the relay cannot be used to reach
    /// strangers' daemons, and a removed member loses the relay with the group.
    pub async fn relay_may_join(&self, downloader: &str, holder: &str) -> Result<bool, StoreError> {
        self.store.share_a_group(downloader, holder).await
    }
}
