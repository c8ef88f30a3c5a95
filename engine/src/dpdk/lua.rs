//! The few `unsafe` operations the Lua rule engine needs (mlua + LuaJIT):
//! creating a state with the `ffi` and `debug` libraries, getting its raw `lua_State` address, and
//! arming / disarming the interrupt hook (LuaJIT documents `lua_sethook` as safe to call
//! asynchronously, e.g. from a signal handler or another thread: it only writes the hook
//! fields and the dispatch table), and the C entry points Lua code calls through the FFI
//! ([`http_field_fn`]). Everything else in `crate::lua` is safe Rust.

use mlua::ffi;
use std::cell::RefCell;
use std::os::raw::c_int;
use std::rc::Rc;

/// Creates a Lua state with the safe standard libraries plus LuaJIT's `ffi` and the
/// standard `debug` library (Haka's rules use `debug.pprint` and `debug.traceback`; the
/// engine adds its functions, see `crate::lua::libs`).
pub fn new_lua_with_ffi() -> mlua::Lua {
    // SAFETY: loading `ffi` lets Lua code read/write arbitrary memory. The rule engine
    // only hands Lua addresses of buffers it owns for the duration of the call (the burst
    // struct, boxed and never moved, and the packet buffers of the current burst).
    // `debug` lets Lua code read and replace any value's metatable, upvalue or local, mlua's
    // own included: `debug.setmetatable` could give a userdata the metatable of another
    // Rust type, which mlua would then trust (why mlua calls the library unsafe). That is
    // the same class of power `ffi` already gives rule code: the rules file is trusted as
    // the configuration is. The engine's own Lua code calls no `debug` function on the
    // packet path (only `debug.pprint` and friends, engine/lua/lib/debug.lua, when a rule
    // calls them).
    unsafe {
        mlua::Lua::unsafe_new_with(
            mlua::StdLib::ALL_SAFE | mlua::StdLib::FFI | mlua::StdLib::DEBUG,
            mlua::LuaOptions::new(),
        )
    }
}

/// Address of the state's main `lua_State` (LuaJIT hooks are per global state, so any
/// thread of the state works). 0 on failure.
pub fn raw_state(lua: &mlua::Lua) -> usize {
    let mut addr = 0usize;
    // SAFETY: the closure only records the pointer value; it touches no stack slot.
    let r: mlua::Result<()> = unsafe {
        lua.exec_raw((), |l| {
            addr = l as usize;
        })
    };
    if r.is_err() {
        return 0;
    }
    addr
}

/// What the hook asks when it fires: given the Lua heap size in KiB, `Some(message)`
/// aborts the running Lua code with that error. The check must disarm the hook (with
/// [`disarm_interrupt`], under the same lock the arming thread holds, so that all
/// `lua_sethook` calls are serialized).
pub type HookCheck = Rc<dyn Fn(usize) -> Option<String>>;

thread_local! {
    static CURRENT_CHECK: RefCell<Option<HookCheck>> = const { RefCell::new(None) };
}

/// Installs (or clears) the check the interrupt hook runs on this thread. The engine sets
/// it around each call into Lua and clears it afterwards.
pub fn set_hook_check(check: Option<HookCheck>) {
    CURRENT_CHECK.with(|c| *c.borrow_mut() = check);
}

unsafe extern "C-unwind" fn interrupt_hook(l: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) {
    // SAFETY (whole fn): called by LuaJIT on the thread running `l`, with a valid `ar`.
    let kb = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0).max(0) as usize;
    let check = CURRENT_CHECK.with(|c| c.borrow().clone());
    let msg = match check {
        Some(f) => f(kb),
        None => {
            ffi::lua_sethook(l, None, 0, 0);
            None
        }
    };
    let Some(msg) = msg else { return };
    let mut where_ = String::new();
    if ffi::lua_getinfo(l, c"Sl".as_ptr(), ar) != 0 && (*ar).currentline > 0 {
        let src = std::ffi::CStr::from_ptr((*ar).short_src.as_ptr()).to_string_lossy();
        where_ = format!("{}:{}: ", src, (*ar).currentline);
    }
    let full = format!("{where_}{msg}");
    ffi::lua_pushlstring(l, full.as_ptr() as *const _, full.len());
    drop(full);
    drop(where_);
    ffi::lua_error(l);
}

/// Arms a count hook of 1 instruction: the next VM instruction (and, with LuaJIT built with
/// `LUAJIT_ENABLE_CHECKHOOK`, the next loop iteration of compiled code) calls the check.
/// May be called from any thread while `state` is alive.
pub fn arm_interrupt(state: usize) {
    if state == 0 {
        return;
    }
    // SAFETY: `state` is the address of a live lua_State (the caller holds the lock that
    // the engine takes before closing it); lua_sethook is async-safe in LuaJIT.
    unsafe {
        ffi::lua_sethook(state as *mut ffi::lua_State, Some(interrupt_hook), ffi::LUA_MASKCOUNT as c_int, 1);
    }
}

/// Removes the hook. Same requirements as [`arm_interrupt`].
pub fn disarm_interrupt(state: usize) {
    if state == 0 {
        return;
    }
    // SAFETY: as in arm_interrupt.
    unsafe {
        ffi::lua_sethook(state as *mut ffi::lua_State, None, 0, 0);
    }
}

