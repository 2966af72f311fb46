//! How a batch line runs: parsed by the interactive route's parser, served through
//! `Serving::serve` (admission, the batch price, metering) at `Priority::Batch`, gathered
//! whole and rendered as the interactive route would answer it. A line still waiting for a
//! place to run when its batch withdraws it (the window ended, a cancel) leaves the queue
//! unbilled; embeddings lines, short, are always finished.

use async_trait::async_trait;
use backend::Event;
use backend::Priority;
use batch::{Endpoint, LineOutcome, LineRequest};
use serde_json::Value;
use serving::{Delivery, Serving, Withdrawn};

use crate::error::{ApiError, Code, Result};
use crate::routes::generate::collect;
use crate::wire::chat::{self, ChatCompletionView};
use crate::wire::completions::{self, CompletionView};
use crate::wire::embeddings::{self, EmbeddingsView};
use crate::wire::{unix_now, ResponseMeta, UsageView, ValidRequest};

/// The gateway's [`batch::Executor`].
pub struct LineExecutor {
    serving: Serving,
}

impl LineExecutor {
    pub fn new(serving: Serving) -> Self {
        Self { serving }
    }

    /// The line's answer; `None` when it was withdrawn before it ran.
    async fn run(&self, line: &LineRequest<'_>) -> Result<Option<Value>> {
        if line.withdraw.is_cancelled() {
            return Ok(None);
        }
        let body = line.body.as_bytes();
        let (request, chat): (ValidRequest, bool) = match line.endpoint {
            Endpoint::Chat => (chat::parse(body)?, true),
            Endpoint::Completions => (completions::parse(body)?, false),
            Endpoint::Embeddings => return self.embed(line).await.map(Some),
        };
        if request.stream {
            return Err(ApiError::invalid(
                "stream",
                "A batch request cannot stream: leave 'stream' out or false.",
            ));
        }
        let prompt_param = request.prompt_param();
        let tenant = line.payer.map(|p| p.tenant.id.clone());
        let mut generate = request.generate_request(line.request_id.to_owned(), tenant);
        generate.priority = Priority::Batch;
        let mut events = self
            .serving
            .serve(line.payer, generate, Delivery::Whole)
            .await
            .map_err(|err| ApiError::from_serve(err, prompt_param))?;
        // While it waits for a place to run, the line may be withdrawn.
        loop {
            match events.next_or_withdrawn(line.withdraw).await {
                Err(Withdrawn) => return Ok(None),
                Ok(Some(Ok(Event::Queued { .. }))) => {}
                Ok(Some(Ok(event))) => {
                    events.unread(event);
                    break;
                }
                Ok(Some(Err(err))) => return Err(ApiError::from_serve(err, prompt_param)),
                Ok(None) => {
                    return Err(ApiError::from_backend(
                        backend::BackendError::Internal(
                            "the backend's stream ended before the request was admitted".into(),
                        ),
                        prompt_param,
                    ))
                }
            }
        }
        let whole = collect(&mut events, &request, prompt_param).await?;
        let meta = ResponseMeta {
            id: line.request_id.to_owned(),
            created: unix_now(),
            model: request.model.clone(),
        };
        let usage = UsageView::from(whole.usage);
        let view = if chat {
            serde_json::to_value(ChatCompletionView::new(meta, whole.answers, usage))
        } else {
            serde_json::to_value(CompletionView::new(meta, whole.answers, usage))
        };
        view.map(Some)
            .map_err(|e| ApiError::new(Code::Internal, format!("cannot render the answer: {e}")))
    }
}

impl LineExecutor {
    /// An embeddings line: the interactive route's parser and `Serving::embed` (its
    /// admission and metering) at batch priority, answered in the route's shape.
    async fn embed(&self, line: &LineRequest<'_>) -> Result<Value> {
        let request = embeddings::parse(line.body.as_bytes())?;
        let tenant = line.payer.map(|p| p.tenant.id.clone());
        let mut embed = request.embed_request(line.request_id.to_owned(), tenant);
        embed.priority = Priority::Batch;
        let out = self
            .serving
            .embed(line.payer, embed)
            .await
            .map_err(|err| ApiError::from_serve(err, "input"))?;
        let view = EmbeddingsView::new(
            request.model,
            out.vectors,
            out.prompt_tokens,
            request.encoding,
        );
        serde_json::to_value(view)
            .map_err(|e| ApiError::new(Code::Internal, format!("cannot render the answer: {e}")))
    }
}

/// The body's error message, as the interactive route would answer it.
fn parsed<T>(parsed: Result<T>) -> std::result::Result<(), String> {
    parsed
        .map(drop)
        .map_err(|err| err.body().error.message.to_string())
}

#[async_trait]
impl batch::Executor for LineExecutor {
    /// Embeddings bodies are checked up front with the route's parser (a wrong `input` is
    /// known before anything runs); generation bodies when they run, as before.
    fn check(&self, endpoint: Endpoint, body: &str) -> std::result::Result<(), String> {
        match endpoint {
            Endpoint::Embeddings => parsed(embeddings::parse(body.as_bytes())),
            Endpoint::Chat | Endpoint::Completions => Ok(()),
        }
    }

    async fn backlog(
        &self,
        model: &str,
        batch: &str,
        lines: usize,
        deadline: std::time::SystemTime,
    ) -> Option<usize> {
        self.serving
            .batch_backlog(model, batch, lines, deadline)
            .await
    }

    async fn execute(&self, line: LineRequest<'_>) -> LineOutcome {
        match self.run(&line).await {
            Ok(None) => LineOutcome::withdrawn(),
            Ok(Some(body)) => LineOutcome {
                status_code: 200,
                body,
                error_code: None,
            },
            Err(err) => LineOutcome {
                status_code: err.status().as_u16(),
                body: serde_json::to_value(err.body()).unwrap_or(Value::Null),
                error_code: err.body().error.code.map(str::to_owned),
            },
        }
    }
}
