//! Every name a request carries is brought to Unicode NFC and checked (look-alike characters
//! refused) here, once, before any handler or the database sees it: `café` typed precomposed or
//! decomposed is one user, group or file, and no handler can forget the check.

use minitorr_proto::names::{self, NameError};
use minitorr_proto::tracker::{Call, ErrorCode};

use super::Fail;

fn bad(e: NameError) -> Fail {
    Fail::Client(ErrorCode::BadRequest, e.to_string())
}

fn user(s: &mut String) -> Result<(), Fail> {
    *s = names::user(s).map_err(bad)?;
    Ok(())
}

fn group(s: &mut String) -> Result<(), Fail> {
    *s = names::group(s).map_err(bad)?;
    Ok(())
}

fn device(s: &mut String) -> Result<(), Fail> {
    *s = names::device(s).map_err(bad)?;
    Ok(())
}

fn file(s: &mut String) -> Result<(), Fail> {
    *s = names::file_name(s).map_err(bad)?;
    Ok(())
}

/// A file name that may address an entry stored before names were normalised: kept as given
/// (the handler tries it, then its NFC form), checked only for the structural rules.
fn legacy_file(s: &str) -> Result<(), Fail> {
    names::validate_legacy_file_name(s).map_err(bad)
}

/// Normalise the names in `call` in place. No wildcard arm: a new call must decide.
pub(super) fn normalize(call: &mut Call) -> Result<(), Fail> {
    match call {
        Call::CreateUser { user: u, .. }
        | Call::Login { user: u, .. }
        | Call::DeviceChallenge { user: u, .. } => user(u),
        Call::DeviceLogin {
            user: u,
            device_name: d,
            ..
        } => {
            user(u)?;
            device(d)
        }
        Call::NameDevice { name: d } | Call::RevokeDevice { name: d } => device(d),
        Call::ListDevices | Call::LogoutDevice => Ok(()),
        Call::Logout
        | Call::ListGroups
        | Call::Heartbeat
        | Call::TicketKeys
        | Call::Subscribe { .. } => Ok(()),
        Call::CreateGroup { group: g }
        | Call::JoinGroup { group: g }
        | Call::LeaveGroup { group: g }
        | Call::ListRequests { group: g }
        | Call::ListFiles { group: g } => group(g),
        Call::AcceptRequest { group: g, user: u }
        | Call::RejectRequest { group: g, user: u }
        | Call::RemoveMember { group: g, user: u } => {
            group(g)?;
            user(u)
        }
        Call::Share { group: g, meta, .. } => {
            group(g)?;
            file(&mut std::sync::Arc::make_mut(meta).name)
        }
        Call::GetFile { group: g, file: f }
        | Call::GetHolders { group: g, file: f }
        | Call::ListItem { group: g, item: f }
        | Call::Punch {
            group: g, file: f, ..
        } => {
            group(g)?;
            file(f)
        }
        Call::StopShare { group: g, file: f } | Call::RemoveFile { group: g, file: f } => {
            group(g)?;
            legacy_file(f)
        }
    }
}
