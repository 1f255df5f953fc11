//! The `verinfer` command-line tool.
fn main() {}
