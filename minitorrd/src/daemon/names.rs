//! Names in a control request are brought to Unicode NFC and checked (look-alike characters
//! refused) once, before any command runs, with the same rules the CLI and the tracker apply:
//! a script talking to the socket directly gets the same answers as minitorrctl.

use minitorr_proto::control::{ErrorKind, ErrorReply, RemoveDownloads, Request};
use minitorr_proto::names::{self, NameError};

use super::fail;

fn bad(e: NameError) -> ErrorReply {
    fail(ErrorKind::InvalidInput, e.to_string())
}

fn norm(s: &mut String, f: fn(&str) -> Result<String, NameError>) -> Result<(), ErrorReply> {
    *s = f(s).map_err(bad)?;
    Ok(())
}

/// Normalise the names in `req` in place. No wildcard arm: a new request must decide.
pub(super) fn normalize(req: &mut Request) -> Result<(), ErrorReply> {
    match req {
        Request::CreateUser { user, .. } | Request::Login { user, .. } => norm(user, names::user),
        Request::Logout
        | Request::ListGroups
        | Request::ShowDownloads
        | Request::Status
        | Request::Devices
        | Request::ListShares => Ok(()),
        Request::RevokeDevice { name } => norm(name, names::device),
        Request::RemoveDownload {
            which: RemoveDownloads::Failed | RemoveDownloads::Complete,
        } => Ok(()),

        Request::CreateGroup { group }
        | Request::JoinGroup { group }
        | Request::LeaveGroup { group }
        | Request::ListRequests { group }
        | Request::ListFiles { group } => norm(group, names::group),
        Request::AcceptRequest { group, user }
        | Request::RejectRequest { group, user }
        | Request::RemoveMember { group, user } => {
            norm(group, names::group)?;
            norm(user, names::user)
        }
        Request::UploadFile { group, name, .. } => {
            norm(group, names::group)?;
            match name {
                Some(n) => norm(n, names::file_name),
                None => Ok(()),
            }
        }
        Request::DownloadFile { group, file, .. }
        | Request::CancelDownload { group, file, .. }
        | Request::PauseDownload { group, file }
        | Request::ResumeDownload { group, file }
        | Request::RemoveDownload {
            which: RemoveDownloads::One { group, file },
        }
        | Request::ListItem { group, item: file } => {
            norm(group, names::group)?;
            norm(file, names::file_name)
        }
        // May name an entry stored before names were normalised: passed on as typed (the
        // tracker tries it, then its NFC form); only the structural rules apply.
        Request::StopShare { group, file } | Request::RemoveFile { group, file } => {
            norm(group, names::group)?;
            names::validate_legacy_file_name(file).map_err(bad)
        }
        Request::Watch { group, file } => {
            if let Some(g) = group {
                norm(g, names::group)?;
            } else if file.is_some() {
                return Err(fail(
                    ErrorKind::InvalidInput,
                    "a watch filter naming a file needs its group",
                ));
            }
            match file {
                Some(f) => norm(f, names::file_name),
                None => Ok(()),
            }
        }
    }
}
