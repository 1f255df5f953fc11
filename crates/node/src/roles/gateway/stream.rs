//! A chat answer split into OpenAI's message parts, whole or as it streams:
//! the thinking a reasoning model writes first between `<think>` and
//! `</think>` (`reasoning_content`), the content, and tool calls (their
//! arguments streamed as they are generated). The signed Result keeps the
//! raw text; this is only how the API shows it.
//!
//! Streamed, nothing is held back longer than it takes to know what it is:
//! the start of an answer while it may still be `<think>`, the end of the
//! reasoning while it may be `</think>`, and a call's opening
//! `{"name":"NAME","parameters":` until the name is known. A tool answer is
//! calls exactly when it starts with `{` (the constraint's free text cannot,
//! see [`super::tools`]).

use super::tools::Tools;

/// Opens a reasoning model's thinking.
const THINK_OPEN: &str = "<think>";
/// Closes it.
const THINK_CLOSE: &str = "</think>";
/// How a call object starts (the constraint generates no whitespace).
const CALL_OPEN: &str = "{\"name\":\"";
/// What follows a call's name.
const CALL_ARGS: &str = "\",\"parameters\":";

/// `(reasoning, content)` of an answer: the reasoning when the text (after
/// leading whitespace) starts with `<think>`, up to `</think>` or, when the
/// answer was cut before it, to the end; the content after it, without its
/// leading whitespace.
pub fn split_reasoning(text: &str) -> (Option<&str>, &str) {
    let Some(rest) = text.trim_start().strip_prefix(THINK_OPEN) else {
        return (None, text);
    };
    match rest.find(THINK_CLOSE) {
        Some(i) => (Some(&rest[..i]), rest[i + THINK_CLOSE.len()..].trim_start()),
        None => (Some(rest), ""),
    }
}

/// One part of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// More thinking.
    Reasoning(String),
    /// More content.
    Content(String),
    /// Call `index` (0, 1, ...) starts, calling `name`.
    CallStart {
        /// The call's place in the answer.
        index: usize,
        /// The function called.
        name: String,
    },
    /// More of call `index`'s arguments (JSON text).
    CallArgs {
        /// The call's place in the answer.
        index: usize,
        /// The next piece.
        args: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but whitespace and maybe part of `<think>` yet.
    Start,
    /// Inside the thinking.
    Reasoning,
    /// After `</think>`: leading whitespace is dropped.
    AfterThink,
    /// The answer proper, not known yet to be text or calls.
    Undecided,
    /// Text.
    Text,
    /// A call's opening, before its arguments.
    CallHead,
    /// A call's arguments: JSON nesting depth, inside a string, after `\`.
    CallArgs {
        depth: u32,
        string: bool,
        escaped: bool,
    },
    /// After a call's closing `}`: a newline and the next call, or the end.
    CallEnd,
}

/// Splits one streamed chat answer.
#[derive(Debug, Clone)]
pub struct Splitter {
    tools: Option<Tools>,
    phase: Phase,
    held: String,
    /// The call being read (the number of calls started before it).
    call: usize,
    /// Whether any call started.
    called: bool,
}

impl Splitter {
    /// A splitter for an answer that may call `tools` (`None`: text only).
    pub fn new(tools: Option<Tools>) -> Self {
        Splitter {
            tools,
            phase: Phase::Start,
            held: String::new(),
            call: 0,
            called: false,
        }
    }

    /// Whether a call started.
    pub fn called(&self) -> bool {
        self.called
    }

