//! Structured outputs and tool calls on the OpenAI surface.
//!
//! `response_format` becomes the request's decoding [`Constraint`], checked
//! here so that a schema no node could compile is refused with a 400 naming
//! the field (and the keyword) before any money is reserved or node runs.
//!
//! Tools use a generic format, because the default model's chat template has
//! no tool syntax: the functions are listed in a system message, and a call
//! is the JSON object `{"name": NAME, "parameters": ARGUMENTS}` (the JSON
//! tool-call form of Llama 3.1, whose keys also sort name first, the order
//! constrained decoding generates them in), several calls one per line.
//! Every choice but `none` is a decoding constraint
//! ([`Constraint::ToolCalls`]): `required` or a named function allows calls
//! only, `auto` calls or free text that does not start with `{`; either
//! way a call's arguments match its function's schema, and
//! `parallel_tool_calls: false` allows one call. `none` lists no tools.
//! Earlier calls and tool results in the conversation are rendered as
//! assistant and `tool` messages whose content is the call objects and the
//! result. Everything the model saw is in the Request's messages and
//! everything it said in the Result's text, so verifiers check tool calls
//! like any other answer.
//! tool calls like any other answer.

use serde_json::{json, Map, Value};
use verinfer_types::records::{Constraint, Message, ToolCalls, ToolFunction};

use crate::{ApiError, SchemaCheck, SchemaRefusal};

/// Where the schema sits in the request body.
const SCHEMA_FIELD: &str = "response_format.json_schema.schema";

/// The constraint `response_format` asks for: none for `text` (or no field),
/// any JSON object for `json_object`, the schema for `json_schema`.
pub fn response_format(
    obj: &Map<String, Value>,
    schemas: SchemaCheck<'_>,
) -> Result<Option<Constraint>, ApiError> {
    let Some(rf) = obj.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let c = match rf.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(None),
        Some("json_object") => Constraint::JsonObject,
        Some("json_schema") => {
            let js = rf
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ApiError::field(
                        "response_format.json_schema",
                        "`response_format.json_schema` must be an object with a `schema`",
                    )
                })?;
            if js
                .get("strict")
                .is_some_and(|s| !s.is_boolean() && !s.is_null())
            {
                return Err(ApiError::field(
                    "response_format.json_schema.strict",
                    "`strict` must be a boolean",
                ));
            }
            // Decoding is always strict: the mask admits only documents that
            // match the schema.
            match js.get("schema") {
                Some(s @ Value::Object(_)) => Constraint::JsonSchema(s.clone()),
                _ => {
                    return Err(ApiError::field(
                        SCHEMA_FIELD,
                        "`response_format.json_schema.schema` must be a JSON schema object",
                    ))
                }
            }
        }
        _ => {
            return Err(ApiError::field(
                "response_format.type",
                "`response_format.type` must be `text`, `json_object` or `json_schema`",
            ))
        }
    };
    check(&c, SCHEMA_FIELD, schemas)?;
    Ok(Some(c))
}

/// Refuses a constraint the engines cannot compile, naming `field`.
fn check(c: &Constraint, field: &str, schemas: SchemaCheck<'_>) -> Result<(), ApiError> {
    schemas(c).map_err(|e| match e {
        SchemaRefusal::Unsupported(k) => ApiError::field(
            field,
            format!("the JSON schema keyword `{k}` is not supported by constrained decoding"),
        ),
        SchemaRefusal::Invalid(m) => ApiError::field(field, format!("invalid JSON schema: {m}")),
    })
}

/// How the model may use the functions (`tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Never call: the tools are not shown.
    None,
    /// Text or a call, as the model likes.
    Auto,
    /// A call to one of the functions.
    Required,
    /// A call to this function.
    Named(String),
}

/// The functions a request offers and how they may be called.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    /// `(name, description, parameters schema)` of each function.
    pub functions: Vec<(String, String, Value)>,
    /// `tool_choice`.
    pub choice: Choice,
    /// `parallel_tool_calls` (default true): several calls in one answer.
    pub parallel: bool,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `tools`, `tool_choice` and `parallel_tool_calls`; `None` without tools.
pub fn parse(
    obj: &Map<String, Value>,
    schemas: SchemaCheck<'_>,
) -> Result<Option<Tools>, ApiError> {
    let parallel = parallel(obj)?;
    let list = match obj.get("tools") {
        None | Some(Value::Null) => {
            return match obj.get("tool_choice") {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s == "none" => Ok(None),
                Some(_) => Err(ApiError::field(
                    "tool_choice",
                    "`tool_choice` needs `tools`",
                )),
            }
        }
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 128 => a,
        Some(_) => {
            return Err(ApiError::field(
                "tools",
                "`tools` must be an array of 1 to 128 functions",
            ))
        }
    };
    let mut functions: Vec<(String, String, Value)> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let function = function(i, t, &functions, schemas)?;
        functions.push(function);
    }
    let choice = choice(obj, &functions)?;
    Ok(Some(Tools {
        functions,
        choice,
        parallel,
    }))
}

