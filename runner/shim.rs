//! The C++ shim's error convention (runner/shim.h), for every Rust caller: a shim function
//! returns null on success or a message that C++ allocated, which is read and freed here.

use std::ffi::{c_char, CStr};

use anyhow::{bail, Result};

extern "C" {
    fn runner_free_error(message: *mut c_char);
}

/// `Ok` for a null `message`; else the message, freed, as an error prefixed with `what`.
pub(crate) fn checked(message: *mut c_char, what: impl std::fmt::Display) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { runner_free_error(message) };
    bail!("{what}: {}", text.trim())
}
