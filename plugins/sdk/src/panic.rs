//! The panic hook every plugin built with the SDK gets: before the panic becomes a trap
//! (`panic = "abort"`, or the unwind the component cannot cross), it logs
//! `panicked at FILE:LINE:COL: MESSAGE` at error level through the host's log. The host
//! writes it to its own log under the plugin's name and adds it to the trap error the call
//! returns, so an operator sees which assertion failed instead of "hit unreachable code".
//!
//! Installed before the first export runs: the hook's installer sits in `.init_array`, whose
//! functions the module's constructors (`__wasm_call_ctors`, run once by wit-bindgen's
//! exports) call. A plugin may replace it with `std::panic::set_hook` as usual.

use crate::log::{Level, log};

/// Sets the hook (again); the constructor below has done it already.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map_or_else(
            || "an unknown place".to_owned(),
            |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
        );
        let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
        log(Level::Error, &format!("panicked at {location}: {message}"));
    }));
}

extern "C" fn install_at_start() {
    install();
}

/// Runs [`install`] among the module's constructors, before any export.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static INSTALL_AT_START: extern "C" fn() = install_at_start;
