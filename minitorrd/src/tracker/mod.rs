//! The daemon's side of the tracker link: one persistent connection, failover across the
//! configured trackers, and the session (token) kept for the logged-in user.

mod events;
mod keys;
mod link;
mod session;
pub mod tls;

pub use events::subscribe_events;
pub use keys::TicketKeys;
pub use link::{BoxedStream, Connector, TrackerError, TrackerLink, TrackerStream};
pub use session::Session;
pub use tls::TlsClient;
