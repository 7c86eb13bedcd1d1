//! Validation of user, group and file names. Names travel into databases, file names and
//! terminal output, so they are checked once, here, by every side.

use thiserror::Error;

pub const MAX_ID_LEN: usize = 64;
pub const MAX_FILE_NAME_LEN: usize = 255;
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} name may not contain {what}")]
    BadChar {
        kind: &'static str,
        what: &'static str,
    },
    #[error("{kind} name may not be '.' or '..'")]
    Dots { kind: &'static str },
}

fn check(kind: &'static str, s: &str, max: usize, allow_space: bool) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if s.len() > max {
        return Err(NameError::TooLong { kind, max });
    }
    if s == "." || s == ".." {
        return Err(NameError::Dots { kind });
    }
    for c in s.chars() {
        let what = match c {
            '/' | '\\' => "path separators",
            '\0' => "NUL bytes",
            c if c.is_control() => "control characters",
            c if c.is_whitespace() && !allow_space => "whitespace",
            _ => continue,
        };
        return Err(NameError::BadChar { kind, what });
    }
    Ok(())
}

/// A user id: 1–64 bytes, no whitespace, separators or control characters.
pub fn validate_user(s: &str) -> Result<(), NameError> {
    check("user", s, MAX_ID_LEN, false)
}

/// A group id: same rules as user ids.
pub fn validate_group(s: &str) -> Result<(), NameError> {
    check("group", s, MAX_ID_LEN, false)
}

/// A shared file's name: 1–255 bytes (one path component), spaces and unicode allowed.
pub fn validate_file_name(s: &str) -> Result<(), NameError> {
    check("file", s, MAX_FILE_NAME_LEN, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_unicode_names() {
        validate_user("alice").unwrap();
        validate_group("team-42_x.y").unwrap();
        validate_file_name("Résumé 2026 (final).pdf").unwrap();
        validate_file_name("日本語のファイル.iso").unwrap();
    }

    #[test]
    fn refuses_dangerous_names() {
        assert!(validate_file_name("../etc/passwd").is_err());
        assert!(validate_file_name("a/b").is_err());
        assert!(validate_file_name("..").is_err());
        assert!(validate_file_name("a\0b").is_err());
        assert!(validate_file_name("a\nb").is_err());
        assert!(validate_file_name(&"x".repeat(256)).is_err());
        assert!(validate_user("").is_err());
        assert!(validate_user("al ice").is_err());
        assert!(validate_group(&"g".repeat(65)).is_err());
    }
}
