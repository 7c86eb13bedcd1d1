//! minitorrd's TOML config (`Config::from_toml`) on arbitrary UTF-8. Oracle: an accepted config
//! prints (`to_toml`, as `--print-config` does) and the printed text parses back to the same
//! config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minitorrd::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::from_toml(text, "fuzz.toml") else {
        return;
    };
    let printed = cfg.to_toml();
    let back = Config::from_toml(&printed, "printed.toml")
        .unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
    assert_eq!(
        back.to_toml(),
        printed,
        "config changed through print/parse"
    );
    assert_eq!(format!("{back:?}"), format!("{cfg:?}"));
});
