//! Plugins embedded in the binary, so `autoagent` runs from any folder.
//!
//! `build.rs` compiles each bundled plugin crate for `wasm32-wasip2` and
//! writes `bundled.rs` into `OUT_DIR`, defining `PLUGINS`.

/// A plugin shipped inside the binary.
pub struct BundledPlugin {
    /// The text of its `plugin.toml`.
    pub manifest: &'static str,
    /// The compiled component.
    pub wasm: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
