//! Resuming a generation from its delivered token ids with a real model: at temperature 0 the
//! resumed request's text is exactly the rest of the uninterrupted answer, counted from the
//! resumed ids on, with `max_tokens` bounding old and new tokens together. Needs
//! FLYWHEEL_SMOL_GGUF (scripts/test.sh sets it); skips, saying so, when it is not set.

use backend::{
    Backend, BackendError, ChatMessage, Event, FinishReason, GenerateRequest, Prompt,
    SamplingParams, Usage,
};
use engine::{Engine, EngineOptions};
use tokio_stream::StreamExt;

fn smol() -> Option<Engine> {
    let Some(path) = std::env::var_os("FLYWHEEL_SMOL_GGUF").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: FLYWHEEL_SMOL_GGUF is not set (scripts/test.sh sets it)");
        return None;
    };
    let opts = EngineOptions {
        slots: 2,
        slot_context: Some(1024),
        threads: 1,
        step_tokens: 64,
        max_queue: 8,
    };
    Some(Engine::start(std::path::Path::new(&path), "smol", &opts).expect("starts"))
}

fn request(max_tokens: u32, resume: Vec<u32>) -> GenerateRequest {
    GenerateRequest {
        request_id: "r".into(),
        model: "smol".into(),
        prompt: Prompt::Chat(vec![ChatMessage::text(
            "user",
            "Tell me about lighthouses, in several sentences.",
        )]),
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        tenant: None,
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: false,
        format: Default::default(),
        priority: Default::default(),
        resume,
    }
}

/// Every text chunk (text, ids), the prompt count `Admitted` gave, and the end.
async fn run(engine: &Engine, request: GenerateRequest) -> (Vec<(String, Vec<u32>)>, u32, Usage) {
    let mut stream = engine.generate(request).await.expect("admitted");
    let (mut chunks, mut prompt) = (Vec::new(), 0);
    while let Some(item) = stream.next().await {
        match item.expect("no error") {
            Event::Admitted { prompt_tokens, .. } => prompt = prompt_tokens,
            Event::Text { text, tokens, ids } => {
                assert_eq!(tokens as usize, ids.len(), "the engine numbers every token");
                chunks.push((text, ids));
            }
            Event::Finished { reason, usage } => {
                assert_eq!(reason, FinishReason::Length);
                return (chunks, prompt, usage);
            }
            _ => {}
        }
    }
    panic!("the stream ended without Finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_generation_is_the_rest_of_the_uninterrupted_one() {
    let Some(engine) = smol() else { return };
    let max = 48;
    let (whole, prompt, usage) = run(&engine, request(max, Vec::new())).await;
    assert_eq!(usage.completion_tokens, max);
    assert!(whole.len() > 10, "many chunks: {whole:?}");
    // Cut after a third of the chunks, as if the node died there.
    let cut = whole.len() / 3;
    let delivered: Vec<u32> = whole[..cut]
        .iter()
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    let rest_text: String = whole[cut..].iter().map(|(t, _)| t.as_str()).collect();
    let rest_ids: Vec<u32> = whole[cut..]
        .iter()
        .flat_map(|(_, ids)| ids.clone())
        .collect();

    let (resumed, resumed_prompt, resumed_usage) =
        run(&engine, request(max, delivered.clone())).await;
    let text: String = resumed.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<u32> = resumed.iter().flat_map(|(_, ids)| ids.clone()).collect();
    assert_eq!(text, rest_text, "the same words from the cut on");
    assert_eq!(ids, rest_ids);
    // The resumed ids are read as prompt; max_tokens bounds old and new together.
    assert_eq!(resumed_prompt, prompt + delivered.len() as u32);
    assert_eq!(
        resumed_usage.completion_tokens + delivered.len() as u32,
        max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_cannot_be_served_is_refused_before_it_runs() {
    let Some(engine) = smol() else { return };
    let refused = |r: backend::Result<backend::EventStream>| match r {
        Err(BackendError::InvalidPrompt(message)) => message,
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("served"),
    };
    let all_used = refused(engine.generate(request(3, vec![1, 2, 3])).await);
    assert!(all_used.contains("nothing is left"), "{all_used}");
    let foreign = refused(engine.generate(request(8, vec![1, u32::MAX])).await);
    assert!(foreign.contains("vocabulary"), "{foreign}");
    let mut several = request(8, vec![1]);
    several.sampling.n = 2;
    let several = refused(engine.generate(several).await);
    assert!(several.contains("n > 1"), "{several}");
}