/// `parallel_tool_calls`, true when absent.
fn parallel(obj: &Map<String, Value>) -> Result<bool, ApiError> {
    Ok(match obj.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::field(
                "parallel_tool_calls",
                "`parallel_tool_calls` must be a boolean",
            ))
        }
    })
}

/// `tools[i]`, a function not among those before it: its name,
/// description and parameters schema.
fn function(
    i: usize,
    t: &Value,
    before: &[(String, String, Value)],
    schemas: SchemaCheck<'_>,
) -> Result<(String, String, Value), ApiError> {
    let field = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::field(
            &format!("{field}.type"),
            "only `function` tools are supported",
        ));
    }
    let f = t
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::field(
                &format!("{field}.function"),
                "each tool needs a `function` object",
            )
        })?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .ok_or_else(|| {
            ApiError::field(
                &format!("{field}.function.name"),
                "a function name is 1 to 64 letters, digits, `_` or `-`",
            )
        })?;
    if before.iter().any(|(n, _, _)| n == name) {
        return Err(ApiError::field(
            &format!("{field}.function.name"),
            format!("the function `{name}` is listed twice"),
        ));
    }
    let description = match f.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => {
            return Err(ApiError::field(
                &format!("{field}.function.description"),
                "`description` must be a string",
            ))
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ApiError::field(
                &format!("{field}.function.parameters"),
                "`parameters` must be a JSON schema object",
            ))
        }
    };
    check(
        &Constraint::JsonSchema(parameters.clone()),
        &format!("{field}.function.parameters"),
        schemas,
    )?;
    Ok((name.to_string(), description, parameters))
}

/// `tool_choice`, `auto` when absent; a named function must be offered.
fn choice(
    obj: &Map<String, Value>,
    functions: &[(String, String, Value)],
) -> Result<Choice, ApiError> {
    Ok(match obj.get("tool_choice") {
        None | Some(Value::Null) => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            _ => {
                return Err(ApiError::field(
                    "tool_choice",
                    "`tool_choice` must be `none`, `auto`, `required` or a named function",
                ))
            }
        },
        Some(v) => {
            let name = v
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
            .ok_or_else(|| {
                ApiError::field(
                    "tool_choice",
                    "a named `tool_choice` is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )
            })?;
            if !functions.iter().any(|(n, _, _)| n == name) {
                return Err(ApiError::field(
                    "tool_choice",
                    format!("`tool_choice` names `{name}`, which is not in `tools`"),
                ));
            }
            Choice::Named(name.to_string())
        }
    })
}

impl Tools {
    /// Whether an answer may be a call (`tool_choice` is not `none`).
    pub fn callable(&self) -> bool {
        self.choice != Choice::None
    }

    /// The decoding constraint: calls to the functions `tool_choice`
    /// allows (for `auto`, or text), each call's arguments matching its
    /// function's schema.
    pub fn constraint(&self) -> Option<Constraint> {
        let functions: Vec<ToolFunction> = self
            .functions
            .iter()
            .filter(|(n, _, _)| match &self.choice {
                Choice::Required | Choice::Auto => true,
                Choice::Named(c) => c == n,
                Choice::None => false,
            })
            .map(|(n, _, p)| ToolFunction {
                name: n.clone(),
                parameters: p.clone(),
            })
            .collect();
        (!functions.is_empty()).then(|| {
            Constraint::ToolCalls(ToolCalls {
                functions,
                text: self.choice == Choice::Auto,
                parallel: self.parallel,
            })
        })
    }

    /// The system text that shows the functions and the call format.
    pub fn system_text(&self) -> String {
        let mut s = String::from(
            "You can call functions. To call one, answer with only a JSON object \
             {\"name\": FUNCTION_NAME, \"parameters\": ARGUMENTS} whose ARGUMENTS \
             match the function's parameters.",
        );
        if self.parallel {
            s.push_str(" To call several, write one such object per line.");
        }
        s.push_str(" The functions:");
        for (n, d, p) in &self.functions {
            s.push('\n');
            s.push_str(&json!({"name": n, "description": d, "parameters": p}).to_string());
        }
        s
    }

    /// `messages` with the functions shown: in front of the first system
    /// message's text, or as a new first system message.
    pub fn render(&self, mut messages: Vec<Message>) -> Vec<Message> {
        if !self.callable() {
            return messages;
        }
        let text = self.system_text();
        match messages.first_mut() {
            Some(m) if m.role == "system" => m.content = format!("{text}\n\n{}", m.content),
            _ => messages.insert(
                0,
                Message {
                    role: "system".into(),
                    content: text,
                },
            ),
        }
        messages
    }

