//! Getting a password that was not given on the command line (arguments show up in `ps`).
//! On a terminal: prompt without echo. Otherwise: one line from stdin, so scripts can pipe it.

use std::io::{BufRead, IsTerminal};

use crate::exit::Failure;

/// Where passwords come from; a trait so command planning is testable without a terminal.
pub trait PasswordSource {
    /// `confirm`: ask twice (new accounts), since a typo would lock the user out.
    fn password(&mut self, user: &str, confirm: bool) -> Result<String, Failure>;
}

/// The real source: the controlling terminal, or stdin when it is not one.
pub struct Interactive;

impl PasswordSource for Interactive {
    fn password(&mut self, user: &str, confirm: bool) -> Result<String, Failure> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return read_line(&mut stdin.lock());
        }
        let prompt_err =
            |e: std::io::Error| Failure::usage(format!("cannot read the password: {e}"));
        let pw =
            rpassword::prompt_password(format!("Password for {user}: ")).map_err(prompt_err)?;
        if confirm {
            let again = rpassword::prompt_password("Repeat the password: ").map_err(prompt_err)?;
            if again != pw {
                return Err(Failure::usage("the passwords do not match"));
            }
        }
        if pw.is_empty() {
            return Err(Failure::usage("empty password"));
        }
        Ok(pw)
    }
}

/// One line, without its line ending; everything else (spaces included) is the password.
pub fn read_line(input: &mut dyn BufRead) -> Result<String, Failure> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("cannot read the password from stdin: {e}")))?;
    if line.is_empty() {
        return Err(Failure::usage(
            "no password given and stdin is empty; pass it as an argument or pipe it on stdin",
        ));
    }
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err(Failure::usage("empty password"));
    }
    Ok(pw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Status;

    #[test]
    fn reads_one_line_keeping_spaces() {
        assert_eq!(
            read_line(&mut &b" pass word \nnext\n"[..]).unwrap(),
            " pass word "
        );
        assert_eq!(read_line(&mut &b"crlf\r\n"[..]).unwrap(), "crlf");
        assert_eq!(read_line(&mut &b"no-newline"[..]).unwrap(), "no-newline");
    }

    #[test]
    fn empty_input_is_a_usage_error() {
        assert_eq!(read_line(&mut &b""[..]).unwrap_err().status, Status::Usage);
        assert_eq!(
            read_line(&mut &b"\n"[..]).unwrap_err().status,
            Status::Usage
        );
    }
}
