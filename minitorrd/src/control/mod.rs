//! The Unix-domain control socket that minitorrctl talks to.

mod peercred;
mod socket;

pub use peercred::authorize;
pub use socket::{bind_control_socket, serve_control, SocketError};