    /// The calls an answer makes, when it is calls as the constraint
    /// generates them (it starts with `{`, one call to a listed function per
    /// line, one line unless `parallel`): `(name, arguments as a JSON
    /// string)` each. Anything else is text.
    pub fn calls(&self, text: &str) -> Option<Vec<(String, String)>> {
        if !self.callable() || !text.starts_with('{') {
            return None;
        }
        let calls = text
            .split('\n')
            .map(|line| self.call(line))
            .collect::<Option<Vec<_>>>()?;
        (self.parallel || calls.len() == 1).then_some(calls)
    }

    /// One call object to a listed function.
    fn call(&self, line: &str) -> Option<(String, String)> {
        let v: Value = serde_json::from_str(line).ok()?;
        let o = v.as_object()?;
        let name = o.get("name")?.as_str()?;
        let args = o.get("parameters")?;
        if o.len() != 2 || !self.functions.iter().any(|(n, _, _)| n == name) {
            return None;
        }
        Some((name.to_string(), args.to_string()))
    }

    /// Whether a function of this name is listed.
    pub fn has(&self, name: &str) -> bool {
        self.functions.iter().any(|(n, _, _)| n == name)
    }
}

/// The content that stands for an assistant message's `tool_calls` (the
/// calls as the model writes them, one per line), or `None` without calls.
pub fn assistant_calls(m: &Value, field: &str) -> Result<Option<String>, ApiError> {
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => {
            return Err(ApiError::field(
                &format!("{field}.tool_calls"),
                "`tool_calls` must be a non-empty array",
            ))
        }
    };
    let mut lines = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate() {
        let f = format!("{field}.tool_calls[{i}].function");
        let func = c.get("function");
        let name = func.and_then(|f| f.get("name")).and_then(Value::as_str);
        let args = func
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str);
        let (Some(name), Some(args)) = (name, args) else {
            return Err(ApiError::field(
                &f,
                "each call needs `function.name` and `function.arguments`",
            ));
        };
        let args: Value = serde_json::from_str(args).map_err(|e| {
            ApiError::field(
                &format!("{f}.arguments"),
                format!("`arguments` is not JSON: {e}"),
            )
        })?;
        lines.push(json!({"name": name, "parameters": args}).to_string());
    }
    Ok(Some(lines.join("\n")))
}

/// A `tool` message must name the call it answers.
pub fn tool_result(m: &Value, field: &str) -> Result<(), ApiError> {
    match m.get("tool_call_id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(ApiError::field(
            &format!("{field}.tool_call_id"),
            "a `tool` message needs the `tool_call_id` it answers",
        )),
    }
}

/// The id of call `i` of an answer: derived from the answer's id, so it is
/// the same in a stream and a whole answer.
pub fn call_id(answer_id: &str, i: usize) -> String {
    let suffix = answer_id.rsplit('-').next().unwrap_or(answer_id);
    match i {
        0 => format!("call_{suffix}"),
        i => format!("call_{suffix}_{i}"),
    }
}

