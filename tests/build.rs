//! Builds the test guest components for `wasm32-wasip2` and writes their
//! paths into `guests.rs`, so tests load real compiled plugins.

/// Test guests under `tests/guests/`, and the bundled `todo` plugin (for
/// the load benchmark).
const GUESTS: &[&str] = &[
    "guest-echo",
    "guest-hostile",
    "guest-checker",
    "guest-fixer",
    "autoagent-plugin-todo",
];

fn main() {
    let outcome = autoagent_plugin_build::build_plugins(GUESTS)
        .and_then(|built| autoagent_plugin_build::write_plugin_consts(&built, "guests.rs"));
    if let Err(err) = outcome {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
