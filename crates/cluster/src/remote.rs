//! The gateway's client of the internal API: [`HttpConnector`] gives the cluster's route a
//! [`RemoteReplicas`] backend per node and deployment, which streams a node's events over HTTP
//! (newline-delimited JSON, straight from the node: no broker in the token path).

use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendError, EventStream, GenerateRequest, ModelInfo};
use control::cluster::route::Connector;
use control::cluster::Member;
use futures::StreamExt;
use reqwest::StatusCode;

use crate::proto::{self, ErrorJson, Frame};
use crate::secret::ClusterSecret;

/// Longest line a node may send (a frame with many logprobs stays far below).
const MAX_LINE_BYTES: usize = 4 << 20;

#[derive(Clone)]
pub struct HttpConnector {
    client: reqwest::Client,
    secret: ClusterSecret,
}

impl HttpConnector {
    pub fn new(secret: ClusterSecret) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_keepalive(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the internal HTTP client: {e}"))?;
        Ok(Self { client, secret })
    }
}

impl Connector for HttpConnector {
    fn connect(&self, node: &Member, deployment: &str) -> Arc<dyn Backend> {
        Arc::new(RemoteReplicas {
            client: self.client.clone(),
            secret: self.secret.clone(),
            node: node.id.clone(),
            base: node.address.trim_end_matches('/').to_owned(),
            deployment: deployment.to_owned(),
        })
    }
}

/// One node's replicas of one deployment.
pub struct RemoteReplicas {
    client: reqwest::Client,
    secret: ClusterSecret,
    node: String,
    base: String,
    deployment: String,
}

impl RemoteReplicas {
    async fn post(
        &self,
        path: &str,
        request: &GenerateRequest,
    ) -> backend::Result<reqwest::Response> {
        let body = proto::Request::from(request);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, self.secret.bearer())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                BackendError::Unreachable(format!("node {} ({}): {e}", self.node, self.base))
            })?;
        match response.status() {
            StatusCode::OK => Ok(response),
            StatusCode::UNPROCESSABLE_ENTITY => {
                #[derive(serde::Deserialize)]
                struct Refusal {
                    error: ErrorJson,
                }
                let refusal: Refusal = response.json().await.map_err(|e| {
                    BackendError::Internal(format!("node {} sent an unreadable refusal: {e}", self.node))
                })?;
                Err(refusal.error.into())
            }
            // The node no longer runs it (placement moved): another node may.
            StatusCode::NOT_FOUND => Err(BackendError::Unreachable(format!(
                "node {} runs no replica of '{}' any more",
                self.node, self.deployment
            ))),
            StatusCode::UNAUTHORIZED => Err(BackendError::Internal(format!(
                "node {} refused this gateway's cluster secret: every process of a cluster needs the same FLYWHEEL_CLUSTER_SECRET",
                self.node
            ))),
            status => {
                let text = response.text().await.unwrap_or_default();
                Err(BackendError::Internal(format!(
                    "node {} answered {status}: {}",
                    self.node,
                    text.chars().take(500).collect::<String>()
                )))
            }
        }
    }
}

/// Splits a byte stream into lines and decodes each as a frame; a stream that ends without
/// `Finished` (or an error frame) ends with `Unreachable`: the node went away mid-stream.
fn frames(node: String, response: reqwest::Response) -> EventStream {
    let bytes = Box::pin(response.bytes_stream());
    let state = (bytes, Vec::<u8>::new(), false, node);
    Box::pin(futures::stream::unfold(
        state,
        |(mut bytes, mut buf, mut done, node)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let item = match serde_json::from_slice::<Frame>(&line[..line.len() - 1]) {
                        Ok(frame) => frame.into_item(),
                        Err(e) => Err(BackendError::Internal(format!(
                            "node {node} sent an unreadable frame: {e}"
                        ))),
                    };
                    done = matches!(item, Ok(backend::Event::Finished { .. }) | Err(_));
                    return Some((item, (bytes, buf, done, node)));
                }
                if buf.len() > MAX_LINE_BYTES {
                    let e = BackendError::Internal(format!(
                        "node {node} sent a line over {MAX_LINE_BYTES} bytes"
                    ));
                    return Some((Err(e), (bytes, buf, true, node)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        let e =
                            BackendError::Unreachable(format!("node {node} lost mid-stream: {e}"));
                        return Some((Err(e), (bytes, buf, true, node)));
                    }
                    None => {
                        let e = BackendError::Unreachable(format!(
                            "node {node} closed the stream before it finished"
                        ));
                        return Some((Err(e), (bytes, buf, true, node)));
                    }
                }
            }
        },
    ))
}

#[async_trait::async_trait]
impl Backend for RemoteReplicas {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.deployment.clone(),
            owned_by: "flywheel".into(),
            context_length: None,
            created: 0,
            kind: backend::ModelKind::Generate,
        }
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        let response = self.post("/internal/v1/generate", &request).await?;
        let mut stream = frames(self.node.clone(), response);
        // The first frame decides: a refusal before the stream is still a return value.
        match stream.next().await {
            None => Err(BackendError::Unreachable(format!(
                "node {} sent nothing",
                self.node
            ))),
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(Box::pin(
                futures::stream::once(async { Ok(first) }).chain(stream),
            )),
        }
    }

    async fn count_prompt_tokens(&self, request: &GenerateRequest) -> backend::Result<u32> {
        let response = self.post("/internal/v1/count", request).await?;
        let count: proto::Count = response.json().await.map_err(|e| {
            BackendError::Internal(format!("node {} sent an unreadable count: {e}", self.node))
        })?;
        Ok(count.prompt_tokens)
    }
}
