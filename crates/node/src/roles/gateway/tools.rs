//! Structured outputs and tool calls on the OpenAI surface: `verinfer-openai`'s
//! (the engines' schema check comes in through [`super::openai::parse`]).

pub use verinfer_openai::tools::*;