    /// The parts `text`, the answer's next piece, completes.
    pub fn push(&mut self, text: &str) -> Vec<Delta> {
        self.held.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out) {}
        out
    }

    /// What is still held back, at the end of the answer.
    pub fn finish(&mut self) -> Vec<Delta> {
        let held = std::mem::take(&mut self.held);
        match self.phase {
            _ if held.is_empty() => Vec::new(),
            Phase::Reasoning => vec![Delta::Reasoning(held)],
            Phase::Start | Phase::Undecided | Phase::Text => vec![Delta::Content(held)],
            // A call cut before its arguments, or whitespace: nothing to show.
            _ => Vec::new(),
        }
    }

    /// Moves on as far as the held text allows; whether to go on.
    fn step(&mut self, out: &mut Vec<Delta>) -> bool {
        match self.phase {
            Phase::Start => {
                let t = self.held.trim_start();
                if let Some(rest) = t.strip_prefix(THINK_OPEN) {
                    self.held = rest.to_string();
                    self.phase = Phase::Reasoning;
                    true
                } else if THINK_OPEN.starts_with(t) {
                    false
                } else {
                    self.phase = Phase::Undecided;
                    true
                }
            }
            Phase::Reasoning => {
                if let Some(i) = self.held.find(THINK_CLOSE) {
                    let rest = self.held.split_off(i);
                    emit(out, Delta::Reasoning, std::mem::take(&mut self.held));
                    self.held = rest[THINK_CLOSE.len()..].to_string();
                    self.phase = Phase::AfterThink;
                    true
                } else {
                    let keep = partial_suffix(&self.held, THINK_CLOSE);
                    let rest = self.held.split_off(self.held.len() - keep);
                    emit(
                        out,
                        Delta::Reasoning,
                        std::mem::replace(&mut self.held, rest),
                    );
                    false
                }
            }
            Phase::AfterThink => {
                self.held = self.held.trim_start().to_string();
                if self.held.is_empty() {
                    return false;
                }
                self.phase = Phase::Undecided;
                true
            }
            Phase::Undecided => {
                if self.held.is_empty() {
                    return false;
                }
                self.phase = if self.tools.is_some() && self.held.starts_with('{') {
                    Phase::CallHead
                } else {
                    Phase::Text
                };
                true
            }
            Phase::Text => {
                emit(out, Delta::Content, std::mem::take(&mut self.held));
                false
            }
            Phase::CallHead => self.call_head(out),
            Phase::CallArgs {
                mut depth,
                mut string,
                mut escaped,
            } => {
                let mut end = None;
                for (i, c) in self.held.char_indices() {
                    if string {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '"') => string = false,
                            _ => {}
                        }
                        continue;
                    }
                    match c {
                        '"' => string = true,
                        '{' | '[' => depth += 1,
                        // The call object's own `}` ends the arguments.
                        '}' if depth == 0 => {
                            end = Some(i);
                            break;
                        }
                        '}' | ']' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                let index = self.call;
                match end {
                    Some(i) => {
                        let rest = self.held[i + 1..].to_string();
                        self.held.truncate(i);
                        emit(
                            out,
                            |args| Delta::CallArgs { index, args },
                            std::mem::replace(&mut self.held, rest),
                        );
                        self.phase = Phase::CallEnd;
                        true
                    }
                    None => {
                        emit(
                            out,
                            |args| Delta::CallArgs { index, args },
                            std::mem::take(&mut self.held),
                        );
                        self.phase = Phase::CallArgs {
                            depth,
                            string,
                            escaped,
                        };
                        false
                    }
                }
            }
            Phase::CallEnd => match self.held.strip_prefix('\n') {
                Some(rest) => {
                    self.held = rest.to_string();
                    self.call += 1;
                    self.phase = Phase::CallHead;
                    true
                }
                None => false,
            },
        }
    }

    /// Reads a call's opening up to its arguments. Text that turns out not
    /// to be a call to a listed function (possible only in an answer the
    /// constraint did not shape) is shown as content.
    fn call_head(&mut self, out: &mut Vec<Delta>) -> bool {
        let h = self.held.as_str();
        let not_a_call = |s: &mut Self| {
            s.phase = if s.called {
                Phase::CallEnd
            } else {
                Phase::Text
            };
            !s.called
        };
        let Some(rest) = h.strip_prefix(CALL_OPEN) else {
            return if CALL_OPEN.starts_with(h) {
                false
            } else {
                not_a_call(self)
            };
        };
        let Some(q) = rest.find('"') else {
            return false;
        };
        let (name, after) = (&rest[..q], &rest[q..]);
        let Some(args) = after.strip_prefix(CALL_ARGS) else {
            return if CALL_ARGS.starts_with(after) {
                false
            } else {
                not_a_call(self)
            };
        };
        if !self.tools.as_ref().is_some_and(|t| t.has(name)) {
            return not_a_call(self);
        }
        out.push(Delta::CallStart {
            index: self.call,
            name: name.to_string(),
        });
        self.called = true;
        self.held = args.to_string();
        self.phase = Phase::CallArgs {
            depth: 0,
            string: false,
            escaped: false,
        };
        true
    }
}

/// Pushes `make(text)` unless `text` is empty.
fn emit(out: &mut Vec<Delta>, make: impl FnOnce(String) -> Delta, text: String) {
    if !text.is_empty() {
        out.push(make(text));
    }
}

