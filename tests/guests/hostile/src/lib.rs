//! `guest-hostile`: a capability plugin whose capabilities misbehave, so the
//! host's tests can show that one bad call fails alone and the host carries on.
//!
//! Every misbehaviour is hidden from the optimizer with `std::hint::black_box`;
//! otherwise a release build could fold an endless loop or recursion away.

use std::hint::black_box;
use std::time::{Duration, Instant};

use autoagent_sdk::serde_json::{Value, json};
use autoagent_sdk::{CallContext, Capability, CapabilityInfo, PluginError};

/// The plugin; all behaviour lives in its [`Capability`] implementation.
pub struct Hostile;

impl Capability for Hostile {
    fn describe() -> Vec<CapabilityInfo> {
        vec![
            CapabilityInfo::new("trap", "Panics, which traps the instance"),
            CapabilityInfo::new("spin", "Loops forever without calling the host"),
            CapabilityInfo::new("grow_memory", "Allocates and touches memory without bound"),
            CapabilityInfo::new("recurse", "Recurses without bound"),
            CapabilityInfo::new(
                "huge_output",
                "Returns a JSON string of input.mib MiB (default 32)",
            ),
            CapabilityInfo::new(
                "sleepish",
                "Busy-waits input.ms milliseconds (default 100), then returns",
            ),
            CapabilityInfo::new("ok", "Returns {\"ok\":true}"),
        ]
    }

    fn invoke(_ctx: &CallContext, capability: &str, input: Value) -> Result<Value, PluginError> {
        match capability {
            "trap" => panic!("trapped on purpose"),
            "spin" => spin(),
            "grow_memory" => grow_memory(),
            "recurse" => Ok(json!(recurse(0))),
            "huge_output" => Ok(huge_output(number(&input, "mib", 32))),
            "sleepish" => Ok(sleepish(number(&input, "ms", 100))),
            "ok" => Ok(json!({ "ok": true })),
            other => Err(PluginError::unknown_capability(other)),
        }
    }
}

autoagent_sdk::export_capability!(Hostile);

/// `input[field]` as a number, or `default` when absent or not a number.
fn number(input: &Value, field: &str, default: u64) -> u64 {
    input.get(field).and_then(Value::as_u64).unwrap_or(default)
}

fn spin() -> ! {
    let mut turns = 0u64;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

fn grow_memory() -> ! {
    const MIB: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; MIB];
        // Write every page so the memory is really committed, not just reserved.
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        hoard.push(black_box(chunk));
    }
}

/// Not a tail call: the addition after the call keeps every frame alive, and
/// the frame's array keeps it big, so the stack runs out quickly.
#[allow(unconditional_recursion, reason = "running out of stack is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    recurse(black_box(depth + 1)).wrapping_add(frame[(depth % 32) as usize])
}

fn huge_output(mib: u64) -> Value {
    let len = usize::try_from(mib)
        .unwrap_or(usize::MAX)
        .saturating_mul(1 << 20);
    Value::String("x".repeat(len))
}

fn sleepish(ms: u64) -> Value {
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut turns = 0u64;
    while Instant::now() < deadline {
        turns = black_box(turns.wrapping_add(1));
    }
    json!({ "sleptMs": ms })
}

#[cfg(test)]
mod tests {
    use autoagent_sdk::testing;

    use super::*;

    fn call(capability: &str, input: Value) -> Result<Value, PluginError> {
        Hostile::invoke(&testing::context(), capability, input)
    }

    #[test]
    fn ok_is_ok() {
        assert_eq!(call("ok", Value::Null).unwrap(), json!({ "ok": true }));
    }

    #[test]
    fn huge_output_has_the_asked_size() {
        let out = call("huge_output", json!({ "mib": 1 })).unwrap();
        assert_eq!(out.as_str().unwrap().len(), 1 << 20);
    }

    #[test]
    fn sleepish_waits_at_least_as_asked() {
        let start = Instant::now();
        assert_eq!(
            call("sleepish", json!({ "ms": 20 })).unwrap(),
            json!({ "sleptMs": 20 })
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    #[should_panic(expected = "trapped on purpose")]
    fn trap_panics() {
        let _ = call("trap", Value::Null);
    }

    #[test]
    fn describes_its_capabilities() {
        let names: Vec<String> = Hostile::describe().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "trap",
                "spin",
                "grow_memory",
                "recurse",
                "huge_output",
                "sleepish",
                "ok"
            ]
        );
    }
}
