//! Validation of user, group and file names. Names travel into databases, file names and
//! terminal output, so they are checked once, here, by every side (minitorrctl, minitorrd and
//! trackerd).
//!
//! A name is stored and compared in Unicode NFC, so `café` typed precomposed (U+00E9) or
//! decomposed (`e` + U+0301) is one name. [`user`], [`group`] and [`file_name`] turn what a
//! person typed into that form and check it; the `validate_*` functions check a name that must
//! already be in it (what goes over the wire and into the database).
//!
//! Besides the structural rules (length, no separators, no control characters), names that
//! could show one thing and be another are refused, because names are how members decide whom
//! to let in and which file to trust:
//!
//! * bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE and friends) reorder what a
//!   terminal shows (`evil\u{202E}fdp.exe` prints as `evilexe.pdf`);
//! * default-ignorable code points (zero-width space/joiners, U+FEFF, variation selectors,
//!   tags, …) are invisible, so `bob\u{200B}` prints as `bob`;
//! * whitespace other than the plain space (no-break, ideographic, …) looks like a space;
//! * mixed-script words (UTS #39): one word mixing scripts, like `аlice` with a Cyrillic `а`;
//! * names whose UTS #39 confusable *skeleton* is plain ASCII although the name is not (a
//!   whole-script look-alike such as Cyrillic `аӏісе`, or fullwidth `ａｌｉｃｅ`).
//!
//! Errors name the offending character as `U+XXXX` and never echo the name itself, so an
//! error message cannot itself carry the trick.

use thiserror::Error;
use unicode_normalization::UnicodeNormalization;
use unicode_security::mixed_script::AugmentedScriptSet;

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
    #[error("{kind} name is not in Unicode NFC form")]
    NotNormalized { kind: &'static str },
    #[error(
        "{kind} name contains the bidirectional control character {}, which changes the order \
         in which the name is displayed",
        code(*ch)
    )]
    BidiControl { kind: &'static str, ch: char },
    #[error("{kind} name contains the invisible character {}", code(*ch))]
    Invisible { kind: &'static str, ch: char },
    #[error(
        "{kind} name contains {}, whitespace that only looks like a space (use a plain space, U+0020)",
        code(*ch)
    )]
    OddSpace { kind: &'static str, ch: char },
    #[error(
        "{kind} name mixes scripts within one word ({} is {script}, mixed with {other}), so it \
         can imitate another name",
        code(*ch)
    )]
    MixedScript {
        kind: &'static str,
        ch: char,
        script: String,
        other: String,
    },
    #[error(
        "{kind} name looks like the plain-ASCII name '{ascii}' ({} is not ASCII), so it can \
         imitate another name",
        code(*ch)
    )]
    LooksLikeAscii {
        kind: &'static str,
        ascii: String,
        ch: char,
    },
}

/// `U+XXXX`, the way Unicode charts name a character.
fn code(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// The Unicode NFC form of `s`.
pub fn nfc(s: &str) -> String {
    s.nfc().collect()
}

/// Bidi_Control (PropList.txt): ALM, LRM, RLM, LRE..RLO, LRI..PDI.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15): characters that
/// render as nothing. unicode-security keeps its own table private, hence this copy; the list
/// has been stable for many Unicode versions.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Other characters that draw nothing visible although they are not default-ignorable.
fn is_blank_lookalike(c: char) -> bool {
    matches!(c, '\u{2800}' /* braille blank */ | '\u{FFFC}')
}

fn check_structure(
    kind: &'static str,
    s: &str,
    max: usize,
    allow_space: bool,
) -> Result<(), NameError> {
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
            ' ' if !allow_space => "whitespace",
            c if c.is_whitespace() && !allow_space => "whitespace",
            _ => continue,
        };
        return Err(NameError::BadChar { kind, what });
    }
    Ok(())
}

