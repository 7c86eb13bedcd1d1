//! Rates in the config file with units: `max_download_rate = "20M"` as well as `20000000`.
//!
//! K, M, G (also KB, MB, GB) are decimal (1000-based); KiB, MiB, GiB are binary (1024-based);
//! a plain number or `B` is bytes. All are per second. The unit letters are case-insensitive
//! (`20m` = `20M`); a fraction is allowed with a unit (`1.5MiB`).

use serde::{Deserialize, Deserializer};

/// Parse `text` as a rate in bytes per second; the error names what is wrong, not the key
/// (the caller adds that).
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in rate '{text}' (use bytes per second, or K/M/G \
                 (1000-based) or KiB/MiB/GiB (1024-based), e.g. \"20M\")"
            ))
        }
    };
    let bad = || format!("'{text}' is not a rate (e.g. 2500000, \"20M\" or \"1.5MiB\")");
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') || (!frac.is_empty() && mult == 1) {
        return Err(bad());
    }
    let too_big = || format!("rate '{text}' is too large");
    let int: u64 = int.parse().map_err(|_| too_big())?;
    let mut bytes = int.checked_mul(mult).ok_or_else(too_big)?;
    if !frac.is_empty() {
        // At most 9 fraction digits matter (mult ≤ 2^30 < 10^10); exact integer arithmetic.
        let digits = &frac[..frac.len().min(9)];
        let scale = 10u64.pow(digits.len() as u32);
        let f: u64 = digits.parse().map_err(|_| bad())?;
        bytes = bytes.checked_add(f * mult / scale).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(i64),
    Text(String),
}

fn deserialize<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<u64, D::Error> {
    let r = match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom(format!(
            "{key}: expected a number of bytes per second or a string such as \"20M\""
        ))
    })? {
        Raw::Int(n) => u64::try_from(n).map_err(|_| format!("{key}: must not be negative")),
        Raw::Text(s) => parse(&s).map_err(|e| format!("{key}: {e}")),
    };
    r.map_err(serde::de::Error::custom)
}

pub fn max_upload_rate<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    deserialize(d, "max_upload_rate")
}

pub fn max_download_rate<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    deserialize(d, "max_download_rate")
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("2500000"), Ok(2_500_000));
        assert_eq!(parse("100B"), Ok(100));
    }

    #[test]
    fn decimal_and_binary_units() {
        assert_eq!(parse("20M"), Ok(20_000_000));
        assert_eq!(parse("20 MB"), Ok(20_000_000));
        assert_eq!(parse("500k"), Ok(500_000));
        assert_eq!(parse("1G"), Ok(1_000_000_000));
        assert_eq!(parse("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse("64KiB"), Ok(65_536));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
        assert_eq!(parse("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse("0.5K"), Ok(500));
    }

    #[test]
    fn bad_rates_are_refused_clearly() {
        for bad in [
            "", "M", "20X", "20 Mbit", "1.2.3M", "1.5", ".5M", "5.M", "-3M", "abc",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("20X").unwrap_err().contains("unknown unit 'X'"));
        assert!(parse("99999999999G").unwrap_err().contains("too large"));
    }
}