/// `int32_t f(const char *head, int32_t len, int32_t from, const char *name, int32_t nlen,
/// int32_t out[4])`: [`crate::dissectors::http::find_field`] for app.lua's header lookups, with
/// Lua's 1-based indices out: after the colon, the line's `\n`, value start, value end
/// (inclusive). Returns 1 when found, 0 otherwise.
extern "C" fn http_field(head: *const u8, len: i32, from: i32, name: *const u8, nlen: i32, out: *mut i32) -> i32 {
    if head.is_null() || name.is_null() || out.is_null() || len < 0 || nlen < 0 || from < 0 {
        return 0;
    }
    // SAFETY: app.lua passes Lua strings with their lengths (alive for the call) and an
    // int32_t[4] it allocated; the checks above rule out null pointers and negative sizes.
    let (head, name, out) = unsafe {
        (
            std::slice::from_raw_parts(head, len as usize),
            std::slice::from_raw_parts(name, nlen as usize),
            std::slice::from_raw_parts_mut(out, 4),
        )
    };
    match crate::dissectors::http::find_field(head, from as usize, name) {
        Some(f) => {
            out[0] = f.after_colon as i32 + 1;
            out[1] = f.line_end as i32 + 1;
            out[2] = f.value.0 as i32 + 1;
            out[3] = f.value.1 as i32;
            1
        }
        None => 0,
    }
}

/// Address of the header finder app.lua calls through the FFI (see `http_field`).
pub fn http_field_fn() -> usize {
    http_field as *const () as usize
}

/// `int32_t regex_find(const void *re, const char *s, int32_t len, int32_t out[2])`: the
/// first match of a compiled pattern (`re` the address [`regex_addr`] gave for it) in the
/// `len` bytes at `s`, for `regexp:match(string)` in haka.lua without a call through
/// mlua (which takes a handle on the string and the userdata per call). 1 when found (out:
/// start, end, 0-based, end exclusive), 0 when not, -1 on a matching error (haka.lua then
/// calls the userdata's `find`, which raises it).
extern "C" fn regex_find(re: *const crate::lua::regexp::Compiled, s: *const u8, len: i32, out: *mut i32) -> i32 {
    if re.is_null() || s.is_null() || out.is_null() || len < 0 {
        return -1;
    }
    // SAFETY: haka.lua passes the address of the pattern its Rx object holds (the userdata
    // keeping its Rc alive is in the same object), a Lua string with its length (alive for
    // the call) and an int32_t[2] it allocated; null pointers and a negative length are
    // ruled out above.
    let (re, hay, out) =
        unsafe { (&*re, std::slice::from_raw_parts(s, len as usize), std::slice::from_raw_parts_mut(out, 2)) };
    match re.find(hay) {
        Ok(Some((a, b))) => {
            out[0] = a as i32;
            out[1] = b as i32;
            1
        }
        Ok(None) => 0,
        Err(_) => -1,
    }
}

/// Address of [`regex_find`] (see there).
pub fn regex_find_fn() -> usize {
    regex_find as *const () as usize
}

/// The address haka.lua hands [`regex_find`] for a compiled pattern (valid while `re` is).
pub fn regex_addr(re: &Rc<crate::lua::regexp::Compiled>) -> usize {
    Rc::as_ptr(re) as usize
}

/// A rules engine built on one thread (the control thread, at a reload) to be run on
/// another (its worker), so that loading a rules file never stalls a worker: the worker
/// only swaps the built engine in between two bursts ([`crate::lua::LuaEngine::adopt`]).
/// Built by [`EngineHandoff::build`] only, so that nothing the caller owns is captured
/// in it.
pub struct EngineHandoff(crate::lua::LuaEngine);

// SAFETY: a `LuaEngine` is `!Send` only because its parts share `Rc` handles and a raw
// `lua_State` among themselves: mlua's handles into the state, the `Rc<Shared>` the Rust
// helpers registered in the state capture, the `HookCheck` and the regexp userdata. All of
// them are created by `LuaEngine::load` inside `build` and reachable only through the
// engine: `build` passes an alert sink that captures nothing, `load` hands out no clone of
// any of them (the watchdog keeps only the `Arc<Watch>`, which is `Send + Sync`), and the
// hook check put in the building thread's thread-local around each Lua call is cleared
// when the call returns (`watched_grace`). Moving the whole island to one other thread,
// with nothing of it left behind, therefore never lets two threads touch one reference
// count or the Lua state. Neither LuaJIT nor mlua (built without luau) keeps per-thread
// data about a state.
unsafe impl Send for EngineHandoff {}

impl EngineHandoff {
    /// Loads `path` into a new engine for worker `worker` (errors: `FILE:LINE: message`).
    pub fn build(path: &std::path::Path, opts: &crate::lua::LuaOptions, worker: usize) -> Result<EngineHandoff, String> {
        crate::lua::LuaEngine::load(path, opts, worker, Box::new(|_| {})).map(EngineHandoff)
    }

    /// The engine, on the thread that will run it.
    pub fn into_engine(self) -> crate::lua::LuaEngine {
        self.0
    }
}
