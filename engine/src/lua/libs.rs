//! Haka's Lua library modules (not dissectors) that rules use, each in its own file under
//! `engine/lua/lib/`, embedded and installed once per Lua state by [`load`]:
//! - `debug.lua` extends the standard `debug` library (opened by `crate::dpdk::lua`) with
//!   `debug.pprint`, `debug.hide_underscore`, `debug.hide_function`, `debug.format_error`;
//! - `class.lua` and `check.lua` are registered in `package.preload`, so that
//!   `require('class')` and `require('check')` load them on first use; so is
//!   `protocols/ipv4lua.lua` (`require('protocol/ipv4lua')`, an IPv4 dissector written with
//!   the grammar).
//!
//! - `grammar.lua` (Haka's grammar DSL, `haka.grammar`), `state_machine.lua`
//!   (`haka.state_machine`) and `dissector.lua` (`haka.dissector.new`, Lua dissectors) are run
//!   after them, in that order: each installs its table in `haka`.
//!
//! Nothing here runs per packet: the modules only act when a rule calls them.
use mlua::{Function, Lua, Table};

const DEBUG_LUA: &str = include_str!("../../lua/lib/debug.lua");

/// Haka's Lua frameworks, run in this order once the libraries are in place.
const FRAMEWORKS: [(&str, &str); 3] = [
    ("grammar", include_str!("../../lua/grammar.lua")),
    ("state_machine", include_str!("../../lua/state_machine.lua")),
    ("dissector", include_str!("../../lua/dissector.lua")),
];

/// `require` name and source of each preloaded module.
const MODULES: [(&str, &str); 3] = [
    ("class", include_str!("../../lua/lib/class.lua")),
    ("check", include_str!("../../lua/lib/check.lua")),
    // dissectors written in Lua (engine/lua/protocols/)
    ("protocol/ipv4lua", include_str!("../../lua/protocols/ipv4lua.lua")),
];

/// Installs the modules in `lua` (before the rules file runs).
pub(crate) fn load(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    for (name, src) in MODULES {
        let f: Function = lua.load(src).set_name(format!("@{name}.lua")).into_function()?;
        preload.set(name, f)?;
    }
    let debug: Table = lua.globals().get("debug")?;
    lua.load(DEBUG_LUA).set_name("@debug.lua").call::<()>(debug)?;
    for (name, src) in FRAMEWORKS {
        lua.load(src).set_name(format!("@{name}.lua")).exec()?;
    }
    Ok(())
}

/// Puts `dir/?.lua` first on `package.path` (the rules file's folder; none: unchanged).
pub(crate) fn add_module_dir(lua: &Lua, dir: Option<&std::path::Path>) -> mlua::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
    let Some(dir) = dir.to_str() else { return Ok(()) };
    // (a `;` or `?` in the folder's name would be read as path syntax: leave it out)
    if dir.contains(';') || dir.contains('?') {
        return Ok(());
    }
    let package: Table = lua.globals().get("package")?;
    let old: String = package.get("path")?;
    package.set("path", format!("{dir}/?.lua;{old}"))
}
