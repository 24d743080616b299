//! What a health policy implements, and the per-instance state every policy keeps: its
//! filter, made from the config on the first call.

use std::cell::RefCell;
use std::thread::LocalKey;

pub use crate::bindings::Guest;
pub use crate::bindings::shoal::backend::config::get_config;

use crate::log;

/// Runs `f` on this instance's state in `cell`, made by `make` from the policy's config
/// (the JSON the host hands over) on the first call.
///
/// A policy's state lives as long as its instance, and the config cannot change under it,
/// so it is parsed once. A config `make` refuses is logged at error level (the message
/// should name the key at fault) and then traps: the host sees the call fail, and a
/// misconfigured policy can never pass for one that answers "healthy". The next call in a
/// fresh instance tries again, and traps again.
///
/// ```ignore
/// thread_local! {
///     static FILTER: RefCell<Option<ActiveFilter>> = const { RefCell::new(None) };
/// }
///
/// fn with_filter<R>(f: impl FnOnce(&mut ActiveFilter) -> R) -> R {
///     health::with_state(&FILTER, |json| parse_config(json).map(ActiveFilter::new), f)
/// }
/// ```
pub fn with_state<S: 'static, R>(
    cell: &'static LocalKey<RefCell<Option<S>>>,
    make: impl FnOnce(&str) -> Result<S, String>,
    f: impl FnOnce(&mut S) -> R,
) -> R {
    cell.with(|cell| {
        let mut cell = cell.borrow_mut();
        let state = cell.get_or_insert_with(|| match make(&get_config()) {
            Ok(state) => state,
            Err(message) => {
                // The host sees a trap; the log line says why.
                log::log(log::Level::Error, &message);
                panic!("{message}");
            }
        });
        f(state)
    })
}
