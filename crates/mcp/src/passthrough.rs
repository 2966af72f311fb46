//! Prompts and resources of the caller's servers, passed through like tools: `prompts/list`
//! (names `SERVER__PROMPT`) and `prompts/get` routed by the name; `resources/list` and
//! `resources/templates/list` (URIs as the servers give them, names prefixed with the server)
//! and `resources/read` routed to the server that lists the URI, or whose template's fixed
//! start it begins with. A server that offers no prompts or resources simply adds none; one
//! that fails is left out, as in `tools/list`. Reading is not metered (only tool calls are).

use futures::future::join_all;
use serde_json::{json, Value};
use store::{McpServerRecord, McpSessionRecord};

use crate::client::all_pages;
use crate::endpoint::{code, own_name, McpCaller};
use crate::error::Result;
use crate::names::exposed;
use crate::Mcp;

/// MCP's "resource not found".
const RESOURCE_NOT_FOUND: i64 = -32002;

type Outcome = std::result::Result<Value, (i64, String)>;

/// One of the lists a server may offer: its method and the key of its items.
#[derive(Debug, Clone, Copy)]
enum List {
    Prompts,
    Resources,
    Templates,
}

impl List {
    fn method(self) -> &'static str {
        match self {
            List::Prompts => "prompts/list",
            List::Resources => "resources/list",
            List::Templates => "resources/templates/list",
        }
    }

    fn key(self) -> &'static str {
        match self {
            List::Prompts => "prompts",
            List::Resources => "resources",
            List::Templates => "resourceTemplates",
        }
    }
}

impl Mcp {
    /// Handles the prompt and resource methods; `None` for any other method.
    pub(crate) async fn passthrough(
        &self,
        caller: &McpCaller,
        session: &McpSessionRecord,
        method: &str,
        params: Option<&Value>,
    ) -> Option<Outcome> {
        let list = match method {
            "prompts/list" => List::Prompts,
            "resources/list" => List::Resources,
            "resources/templates/list" => List::Templates,
            "prompts/get" => return Some(self.get_prompt(caller, session, params).await),
            "resources/read" => return Some(self.read_resource(caller, session, params).await),
            _ => return None,
        };
        Some(self.union(caller, session, list).await)
    }

    /// Every page of `list` of one server; a server without it has none.
    async fn server_list(
        &self,
        session: &McpSessionRecord,
        server: &McpServerRecord,
        list: List,
    ) -> Result<Vec<Value>> {
        all_pages(list.key(), |params| async move {
            // A server that does not offer the list (or refuses it) adds nothing.
            Ok(self
                .request(session, server, list.method(), params)
                .await?
                .ok())
        })
        .await
    }

    /// `list` of every server the caller sees, each item's name prefixed with its server.
    async fn union(&self, caller: &McpCaller, session: &McpSessionRecord, list: List) -> Outcome {
        let servers = self.visible_servers(caller).await.map_err(internal)?;
        let lists = join_all(servers.iter().map(|server| async move {
            if self.health.skip(&server.id).is_some() {
                return Vec::new();
            }
            match self.server_list(session, server, list).await {
                Ok(items) => items
                    .into_iter()
                    .map(|mut item| {
                        if let Some(name) = item.get("name").and_then(Value::as_str) {
                            item["name"] = json!(exposed(&server.name, name));
                        }
                        item
                    })
                    .collect(),
                Err(e) => {
                    self.health.failed(&server.id, &e.to_string());
                    Vec::new()
                }
            }
        }))
        .await;
        Ok(json!({ list.key(): lists.into_iter().flatten().collect::<Vec<_>>() }))
    }

    async fn get_prompt(
        &self,
        caller: &McpCaller,
        session: &McpSessionRecord,
        params: Option<&Value>,
    ) -> Outcome {
        let name = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .ok_or((
                code::INVALID_PARAMS,
                "prompts/get needs the prompt's \"name\"".to_owned(),
            ))?;
        let unknown = || {
            (
                code::INVALID_PARAMS,
                format!("unknown prompt '{name}'; prompts/list lists the prompts you may get"),
            )
        };
        let servers = self.visible_servers(caller).await.map_err(internal)?;
        let (server, own) = own_name(&servers, name, unknown, |server| {
            self.server_list(session, server, List::Prompts)
        })
        .await?;
        let mut forwarded = json!({ "name": own });
        if let Some(arguments) = params.and_then(|p| p.get("arguments")) {
            forwarded["arguments"] = arguments.clone();
        }
        self.pass_on(session, server, "prompts/get", forwarded)
            .await
    }

    async fn read_resource(
        &self,
        caller: &McpCaller,
        session: &McpSessionRecord,
        params: Option<&Value>,
    ) -> Outcome {
        let uri = params
            .and_then(|p| p.get("uri"))
            .and_then(Value::as_str)
            .ok_or((
                code::INVALID_PARAMS,
                "resources/read needs the resource's \"uri\"".to_owned(),
            ))?;
        let servers = self.visible_servers(caller).await.map_err(internal)?;
        let servers: Vec<&McpServerRecord> = servers
            .iter()
            .filter(|s| self.health.skip(&s.id).is_none())
            .collect();
        let listed = join_all(servers.iter().map(|server| async move {
            let resources = self
                .server_list(session, server, List::Resources)
                .await
                .unwrap_or_default();
            if resources
                .iter()
                .any(|r| r.get("uri").and_then(Value::as_str) == Some(uri))
            {
                return (true, false);
            }
            let templates = self
                .server_list(session, server, List::Templates)
                .await
                .unwrap_or_default();
            let templated = templates.iter().any(|t| {
                t.get("uriTemplate")
                    .and_then(Value::as_str)
                    .is_some_and(|template| matches_template(template, uri))
            });
            (false, templated)
        }))
        .await;
        let owner = listed
            .iter()
            .position(|(exact, _)| *exact)
            .or_else(|| listed.iter().position(|(_, templated)| *templated))
            .ok_or((
                RESOURCE_NOT_FOUND,
                format!("no MCP server you may use lists the resource '{uri}'; resources/list lists them"),
            ))?;
        self.pass_on(
            session,
            servers[owner],
            "resources/read",
            json!({ "uri": uri }),
        )
        .await
    }

    /// One request to `server`, its JSON-RPC error passed on with the server named.
    async fn pass_on(
        &self,
        session: &McpSessionRecord,
        server: &McpServerRecord,
        method: &str,
        params: Value,
    ) -> Outcome {
        match self.request(session, server, method, Some(params)).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err((
                e.0.get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or(code::UPSTREAM),
                format!("the MCP server '{}': {}", server.name, e.message()),
            )),
            Err(e) => Err(upstream(e)),
        }
    }
}

/// Whether `uri` may be an instance of the URI template `template`: it starts with the
/// template's text before its first expression (and equals a template without one).
fn matches_template(template: &str, uri: &str) -> bool {
    match template.find('{') {
        Some(at) => at > 0 && uri.starts_with(&template[..at]),
        None => template == uri,
    }
}

fn internal(e: crate::McpError) -> (i64, String) {
    (code::INTERNAL, e.to_string())
}

fn upstream(e: crate::McpError) -> (i64, String) {
    (code::UPSTREAM, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::matches_template;

    #[test]
    fn uris_match_their_templates_by_the_fixed_start() {
        assert!(matches_template(
            "file:///logs/{name}",
            "file:///logs/today.txt"
        ));
        assert!(!matches_template(
            "file:///logs/{name}",
            "file:///etc/passwd"
        ));
        assert!(!matches_template("{scheme}://x", "http://x"));
        assert!(matches_template("config://app", "config://app"));
    }
}