/// The `tool_calls` of a response message for `calls`.
pub fn tool_calls(answer_id: &str, calls: &[(String, String)]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({
                "id": call_id(answer_id, i),
                "type": "function",
                "function": {"name": name, "arguments": args},
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::engines;

    fn format_of(v: Value) -> Result<Option<Constraint>, ApiError> {
        response_format(v.as_object().unwrap(), &engines)
    }

    fn parse(obj: &Map<String, Value>) -> Result<Option<Tools>, ApiError> {
        super::parse(obj, &engines)
    }

    #[test]
    fn response_formats_become_constraints() {
        assert_eq!(format_of(json!({})).unwrap(), None);
        assert_eq!(
            format_of(json!({"response_format": {"type": "text"}})).unwrap(),
            None
        );
        assert_eq!(
            format_of(json!({"response_format": {"type": "json_object"}})).unwrap(),
            Some(Constraint::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            format_of(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "strict": true, "schema": schema}}}))
            .unwrap(),
            Some(Constraint::JsonSchema(schema))
        );
    }

    #[test]
    fn bad_formats_name_the_field_and_keyword() {
        let e = format_of(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "not": {"type": "null"}}}}}))
        .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.param.as_deref()),
            (400, Some(SCHEMA_FIELD))
        );
        assert!(e.message.contains("`not`"), "{}", e.message);
        let e = format_of(json!({"response_format": {"type": "yaml"}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.type"));
        let e = format_of(json!({"response_format": {"type": "json_schema"}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.json_schema"));
        let e = format_of(json!({"response_format": {"type": "json_schema",
            "json_schema": {"schema": {"type": "number", "minimum": 0.5}}}}))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some(SCHEMA_FIELD));
    }

    fn weather() -> Value {
        json!({"tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"], "additionalProperties": false}}}]})
    }

    #[test]
    fn tool_choices_become_constraints() {
        let mut body = weather();
        let t = parse(body.as_object().unwrap()).unwrap().unwrap();
        assert_eq!((t.choice.clone(), t.parallel), (Choice::Auto, true));
        // auto: calls or text, and a call's arguments follow the schema.
        let Some(Constraint::ToolCalls(c)) = t.constraint() else {
            panic!("a tool constraint")
        };
        assert_eq!((c.text, c.parallel), (true, true));
        assert_eq!(c.functions[0].name, "get_weather");
        assert_eq!(c.functions[0].parameters, t.functions[0].2);
        assert_eq!(engines(&Constraint::ToolCalls(c.clone())), Ok(()));
        body["tool_choice"] = json!("required");
        body["parallel_tool_calls"] = json!(false);
        let t = parse(body.as_object().unwrap()).unwrap().unwrap();
        let Some(Constraint::ToolCalls(r)) = t.constraint() else {
            panic!("a tool constraint")
        };
        assert_eq!((r.text, r.parallel), (false, false));
        body["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
        let e = parse(body.as_object().unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        body["tool_choice"] = json!("none");
        let t = parse(body.as_object().unwrap()).unwrap().unwrap();
        assert!(!t.callable());
        assert_eq!(t.constraint(), None);
        assert_eq!(t.render(vec![]), vec![]);
        body["parallel_tool_calls"] = json!("yes");
        let e = parse(body.as_object().unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("parallel_tool_calls"));
    }

    #[test]
    fn bad_tools_name_the_field() {
        let mut body = weather();
        body["tools"][0]["function"]["parameters"] = json!({"type": "object", "not": {}});
        let e = parse(body.as_object().unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.parameters"));
        assert!(e.message.contains("`not`"));
        body["tools"][0]["function"]["name"] = json!("bad name");
        let e = parse(body.as_object().unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
        let e = parse(json!({"tool_choice": "required"}).as_object().unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn calls_render_and_parse_back() {
        let t = parse(weather().as_object().unwrap()).unwrap().unwrap();
        let msgs = t.render(vec![Message {
            role: "user".into(),
            content: "Weather in Paris?".into(),
        }]);
        assert_eq!(msgs[0].role, "system");
        assert!(msgs[0].content.contains("get_weather"));
        let one = r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#;
        let call = ("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string());
        assert_eq!(t.calls(one), Some(vec![call.clone()]));
        let two = format!("{one}\n{}", one.replace("Paris", "Oslo"));
        let calls = t.calls(&two).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].1, r#"{"city":"Oslo"}"#);
        // Text is text: what the constraint generates as calls starts with `{`.
        assert_eq!(t.calls(&format!(" {one}")), None);
        assert_eq!(t.calls("It is sunny."), None);
        assert_eq!(t.calls(r#"{"name":"other","parameters":{}}"#), None);
        let mut single = t.clone();
        single.parallel = false;
        assert_eq!(single.calls(&two), None);
        assert_eq!(single.calls(one), Some(vec![call.clone()]));
        let prior = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]});
        assert_eq!(
            assistant_calls(&prior, "messages[1]").unwrap().unwrap(),
            r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#
        );
        assert!(tool_result(&json!({"role": "tool", "content": "sunny"}), "messages[2]").is_err());
        let ids = tool_calls("chatcmpl-abc", &calls);
        assert_eq!(
            (&ids[0]["id"], &ids[1]["id"]),
            (&json!("call_abc"), &json!("call_abc_1"))
        );
    }

    #[test]
    fn a_conversation_with_calls_parses_into_the_request() {
        use crate::testing::parse as openai_parse;
        use verinfer_types::records::Input;
        let mut body = weather();
        body["model"] = json!("m");
        body["messages"] = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        ]);
        body["tool_choice"] = json!("required");
        let p = openai_parse(body.to_string().as_bytes(), true).unwrap();
        let Input::Messages(m) = &p.input else {
            panic!("messages")
        };
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(
            m[2].content,
            r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#
        );
        assert!(p.decoding.constraint.is_some());
        // A required call and a response format cannot both hold.
        body["response_format"] = json!({"type": "json_object"});
        let e = openai_parse(body.to_string().as_bytes(), true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        // A tool message must say which call it answers.
        body["response_format"] = Value::Null;
        body["messages"][2] = json!({"role": "tool", "content": "Sunny"});
        let e = openai_parse(body.to_string().as_bytes(), true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[2].tool_call_id"));
    }
}
