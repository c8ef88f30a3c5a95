//! Configuration parsing (`config::Config::parse`, the TOML of `conf/haka.toml`).
//! Oracles: an error is one line (naming where, as the README promises); a configuration
//! that parses gives what the same TOML re-written by the toml crate gives (round trip),
//! and everything derived from it (connection, flow table, defrag, dissector settings)
//! is made without a panic.
#![no_main]
use haka_engine::config::Config;
use haka_engine::dissectors::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cfg = match Config::parse(text, "fuzz.toml") {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.contains('\n'), "error of more than one line: {e:?}");
            return;
        }
    };
    let _ = cfg.conn_config();
    let _ = cfg.flow_table_config();
    let _ = cfg.defrag.defrag_config();
    let _ = Settings::of(&cfg);
    let value: toml::Table = toml::from_str(text).expect("TOML that parsed as a config parses as a table");
    let rewritten = toml::to_string(&value).expect("a table is written");
    let again = Config::parse(&rewritten, "rewritten.toml").unwrap_or_else(|e| panic!("rewritten config refused: {e}\n{rewritten}"));
    assert_eq!(again, cfg, "round trip through the toml writer");
});
