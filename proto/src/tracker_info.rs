//! The seed's `tracker_info.txt`: one tracker per two lines (IP, then port), in preference order.
//! Blank lines and `#` comments are ignored; `IP:PORT` on a single line is accepted too.

use std::net::SocketAddr;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrackerInfoError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {msg}")]
    Parse {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("{path} lists no tracker")]
    Empty { path: String },
}

/// Parse tracker_info text. `path` is only used in error messages.
pub fn parse(text: &str, path: &str) -> Result<Vec<SocketAddr>, TrackerInfoError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let perr = |line: usize, msg: String| TrackerInfoError::Parse {
        path: path.to_string(),
        line,
        msg,
    };
    let mut out = vec![];
    let mut i = 0;
    while i < lines.len() {
        let (n, l) = lines[i];
        if let Ok(addr) = l.parse::<SocketAddr>() {
            out.push(addr);
            i += 1;
            continue;
        }
        let ip: std::net::IpAddr = l
            .parse()
            .map_err(|_| perr(n, format!("'{l}' is not an IP address")))?;
        let (pn, p) = *lines
            .get(i + 1)
            .ok_or_else(|| perr(n, "IP address without a port line".into()))?;
        let port: u16 = p
            .parse()
            .map_err(|_| perr(pn, format!("'{p}' is not a port number")))?;
        out.push(SocketAddr::new(ip, port));
        i += 2;
    }
    if out.is_empty() {
        return Err(TrackerInfoError::Empty {
            path: path.to_string(),
        });
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<Vec<SocketAddr>, TrackerInfoError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TrackerInfoError::Read {
        path: p.clone(),
        source,
    })?;
    parse(&text, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_format() {
        let v = parse("127.0.0.1\n5000\n127.0.0.1\n6000\n", "t").unwrap();
        assert_eq!(
            v,
            vec![
                "127.0.0.1:5000".parse().unwrap(),
                "127.0.0.1:6000".parse().unwrap()
            ]
        );
    }

    #[test]
    fn comments_blank_lines_and_combined_form() {
        let v = parse("# main\n\n10.0.0.1:5000\n\n::1\n6000\n", "t").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], "[::1]:6000".parse().unwrap());
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("127.0.0.1\nfoo\n", "t.txt").unwrap_err().to_string();
        assert_eq!(e, "t.txt line 2: 'foo' is not a port number");
        assert!(parse("127.0.0.1\n", "t").is_err());
        assert!(parse("# nothing\n", "t").is_err());
    }
}
