//! trackerd's TOML config: `config::parse_file` then `config::resolve` (no command line, no
//! environment) on arbitrary UTF-8. Oracle: an accepted config prints (`to_toml`, as
//! `--print-config` does) and the printed text parses and resolves to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trackerd::config::{parse_file, resolve, Overrides};

fn no_env(_: &str) -> Option<String> {
    None
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = parse_file(text, "fuzz.toml") else {
        return;
    };
    let Ok(cfg) = resolve(&Overrides::default(), &no_env, Some(file.clone())) else {
        return;
    };
    let printed = cfg.to_toml();
    let file2 = parse_file(&printed, "printed.toml")
        .unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
    let cfg2 = resolve(&Overrides::default(), &no_env, Some(file2))
        .unwrap_or_else(|e| panic!("printed config does not resolve: {e}\n{printed}"));
    assert_eq!(cfg2, cfg, "config changed through print/parse");
});
