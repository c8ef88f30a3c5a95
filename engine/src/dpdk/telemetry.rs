//! DPDK telemetry commands (`dpdk-telemetry.py`, socket `dpdk_telemetry.v2` in EAL's
//! runtime directory): haka registers its own commands, answered from a provider that
//! returns a JSON object (called on DPDK's telemetry thread).
//!
//! The object becomes a telemetry dict: numbers (u64), strings and booleans as values,
//! arrays of numbers as u64 array containers, nested objects flattened (`a_b`).
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::{Arc, OnceLock};

/// Answers a command (`/haka/stats`) with its parameters (the text after the comma).
pub type Provider = Arc<dyn Fn(&str, &str) -> serde_json::Value + Send + Sync>;

static PROVIDER: OnceLock<Provider> = OnceLock::new();

/// Registers `commands` ((name, help) pairs) answered by `provider`. Once per process (the
/// first provider stays); call after EAL init. Telemetry disabled (`--no-telemetry`) makes
/// this a no-op for DPDK, not an error.
pub fn register_telemetry(commands: &[(&str, &str)], provider: Provider) -> Result<(), String> {
    let _ = PROVIDER.set(provider);
    for (cmd, help) in commands {
        // (DPDK keeps the pointers: leaked, once per process)
        let c = CString::new(*cmd).map_err(|_| "bad telemetry command".to_string())?;
        let h = CString::new(*help).map_err(|_| "bad telemetry help".to_string())?;
        // SAFETY: both strings are NUL-terminated and live for the rest of the process
        // (leaked below); `callback` has the telemetry_cb signature and does not unwind.
        let ret = unsafe { dpdk_sys::rte_telemetry_register_cmd(c.as_ptr(), Some(callback), h.as_ptr()) };
        std::mem::forget(c);
        std::mem::forget(h);
        if ret != 0 {
            return Err(format!("telemetry command {cmd}: {}", super::errno_str(ret)));
        }
    }
    Ok(())
}

/// Characters DPDK allows in dict names.
fn tel_name(s: &str) -> CString {
    let clean: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '/' { c } else { '_' }).collect();
    CString::new(clean).unwrap_or_default()
}

fn as_u64(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or_else(|| n.as_f64().map_or(0, |f| f.max(0.0) as u64)),
        serde_json::Value::Bool(b) => *b as u64,
        _ => 0,
    }
}

/// Adds `v` under `name` to the dict `d` (flattening objects).
///
/// SAFETY: `d` is the dict the telemetry library passed to the callback, started with
/// rte_tel_data_start_dict.
unsafe fn add_value(d: *mut dpdk_sys::rte_tel_data, name: &str, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, sub) in m {
                let key = if name.is_empty() { k.clone() } else { format!("{name}_{k}") };
                // SAFETY: same dict (caller's contract).
                unsafe { add_value(d, &key, sub) };
            }
        }
        Value::Array(items) => {
            // SAFETY: rte_tel_data_alloc returns a fresh container or NULL; it is handed to
            // the dict with keep = 0 (the library frees it).
            unsafe {
                let arr = dpdk_sys::rte_tel_data_alloc();
                if arr.is_null() {
                    return;
                }
                dpdk_sys::rte_tel_data_start_array(arr, dpdk_sys::rte_tel_value_type_RTE_TEL_U64_VAL);
                for it in items {
                    dpdk_sys::rte_tel_data_add_array_u64(arr, as_u64(it));
                }
                if dpdk_sys::rte_tel_data_add_dict_container(d, tel_name(name).as_ptr(), arr, 0) != 0 {
                    dpdk_sys::rte_tel_data_free(arr);
                }
            }
        }
        Value::String(s) => {
            let val = CString::new(s.replace('\0', "")).unwrap_or_default();
            // SAFETY: valid dict and NUL-terminated strings (DPDK copies them).
            unsafe { dpdk_sys::rte_tel_data_add_dict_string(d, tel_name(name).as_ptr(), val.as_ptr()) };
        }
        Value::Null => {}
        other => {
            // SAFETY: valid dict and name (DPDK copies it).
            unsafe { dpdk_sys::rte_tel_data_add_dict_u64(d, tel_name(name).as_ptr(), as_u64(other)) };
        }
    }
}

extern "C" fn callback(cmd: *const c_char, params: *const c_char, d: *mut dpdk_sys::rte_tel_data) -> c_int {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: the telemetry library passes NUL-terminated strings (or NULL).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let (cmd, params) = (text(cmd), text(params));
    let Some(provider) = PROVIDER.get() else { return -1 };
    // A panic must not unwind into C.
    let value = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| provider(&cmd, &params))) {
        Ok(v) => v,
        Err(_) => return -1,
    };
    // SAFETY: `d` is the library's data structure for this reply; it is started as a dict
    // here, before anything is added.
    unsafe {
        dpdk_sys::rte_tel_data_start_dict(d);
        add_value(d, "", &value);
    }
    0
}
