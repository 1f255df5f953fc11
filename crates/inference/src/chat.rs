//! Chat templates (Jinja, from `tokenizer.chat_template`) applied to OpenAI-style messages.

use serde::{Deserialize, Serialize};

use crate::error::{LlmError, Result};

/// One chat message (`{"role": "user", "content": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// ChatML, used when a model carries no template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma's turns (`<start_of_turn>user` / `model`, system text prefixed to
/// the first turn), used for `gemma3` files that carry no template. No BOS:
/// the tokenizer adds it.
pub const GEMMA_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] != 'system' %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' }}{% if loop.index0 == 1 and messages[0]['role'] == 'system' %}{{ messages[0]['content'] | trim + '\\n\\n' }}{% endif %}{{ message['content'] | trim + '<end_of_turn>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// Render a Jinja chat template.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    env.render_str(template, ctx)
        .map_err(|e| LlmError::Template(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders() {
        let m = [ChatMessage::new("user", "Hi")];
        let s = render(CHATML_TEMPLATE, &m, true, "", "").expect("render");
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn gemma_turns_render() {
        let m = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", " Hi "),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "Bye"),
        ];
        let s = render(GEMMA_TEMPLATE, &m, true, "<bos>", "<eos>").expect("render");
        assert_eq!(
            s,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn bad_template_is_an_error() {
        let m = [ChatMessage::new("user", "Hi")];
        assert!(matches!(
            render("{% for %}", &m, true, "", ""),
            Err(LlmError::Template(_))
        ));
        assert!(render("{{ raise_exception('no') }}", &m, true, "", "").is_err());
    }
}
