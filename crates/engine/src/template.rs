//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`), rendered with
//! minijinja configured the way Hugging Face's `apply_chat_template` configures jinja2
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`, `strftime_now`).

use backend::ChatMessage;
use minijinja::{context, Environment, Error, ErrorKind};

/// A compiled chat template together with the special-token texts it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat_template";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template itself does not compile: a model problem, reported at load time.
    #[error("the model's chat template does not compile: {0}")]
    Invalid(String),
    /// The template refused these messages (`raise_exception`) or failed on them.
    #[error("the model's chat template rejected the messages: {0}")]
    Rejected(String),
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String {
            chrono::Utc::now().format(&fmt).to_string()
        });
        env.add_filter("tojson", python_tojson);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| TemplateError::Invalid(describe(&e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Render the conversation with the generation prompt appended.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, TemplateError> {
        self.render_with_tools(messages, None)
    }

    /// Render the conversation offering `tools` (OpenAI's `tools` array: `{"type":
    /// "function", "function": {"name", "description", "parameters"}}` each), as Hugging
    /// Face's `apply_chat_template(messages, tools=…)` does: `tools` is `none` when there are
    /// none, which templates test with `if tools` or `tools is not none`.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TemplateError> {
        self.render_full(messages, tools, true)
    }

    /// Render the conversation, with the generation prompt appended when
    /// `add_generation_prompt` (without it: a finished conversation, as training data is).
    pub fn render_full(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let tools = tools.map(minijinja::Value::from_serialize);
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError::Invalid(describe(&e)))?;
        tmpl.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| TemplateError::Rejected(describe(&e)))
    }
}

/// Jinja2's `tojson` as Hugging Face's templates see it: Python's `json.dumps` spacing
/// (`", "` and `": "`; `indent` for pretty output) and non-ASCII left as is, so a tool schema
/// or a call's arguments read exactly as in the model's training data.
fn python_tojson(value: minijinja::Value, indent: Option<usize>) -> Result<String, Error> {
    let fail =
        |e: &dyn std::fmt::Display| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"));
    let json = serde_json::to_value(&value).map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let formatter = serde_json::ser::PrettyFormatter::with_indent(&pad);
            serde::Serialize::serialize(
                &json,
                &mut serde_json::Serializer::with_formatter(&mut out, formatter),
            )
        }
        None => serde::Serialize::serialize(
            &json,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonFormatter),
        ),
    };
    written.map_err(|e| fail(&e))?;
    String::from_utf8(out).map_err(|e| fail(&e))
}

/// `json.dumps` separators: a space after each `,` and `:`.
struct PythonFormatter;

/// The separator before every item but the first of an array or object.
fn separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

fn describe(e: &Error) -> String {
    match e.detail() {
        Some(detail) => detail.to_owned(),
        None => e.to_string(),
    }
}

/// The template used when a GGUF carries none: ChatML, the most common convention.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::text(role, content)
    }

    #[test]
    fn renders_llama3_style_with_python_methods() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role not in ['system','user','assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content.strip() }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").expect("compiles");
        let out = t.render(&[msg("user", "  hi  ")]).expect("renders");
        assert_eq!(
            out,
            "<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let err = t.render(&[msg("wizard", "x")]).expect_err("refused");
        assert!(err.to_string().contains("bad role wizard"), "{err}");
    }

    #[test]
    fn chatml_fallback_renders() {
        let t = ChatTemplate::new(CHATML, "", "").expect("compiles");
        let out = t.render(&[msg("user", "Hi")]).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tools_reach_the_template_in_their_own_key_order_and_are_none_without_any() {
        let src = "{% if tools is not none %}<tools>{% for t in tools %}{{ t.function.name }}({{ t.function.parameters | tojson }}) {% endfor %}</tools>\n{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").expect("compiles");
        let tools = serde_json::json!([{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let out = t
            .render_with_tools(&[msg("user", "Hi")], Some(&tools))
            .expect("renders");
        assert!(
            out.starts_with(
                "<tools>get_weather({\"type\": \"object\", \"properties\": {\"city\": "
            ),
            "{out}"
        );
        assert!(out.ends_with("Hi"), "{out}");
        assert_eq!(t.render(&[msg("user", "Hi")]).expect("renders"), "Hi");
        // The tool-call format follows from the template.
        let hermes = format!("{src}<tool_call>");
        assert_eq!(
            crate::tool_calls::CallFormat::detect(&hermes),
            Some(crate::tool_calls::CallFormat::Hermes)
        );
    }

    #[test]
    fn broken_template_is_reported_at_load() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(TemplateError::Invalid(_))
        ));
    }
}
