//! Compiles the bundled plugins for `wasm32-wasip2` and embeds them, so the
//! `autoagent` binary carries everything it needs and runs from any folder.

use std::fmt::Write;

/// Plugin crates shipped inside the binary.
const BUNDLED: &[&str] = &[
    "autoagent-plugin-todo",
    "autoagent-plugin-system",
    "autoagent-plugin-http",
    "autoagent-plugin-tcp",
    "autoagent-plugin-service",
    "autoagent-plugin-command",
    "autoagent-plugin-webhook",
    "autoagent-plugin-wait",
];

fn main() {
    let built = match autoagent_plugin_build::build_plugins(BUNDLED) {
        Ok(built) => built,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    };
    let mut source = String::from(
        "/// Every plugin embedded in the binary.\npub const PLUGINS: &[BundledPlugin] = &[\n",
    );
    for plugin in &built {
        let manifest = plugin.manifest.as_ref().unwrap_or_else(|| {
            panic!(
                "{} has no plugin.toml beside its Cargo.toml",
                plugin.package
            )
        });
        writeln!(
            source,
            "    BundledPlugin {{ manifest: include_str!({:?}), wasm: include_bytes!({:?}) }},",
            manifest, plugin.wasm
        )
        .unwrap();
        println!("cargo:rerun-if-changed={}", manifest.display());
    }
    source.push_str("];\n");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR is set for build scripts");
    std::fs::write(format!("{out}/bundled.rs"), source).expect("writing bundled.rs");
}