/// The look-alike rules (see the module comment). `s` is in NFC and passed
/// `check_structure` (no control characters).
fn check_lookalikes(kind: &'static str, s: &str) -> Result<(), NameError> {
    // Plain ASCII without control characters cannot break a rule: bidi controls, invisible
    // and odd-space characters are all outside ASCII, ASCII letters are all Latin and the rest
    // script-neutral, and the confusable skeleton is only looked at for non-ASCII names. This
    // keeps checking a tree of 100,000 ASCII paths cheap.
    if s.is_ascii() {
        return Ok(());
    }
    for ch in s.chars() {
        if is_bidi_control(ch) {
            return Err(NameError::BidiControl { kind, ch });
        }
        if is_default_ignorable(ch) || is_blank_lookalike(ch) {
            return Err(NameError::Invisible { kind, ch });
        }
        if ch.is_whitespace() && ch != ' ' {
            return Err(NameError::OddSpace { kind, ch });
        }
    }
    // Mixed scripts are judged per word: "Отчёт report.pdf" is two honest words, "pаypal"
    // (Cyrillic а) is one dishonest one. Digits and punctuation are script-neutral (Common).
    for word in s.split(|c: char| !c.is_alphanumeric()) {
        let mut seen = AugmentedScriptSet::default();
        for ch in word.chars() {
            let mut next = seen;
            next.intersect_with(AugmentedScriptSet::for_char(ch));
            if next.is_empty() {
                // Name the odd one out: in a word with plain Latin letters that is the first
                // non-ASCII letter (the `а` of `аlice`), otherwise the letter that broke it.
                let (ch, other) = match word.chars().find(|c| c.is_alphabetic() && !c.is_ascii()) {
                    Some(odd) if word.chars().any(|c| c.is_ascii_alphabetic()) => {
                        (odd, "Latin".to_string())
                    }
                    _ => (ch, seen.to_string()),
                };
                return Err(NameError::MixedScript {
                    kind,
                    ch,
                    script: AugmentedScriptSet::for_char(ch).to_string(),
                    other,
                });
            }
            seen = next;
        }
    }
    if !s.is_ascii() {
        let skeleton: String = unicode_security::skeleton(s).collect();
        if skeleton.is_ascii() {
            let ch = s.chars().find(|c| !c.is_ascii()).expect("s is not ASCII");
            return Err(NameError::LooksLikeAscii {
                kind,
                ascii: skeleton,
                ch,
            });
        }
    }
    Ok(())
}

fn check(kind: &'static str, s: &str, max: usize, allow_space: bool) -> Result<(), NameError> {
    check_structure(kind, s, max, allow_space)?;
    if !unicode_normalization::is_nfc(s) {
        return Err(NameError::NotNormalized { kind });
    }
    check_lookalikes(kind, s)
}

/// Normalise what a person typed to NFC, then check it.
fn normalize(
    kind: &'static str,
    s: &str,
    max: usize,
    allow_space: bool,
) -> Result<String, NameError> {
    let n = nfc(s);
    check(kind, &n, max, allow_space)?;
    Ok(n)
}

/// A user id as typed: its NFC form if valid (1–64 bytes, no whitespace, separators, control
/// or look-alike characters).
pub fn user(s: &str) -> Result<String, NameError> {
    normalize("user", s, MAX_ID_LEN, false)
}

/// A group id as typed: same rules as user ids.
pub fn group(s: &str) -> Result<String, NameError> {
    normalize("group", s, MAX_ID_LEN, false)
}

/// A shared file's name as typed: 1–255 bytes (one path component), plain spaces and
/// unicode allowed, look-alike characters not.
pub fn file_name(s: &str) -> Result<String, NameError> {
    normalize("file", s, MAX_FILE_NAME_LEN, true)
}

/// A device name as typed (`device_name`, `revoke_device NAME`): same rules as user ids
/// (a host name fits), 1–64 bytes.
pub fn device(s: &str) -> Result<String, NameError> {
    normalize("device", s, MAX_ID_LEN, false)
}

/// A user id that must already be in NFC.
pub fn validate_user(s: &str) -> Result<(), NameError> {
    check("user", s, MAX_ID_LEN, false)
}

/// A group id that must already be in NFC.
pub fn validate_group(s: &str) -> Result<(), NameError> {
    check("group", s, MAX_ID_LEN, false)
}

/// A shared file's name that must already be in NFC.
pub fn validate_file_name(s: &str) -> Result<(), NameError> {
    check("file", s, MAX_FILE_NAME_LEN, true)
}

/// True for characters that reorder or hide text on a terminal: bidi controls and invisible
/// (default-ignorable or blank) characters.
pub fn is_hidden(c: char) -> bool {
    is_bidi_control(c) || is_default_ignorable(c) || is_blank_lookalike(c)
}

/// `s` with every character that could hide or reorder text on a terminal (bidi controls,
/// invisible characters, control characters other than newline and tab) written as `<U+XXXX>`,
/// for echoing input that was refused (or names stored before these rules) safely.
pub fn escape_for_display(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let hidden = is_hidden(c) || (c.is_control() && c != '\n' && c != '\t');
        if hidden {
            out.push('<');
            out.push_str(&code(c));
            out.push('>');
        } else {
            out.push(c);
        }
    }
    out
}

