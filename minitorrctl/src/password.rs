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
        ask(&mut |p| rpassword::prompt_password(p), user, confirm)
    }
}

/// The terminal dialogue, with the prompt injectable for tests. An empty password is refused
/// at once, not after being asked to repeat it.
fn ask(
    prompt: &mut dyn FnMut(&str) -> std::io::Result<String>,
    user: &str,
    confirm: bool,
) -> Result<String, Failure> {
    let prompt_err = |e: std::io::Error| Failure::usage(format!("cannot read the password: {e}"));
    let pw = prompt(&format!("Password for {user}: ")).map_err(prompt_err)?;
    if pw.is_empty() {
        return Err(Failure::usage("empty password"));
    }
    if confirm {
        let again = prompt("Repeat the password: ").map_err(prompt_err)?;
        if again != pw {
            return Err(Failure::usage("the passwords do not match"));
        }
    }
    Ok(pw)
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
    fn empty_password_is_refused_before_asking_again() {
        let mut asked = Vec::new();
        let mut answers = vec![String::new(), String::new()].into_iter();
        let mut prompt = |p: &str| {
            asked.push(p.to_owned());
            Ok(answers.next().unwrap())
        };
        let e = ask(&mut prompt, "alice", true).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (Status::Usage, "empty password")
        );
        assert_eq!(asked, ["Password for alice: "], "asked once only");

        let mut asked = 0;
        let mut prompt = |_: &str| {
            asked += 1;
            Ok("pw".to_owned())
        };
        assert_eq!(ask(&mut prompt, "alice", true).unwrap(), "pw");
        assert_eq!(asked, 2, "a new account's password is confirmed");
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
