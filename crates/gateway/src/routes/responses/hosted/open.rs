//! Opening a response's MCP servers: each `mcp` tool's server opened and its tools listed
//! (once per conversation), the tools offered to the model named so they do not clash, and the
//! calls the client approved (`mcp_approval_response`) made before the first turn.

use std::collections::{HashMap, HashSet};

use backend::{FunctionSpec, Prompt, Tool, Usage};
use mcp::{HostedSpec, McpCaller, McpError};
use serde_json::{json, Value};
use tenancy::Scope;

use super::{conversation_messages, Agent, Offered, Setup};
use crate::auth::Caller;
use crate::error::{ApiError, Code, Result};
use crate::wire::responses::hosted::{self as wire, McpTool};
use crate::wire::responses::items::Item;
use crate::wire::tools::valid_name;
use crate::AppState;

/// An MCP error about the `mcp` tool at `param`, as the Responses API reports it.
fn server_error(err: McpError, tool: &McpTool) -> ApiError {
    match err {
        McpError::NotFound(message) => {
            ApiError::invalid(format!("{}.server_label", tool.param), message)
        }
        McpError::Invalid { message, .. } | McpError::Forbidden(message) => ApiError::invalid(
            format!("{}.server_url", tool.param),
            format!("Invalid '{}.server_url': {message}", tool.param),
        ),
        other => ApiError::new(
            Code::ExternalConnector,
            format!(
                "Error retrieving tool list from MCP server: '{}': {other}. Check that the server is up, or leave it out of 'tools'.",
                tool.label
            ),
        )
        .with_param("tools"),
    }
}

impl Agent {
    /// Opens the servers, lists their tools and makes the calls the client approved.
    pub(super) async fn open(state: &AppState, caller: &Caller, setup: Setup) -> Result<Agent> {
        let mcp = state.mcp().ok_or_else(|| {
            ApiError::invalid("tools", "MCP tools are not available on this server.")
        })?;
        caller.require(Scope::Mcp)?;
        let mcp_caller = McpCaller {
            principal: caller.principal().cloned(),
        };
        let messages = match &setup.valid.prompt {
            Prompt::Chat(messages) => messages.clone(),
            _ => Vec::new(),
        };
        let mut agent = Agent {
            state: state.clone(),
            caller: caller.clone(),
            mcp,
            mcp_caller,
            servers: Vec::new(),
            offered: HashMap::new(),
            mcp_tools: Vec::new(),
            first_tools: None,
            base: setup.valid,
            messages,
            preface: Vec::new(),
            calls: 0,
            max_calls: setup.max_calls,
            made: HashSet::new(),
            tools_off: false,
            id: setup.id,
            events: setup.events,
            usage: Usage::default(),
        };
        if let Err(err) = agent
            .prepare(
                setup.servers,
                setup.mcp_choice,
                &setup.conversation,
                &setup.input,
            )
            .await
        {
            agent.close().await;
            return Err(err);
        }
        Ok(agent)
    }