/// Only the structural rules (no NFC or look-alike checks), for *addressing* a file entry
/// stored before those rules existed, so that its group owner can still remove it. Such a
/// name is never accepted for anything new.
pub fn validate_legacy_file_name(s: &str) -> Result<(), NameError> {
    check_structure("file", s, MAX_FILE_NAME_LEN, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_and_unicode_names() {
        validate_user("alice").unwrap();
        validate_group("team-42_x.y").unwrap();
        validate_file_name("Résumé 2026 (final).pdf").unwrap();
        validate_file_name("日本語のファイル.iso").unwrap();
        validate_file_name("Отчёт report.pdf").unwrap();
        validate_file_name("Ελληνικά.txt").unwrap();
        validate_user("иван").unwrap();
        validate_user("δημήτρης").unwrap();
        validate_file_name("한국어 파일.txt").unwrap();
        validate_file_name("العربية.txt").unwrap();
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

    #[test]
    fn nfc_and_nfd_are_one_name() {
        let nfc_form = "caf\u{E9}.txt";
        let nfd_form = "cafe\u{301}.txt";
        assert_eq!(file_name(nfd_form).unwrap(), nfc_form);
        assert_eq!(file_name(nfc_form).unwrap(), nfc_form);
        assert_eq!(
            validate_file_name(nfd_form),
            Err(NameError::NotNormalized { kind: "file" })
        );
        assert_eq!(user("jose\u{301}").unwrap(), "jos\u{E9}");
    }

    #[test]
    fn refuses_cyrillic_a_in_a_latin_name() {
        let e = user("\u{430}lice").unwrap_err();
        assert!(
            matches!(e, NameError::MixedScript { ch: '\u{430}', .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert_eq!(
            msg,
            "user name mixes scripts within one word (U+0430 is Cyrillic, mixed with Latin), \
             so it can imitate another name"
        );
        let e = user("al\u{456}ce").unwrap_err(); // Cyrillic і
        assert!(e.to_string().contains("U+0456 is Cyrillic"), "{e}");
        assert!(file_name("p\u{430}ypal.pdf").is_err());
    }

    #[test]
    fn refuses_whole_script_and_fullwidth_lookalikes() {
        // Every letter Cyrillic: single-script, but it reads "alice".
        let e = user("\u{430}\u{4CF}\u{456}\u{441}\u{435}").unwrap_err();
        assert!(
            matches!(&e, NameError::LooksLikeAscii { ascii, .. } if ascii == "alice"),
            "{e:?}"
        );
        assert!(e.to_string().contains("U+0430"), "{e}");
        assert!(user("\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}").is_err());
    }

    #[test]
    fn refuses_bidi_controls_and_invisible_characters() {
        let e = file_name("evil\u{202E}fdp.exe").unwrap_err();
        assert_eq!(
            e,
            NameError::BidiControl {
                kind: "file",
                ch: '\u{202E}'
            }
        );
        assert!(e.to_string().contains("U+202E"), "{e}");
        assert!(
            !e.to_string().contains("evil"),
            "errors never echo the name"
        );
        for ch in [
            '\u{200B}',
            '\u{200D}',
            '\u{FEFF}',
            '\u{2060}',
            '\u{AD}',
            '\u{E0041}',
        ] {
            let e = user(&format!("bob{ch}")).unwrap_err();
            assert_eq!(e, NameError::Invisible { kind: "user", ch }, "{ch:?}");
            assert!(e.to_string().contains(&code(ch)));
        }
        for ch in ['\u{2066}', '\u{200F}', '\u{61C}'] {
            assert!(matches!(
                group(&format!("g{ch}1")),
                Err(NameError::BidiControl { .. })
            ));
        }
        let e = file_name("a\u{A0}b.txt").unwrap_err();
        assert!(
            matches!(e, NameError::OddSpace { ch: '\u{A0}', .. }),
            "{e:?}"
        );
        assert!(file_name("a\u{3000}b.txt").is_err());
        file_name("a b.txt").unwrap();
    }

    #[test]
    fn escaping_for_display_shows_hidden_characters() {
        assert_eq!(
            escape_for_display("bob\u{202E}x\u{200B}"),
            "bob<U+202E>x<U+200B>"
        );
        assert_eq!(escape_for_display("a\u{1b}[31m\n"), "a<U+001B>[31m\n");
        assert_eq!(escape_for_display("café 日本"), "café 日本");
    }

    #[test]
    fn legacy_names_can_still_be_addressed() {
        validate_legacy_file_name("cafe\u{301}").unwrap();
        validate_legacy_file_name("a\u{200B}").unwrap();
        assert!(validate_legacy_file_name("a/b").is_err());
    }

    proptest! {
        /// Normalising is idempotent, NFC and NFD of a name are the same name, and whatever
        /// is accepted passes the strict (already normalised) check.
        #[test]
        fn normalisation_is_idempotent(s in "\\PC{1,24}") {
            if let Ok(n) = file_name(&s) {
                prop_assert_eq!(file_name(&n), Ok(n.clone()));
                prop_assert!(validate_file_name(&n).is_ok());
                let nfd: String = s.nfd().collect();
                prop_assert_eq!(file_name(&nfd), Ok(n.clone()));
            }
        }

        /// A bidi control or invisible character anywhere in an otherwise good name is refused.
        #[test]
        fn hidden_characters_are_refused_anywhere(
            prefix in "[a-z]{0,8}",
            suffix in "[a-z]{0,8}",
            ch in prop::sample::select(vec![
                '\u{202E}', '\u{202D}', '\u{2067}', '\u{200B}', '\u{200C}', '\u{200D}',
                '\u{FEFF}', '\u{2060}', '\u{180E}', '\u{FE0F}',
            ]),
        ) {
            let name = format!("{prefix}{ch}{suffix}x");
            prop_assert!(file_name(&name).is_err());
            prop_assert!(user(&name).is_err());
        }
    }
}
