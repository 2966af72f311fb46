//! How a batch line runs: parsed by the interactive route's parser, served through
//! `Serving::serve` (admission, the batch price, metering) at `Priority::Batch`, gathered
//! whole and rendered as the interactive route would answer it.

use async_trait::async_trait;
use backend::Priority;
use batch::{Endpoint, LineOutcome, LineRequest};
use serde_json::Value;
use serving::{Delivery, Serving};

use crate::error::{ApiError, Code, Result};
use crate::routes::generate::collect;
use crate::wire::chat::{self, ChatCompletionView};
use crate::wire::completions::{self, CompletionView};
use crate::wire::{unix_now, ResponseMeta, UsageView, ValidRequest};

/// The gateway's [`batch::Executor`].
pub struct LineExecutor {
    serving: Serving,
}

impl LineExecutor {
    pub fn new(serving: Serving) -> Self {
        Self { serving }
    }

    async fn run(&self, line: &LineRequest<'_>) -> Result<Value> {
        let body = line.body.as_bytes();
        let request: ValidRequest = match line.endpoint {
            Endpoint::Chat => chat::parse(body)?,
            Endpoint::Completions => completions::parse(body)?,
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
        let whole = collect(&mut events, &request, prompt_param).await?;
        let meta = ResponseMeta {
            id: line.request_id.to_owned(),
            created: unix_now(),
            model: request.model.clone(),
        };
        let usage = UsageView::from(whole.usage);
        let view = match line.endpoint {
            Endpoint::Chat => {
                serde_json::to_value(ChatCompletionView::new(meta, whole.answers, usage))
            }
            Endpoint::Completions => {
                serde_json::to_value(CompletionView::new(meta, whole.answers, usage))
            }
        };
        view.map_err(|e| ApiError::new(Code::Internal, format!("cannot render the answer: {e}")))
    }
}

#[async_trait]
impl batch::Executor for LineExecutor {
    async fn execute(&self, line: LineRequest<'_>) -> LineOutcome {
        match self.run(&line).await {
            Ok(body) => LineOutcome {
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
