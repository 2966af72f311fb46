//! Pre-emption with a real model: a batch sequence that gives its only slot to interactive
//! requests (twice) and resumes produces, at temperature 0, exactly the answer it produces
//! un-preempted, with one continuous stream and its usage counted once. Needs
//! FLYWHEEL_SMOL_GGUF (scripts/test.sh sets it); skips, saying so, when it is not set.

use backend::{
    Backend, Event, EventStream, FinishReason, GenerateRequest, Priority, Prompt, SamplingParams,
    Usage,
};
use engine::{Engine, EngineOptions};
use tokio_stream::StreamExt;

fn smol() -> Option<Engine> {
    let Some(path) = std::env::var_os("FLYWHEEL_SMOL_GGUF").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: FLYWHEEL_SMOL_GGUF is not set (scripts/test.sh sets it)");
        return None;
    };
    // One slot, so an interactive request can only run by pre-empting the batch sequence;
    // a small step budget, so prompts are computed in several chunks.
    let opts = EngineOptions {
        slots: 1,
        slot_context: Some(1024),
        threads: 1,
        step_tokens: 32,
        max_queue: 8,
    };
    Some(Engine::start(std::path::Path::new(&path), "smol", &opts).expect("starts"))
}

fn request(text: &str, max_tokens: u32, priority: Priority) -> GenerateRequest {
    GenerateRequest {
        request_id: format!("{priority:?}"),
        model: "smol".into(),
        prompt: Prompt::Chat(vec![backend::ChatMessage::text("user", text)]),
        sampling: SamplingParams {
            temperature: 0.0,
            // The whole `max_tokens`, so the sequence is still running when interactive
            // requests arrive.
            ignore_eos: true,
            ..SamplingParams::default()
        },
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        tenant: None,
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: false,
        format: Default::default(),
        priority,
        resume: Vec::new(),
    }
}

/// The next text chunk, or the end of the answer with its usage.
enum Next {
    Text(String),
    End(FinishReason, Usage),
}

async fn next(stream: &mut EventStream) -> Next {
    loop {
        match stream.next().await.expect("the stream ends with Finished") {
            Ok(Event::Text { text, .. }) => return Next::Text(text),
            Ok(Event::Finished { reason, usage }) => return Next::End(reason, usage),
            Ok(_) => {}
            Err(e) => panic!("the stream failed: {e}"),
        }
    }
}

/// Reads `stream` to its end: the text and the usage.
async fn rest(stream: &mut EventStream, mut text: String) -> (String, Usage) {
    loop {
        match next(stream).await {
            Next::Text(t) => text.push_str(&t),
            Next::End(reason, usage) => {
                assert_eq!(reason, FinishReason::Length);
                return (text, usage);
            }
        }
    }
}

/// Takes the text chunks `stream` already holds, without waiting; panics if the answer has
/// already ended.
async fn buffered(stream: &mut EventStream, text: &mut String) {
    let zero = std::time::Duration::ZERO;
    while let Ok(Some(item)) = tokio::time::timeout(zero, stream.next()).await {
        match item {
            Ok(Event::Text { text: t, .. }) => text.push_str(&t),
            Ok(Event::Finished { .. }) => {
                panic!("the batch answer ended before the interactive request was served")
            }
            Ok(_) => {}
            Err(e) => panic!("the stream failed: {e}"),
        }
    }
}

/// Reads `n` text chunks of `stream` into `text`.
async fn read_chunks(stream: &mut EventStream, text: &mut String, n: usize) {
    for _ in 0..n {
        match next(stream).await {
            Next::Text(t) => text.push_str(&t),
            Next::End(..) => panic!("the batch answer ended too early: {text:?}"),
        }
    }
}

const BATCH_PROMPT: &str = "Write a long story about a lighthouse keeper and the sea.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_batch_sequence_gives_the_same_answer_as_an_uninterrupted_one() {
    let Some(engine) = smol() else { return };
    let max_tokens = 160;

    let mut alone = engine
        .generate(request(BATCH_PROMPT, max_tokens, Priority::Batch))
        .await
        .expect("admitted");
    let (expected, expected_usage) = rest(&mut alone, String::new()).await;
    assert_eq!(expected_usage.completion_tokens, max_tokens);

    // The same request again, interrupted twice by interactive requests.
    let mut batch = engine
        .generate(request(BATCH_PROMPT, max_tokens, Priority::Batch))
        .await
        .expect("admitted");
    let mut text = String::new();
    for (round, question) in ["What is the capital of France?", "Name three colours."]
        .into_iter()
        .enumerate()
    {
        read_chunks(&mut batch, &mut text, 4).await;
        let mut interactive = engine
            .generate(request(question, 8, Priority::Interactive))
            .await
            .expect("admitted");
        // The interactive request ends while the batch answer is unfinished: with one slot,
        // it ran only because the batch sequence yielded it.
        let (_, usage) = rest(&mut interactive, String::new()).await;
        assert_eq!(usage.completion_tokens, 8, "round {round}");
        buffered(&mut batch, &mut text).await;
    }
    read_chunks(&mut batch, &mut text, 1).await;
    let (text, usage) = rest(&mut batch, text).await;
    assert_eq!(
        text, expected,
        "the pre-empted answer differs from the uninterrupted one"
    );
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (
            expected_usage.prompt_tokens,
            expected_usage.completion_tokens
        ),
        "usage counted once"
    );
    engine.stop().await;
}
