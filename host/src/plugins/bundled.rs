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

/// The bundled plugin named `name` (of team `core`): its manifest and its
/// component.
pub fn find(name: &str) -> Option<(super::Manifest, &'static [u8])> {
    PLUGINS.iter().find_map(|plugin| {
        let manifest = super::Manifest::parse(plugin.manifest).ok()?;
        (manifest.name == name).then_some((manifest, plugin.wasm))
    })
}
