//! OpenAI-compatible request bodies, as the gateway parses them: any bytes
//! give a parsed request or a 400 naming the problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verinfer_node::gateway::openai::parse;

fuzz_target!(|data: &[u8]| {
    // Chat and plain completions parse different fields of one body.
    let _ = parse(data, true);
    let _ = parse(data, false);
});