/// The length of the longest end of `s` that `marker` starts with (what
/// must wait for the next piece).
fn partial_suffix(s: &str, marker: &str) -> usize {
    (1..marker.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && marker.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Tools {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "now"}},
        ]});
        // The schemas here are plain objects: no engine check needed.
        super::super::tools::parse(body.as_object().expect("object"), &|_| Ok(()))
            .expect("parses")
            .expect("tools")
    }

    /// Every split of `text` into pieces of `n` bytes (on char boundaries)
    /// gives the same parts, merged.
    fn streamed(tools: Option<Tools>, text: &str, n: usize) -> Vec<Delta> {
        let mut s = Splitter::new(tools);
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = n.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            out.extend(s.push(&rest[..cut]));
            rest = &rest[cut..];
        }
        out.extend(s.finish());
        merge(out)
    }

    fn merge(parts: Vec<Delta>) -> Vec<Delta> {
        let mut out: Vec<Delta> = Vec::new();
        for p in parts {
            match (out.last_mut(), p) {
                (Some(Delta::Reasoning(a)), Delta::Reasoning(b))
                | (Some(Delta::Content(a)), Delta::Content(b)) => a.push_str(&b),
                (
                    Some(Delta::CallArgs { index: i, args: a }),
                    Delta::CallArgs { index: j, args: b },
                ) if *i == j => a.push_str(&b),
                (_, p) => out.push(p),
            }
        }
        out
    }

    #[test]
    fn reasoning_is_split_from_the_content() {
        assert_eq!(
            split_reasoning("<think>Paris is in France.</think>\n\nParis."),
            (Some("Paris is in France."), "Paris.")
        );
        assert_eq!(split_reasoning(" <think>cut"), (Some("cut"), ""));
        assert_eq!(
            split_reasoning("No <think> here"),
            (None, "No <think> here")
        );
        for n in 1..12 {
            assert_eq!(
                streamed(None, "\n<think>2+2 is 4 </thi</think>  \nIt is 4.", n),
                vec![
                    Delta::Reasoning("2+2 is 4 </thi".into()),
                    Delta::Content("It is 4.".into()),
                ],
                "pieces of {n}"
            );
            assert_eq!(
                streamed(None, "<thinking aloud> é", n),
                vec![Delta::Content("<thinking aloud> é".into())]
            );
            assert_eq!(
                streamed(None, "<think>cut off", n),
                vec![Delta::Reasoning("cut off".into())]
            );
        }
    }

    #[test]
    fn text_streams_at_once_and_calls_stream_their_arguments() {
        let mut s = Splitter::new(Some(tools()));
        // The first character decides: text is not held back.
        assert_eq!(s.push("I"), vec![Delta::Content("I".into())]);
        let calls = "{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Oslo }\\\"\",\"days\":[1,{\"a\":2}]}}\n{\"name\":\"now\",\"parameters\":{}}";
        for n in [1, 2, 3, 7, 100] {
            assert_eq!(
                streamed(Some(tools()), calls, n),
                vec![
                    Delta::CallStart {
                        index: 0,
                        name: "get_weather".into()
                    },
                    Delta::CallArgs {
                        index: 0,
                        args: "{\"city\":\"Oslo }\\\"\",\"days\":[1,{\"a\":2}]}".into()
                    },
                    Delta::CallStart {
                        index: 1,
                        name: "now".into()
                    },
                    Delta::CallArgs {
                        index: 1,
                        args: "{}".into()
                    },
                ],
                "pieces of {n}"
            );
        }
        // Arguments go out as they come, before the call is complete.
        let mut s = Splitter::new(Some(tools()));
        assert_eq!(
            s.push("{\"name\":\"now\",\"parameters\":{\"x"),
            vec![
                Delta::CallStart {
                    index: 0,
                    name: "now".into()
                },
                Delta::CallArgs {
                    index: 0,
                    args: "{\"x".into()
                }
            ]
        );
        assert!(s.called());
        // Not a call to a listed function, or no tools: content.
        let other = "{\"name\":\"rm\",\"parameters\":{}}";
        assert_eq!(
            streamed(Some(tools()), other, 3),
            vec![Delta::Content(other.into())]
        );
        assert_eq!(streamed(None, other, 3), vec![Delta::Content(other.into())]);
        // A reasoning model thinks, then calls.
        assert_eq!(
            streamed(
                Some(tools()),
                "<think>time?</think>\n{\"name\":\"now\",\"parameters\":{}}",
                4
            ),
            vec![
                Delta::Reasoning("time?".into()),
                Delta::CallStart {
                    index: 0,
                    name: "now".into()
                },
                Delta::CallArgs {
                    index: 0,
                    args: "{}".into()
                },
            ]
        );
    }
}