    async fn prepare(
        &mut self,
        servers: Vec<McpTool>,
        choice: Option<(String, Option<String>)>,
        conversation: &[Item],
        input: &[Item],
    ) -> Result<()> {
        let mut taken: HashSet<String> = self
            .base
            .tools
            .tools
            .iter()
            .map(|t| t.function.name.clone())
            .collect();
        for tool in servers {
            let spec = HostedSpec {
                label: tool.label.clone(),
                url: tool.url.clone(),
                headers: tool.headers.clone(),
            };
            let hosted = self
                .mcp
                .hosted(&self.mcp_caller, spec)
                .await
                .map_err(|e| server_error(e, &tool))?;
            let index = self.servers.len();
            self.servers.push((tool, hosted));
            let tool = &self.servers[index].0;
            let listed = conversation.iter().rev().find_map(|item| match item {
                Item::McpListTools {
                    server_label,
                    tools,
                    ..
                } if *server_label == tool.label => Some(tools.clone()),
                _ => None,
            });
            let listed = match listed {
                Some(tools) => tools,
                None => {
                    let tools = self
                        .mcp
                        .hosted_tools(&self.servers[index].1)
                        .await
                        .map_err(|e| server_error(e, tool))?;
                    let listed = wire::listed_tools(&tools, &tool.allowed);
                    self.preface.push(Item::McpListTools {
                        id: format!("mcpl_{}_{index}", self.suffix()),
                        server_label: tool.label.clone(),
                        tools: listed.clone(),
                    });
                    listed
                }
            };
            for entry in listed.as_array().into_iter().flatten() {
                let Some(name) = entry.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let read_only = entry
                    .pointer("/annotations/readOnlyHint")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !tool.allowed.matches(name, read_only) {
                    continue;
                }
                let model_name = model_name(&tool.label, name, &taken);
                taken.insert(model_name.clone());
                let mut description = entry
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if description.is_none() {
                    description = Some(format!("A tool of the MCP server '{}'.", tool.label));
                }
                let declared = Tool {
                    r#type: "function",
                    function: FunctionSpec {
                        name: model_name.clone(),
                        description,
                        parameters: wire::model_schema(entry.get("input_schema")),
                    },
                };
                if let Some((label, only)) = &choice {
                    if *label == tool.label && only.as_deref().is_none_or(|n| n == name) {
                        self.first_tools
                            .get_or_insert_with(Vec::new)
                            .push(declared.clone());
                    }
                }
                self.mcp_tools.push(declared);
                self.offered.insert(
                    model_name,
                    Offered {
                        server: index,
                        tool: name.to_owned(),
                        read_only,
                    },
                );
            }
        }
        if let Some((label, name)) = &choice {
            if self.first_tools.is_none() {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "Invalid 'tool_choice': the MCP server '{label}' offers no tool{} that 'allowed_tools' lets through.",
                        name.as_ref().map(|n| format!(" named '{n}'")).unwrap_or_default()
                    ),
                ));
            }
        }
        self.answer_approvals(conversation, input).await
    }

    /// Makes the calls the client approved (`mcp_approval_response` items of this input).
    async fn answer_approvals(&mut self, conversation: &[Item], input: &[Item]) -> Result<()> {
        for (i, item) in input.iter().enumerate() {
            let Item::McpApprovalResponse {
                approval_request_id,
                approve,
                reason,
            } = item
            else {
                continue;
            };
            let param = format!("input[{i}].approval_request_id");
            let answered = conversation.iter().any(|item| {
                matches!(item, Item::McpCall { approval_request_id: Some(id), .. } if id == approval_request_id)
            });
            if answered {
                return Err(ApiError::invalid(
                    param,
                    format!("The approval request '{approval_request_id}' was already answered."),
                ));
            }
            let Some((label, name, arguments)) = conversation.iter().find_map(|item| match item {
                Item::McpApprovalRequest {
                    id,
                    server_label,
                    name,
                    arguments,
                } if id == approval_request_id => {
                    Some((server_label.clone(), name.clone(), arguments.clone()))
                }
                _ => None,
            }) else {
                return Err(ApiError::invalid(
                    param,
                    format!("No approval request '{approval_request_id}' was found: continue from the response that made it with 'previous_response_id', or send its 'mcp_approval_request' item in 'input'."),
                ));
            };
            let Some(server) = self.servers.iter().position(|(t, _)| t.label == label) else {
                return Err(ApiError::invalid(
                    param,
                    format!("The approval request '{approval_request_id}' is for the MCP server '{label}', which is not in 'tools'."),
                ));
            };
            let call_id = format!("mcp_{}_a{i}", self.suffix());
            let item = if *approve {
                let (output, error) = self.call(server, &name, &arguments).await;
                Item::McpCall {
                    id: call_id,
                    server_label: label,
                    name,
                    arguments,
                    output,
                    error,
                    approval_request_id: Some(approval_request_id.clone()),
                }
            } else {
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                Item::McpCall {
                    id: call_id,
                    server_label: label,
                    name,
                    arguments,
                    output: None,
                    error: Some(json!({
                        "type": "mcp_tool_execution_error",
                        "content": [{"type": "text", "text": format!("The user did not approve this call{why}.")}],
                    })),
                    approval_request_id: Some(approval_request_id.clone()),
                }
            };
            self.messages
                .extend(conversation_messages(std::slice::from_ref(&item))?);
            self.preface.push(item);
        }
        Ok(())
    }
}

/// The name the model calls `tool` of server `label` by: the tool's own name when it is a
/// valid function name nobody else uses, else `LABEL__TOOL` (shortened with a hash to fit).
fn model_name(label: &str, tool: &str, taken: &HashSet<String>) -> String {
    if valid_name(tool) && !taken.contains(tool) {
        return tool.to_owned();
    }
    let cleaned: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = mcp::names::exposed(label, &cleaned);
    if valid_name(&name) && !taken.contains(&name) {
        return name;
    }
    let mut n = 2;
    loop {
        let candidate = format!("{}_{n}", &name[..name.len().min(58)]);
        if !taken.contains(&candidate) {
            return candidate;
        }
        n += 1;
    }
}
