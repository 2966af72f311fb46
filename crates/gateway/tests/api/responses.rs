//! Non-streamed response shapes.

use backend::{Event, FinishReason, Usage};

use crate::common::*;

#[tokio::test]
async fn chat_completion_shape() {
    let app = app(vec![Scripted::hello("m")]).await;
    let reply = post(&app, "/v1/chat/completions", chat_body("m")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    let id = json["id"].as_str().unwrap_or_default();
    assert!(id.starts_with("chatcmpl-") && id.len() > 20, "{id}");
    assert!(json["created"].as_u64().is_some_and(|t| t > 1_700_000_000));
    insta::assert_json_snapshot!(json, { ".id" => "[id]", ".created" => "[created]" });
}

#[tokio::test]
async fn text_completion_shape() {
    let scripted = Scripted::new(
        "m",
        Script::Events(vec![
            Ok(Event::text(" there", 1)),
            Ok(Event::Finished {
                reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: 4,
                    completion_tokens: 1,
                    cached_tokens: 0,
                },
            }),
        ]),
    );
    let app = app(vec![scripted]).await;
    let reply = post(&app, "/v1/completions", completion_body("m")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json = reply.json();
    assert!(json["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("cmpl-")));
    insta::assert_json_snapshot!(json, { ".id" => "[id]", ".created" => "[created]" });
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let app = app(vec![Scripted::hello("m")]).await;
    let replies = [
        post(&app, "/v1/chat/completions", chat_body("m")).await,
        post(&app, "/v1/chat/completions", chat_body("nope")).await,
        post_raw(&app, "/v1/completions", "{").await,
        get(&app, "/health", None).await,
        get(&app, "/nowhere", None).await,
    ];
    let mut ids: Vec<&str> = replies
        .iter()
        .map(|r| {
            r.header("x-request-id")
                .expect("x-request-id on every response")
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), replies.len(), "request ids are unique");
    // The completion id carries the request id.
    let id = replies[0].header("x-request-id").unwrap_or_default();
    assert_eq!(replies[0].json()["id"], format!("chatcmpl-{id}"));
}
