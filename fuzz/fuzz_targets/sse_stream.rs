//! The providers' response parsers, through the public `Model` API: a local HTTP server on
//! 127.0.0.1 answers with the fuzz bytes, as an event stream (SSE parser + OpenAI or
//! Anthropic decoder) or as a JSON body. Any panic is a bug; errors are expected.
//!
//! Input: byte 0 picks the provider (bit 0) and streaming or not (bit 1); the rest is the
//! response body.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use pocket_agent::{CompletionRequest, Message, Model, StreamEvent, ToolSpec};
use pocket_models::{AnthropicConfig, AnthropicModel, OpenAiConfig, OpenAiModel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    rt: tokio::runtime::Runtime,
    reply: Arc<Mutex<(bool, Vec<u8>)>>,
    openai: OpenAiModel,
    anthropic: AnthropicModel,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reply = Arc::new(Mutex::new((true, Vec::new())));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::clone(&reply);
        rt.spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    // Read the request head and its body (Content-Length), then answer and close.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let (sse, body) = shared.lock().unwrap().clone();
                    let ctype = if sse {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        let timeout = Duration::from_secs(10);
        let openai = OpenAiModel::new(
            OpenAiConfig::new("m")
                .with_base_url(&base)
                .with_api_key("k")
                .with_timeout(timeout),
        )
        .unwrap();
        let mut config = AnthropicConfig::new("m", "k");
        config.base_url = base;
        config.timeout = timeout;
        let anthropic = AnthropicModel::new(config).unwrap();
        Harness {
            rt,
            reply,
            openai,
            anthropic,
        }
    })
}

fn request() -> CompletionRequest {
    let tool = ToolSpec::new(
        "lookup",
        "Looks up.",
        serde_json::json!({"type": "object", "properties": {"q": {"type": "string"}}}),
    );
    let mut request = CompletionRequest::new(vec![Message::user("hi")]);
    request.tools = Arc::from(vec![tool]);
    request
}

async fn drain<M: Model>(model: &M, stream: bool) {
    let request = request();
    if !stream {
        let _ = model.complete(&request).await;
        return;
    }
    let Ok(mut events) = model.stream(&request).await else {
        return;
    };
    let mut done = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(StreamEvent::Done(_)) => {
                assert!(!done, "two Done events");
                done = true;
            }
            Ok(_) => assert!(!done, "an event after Done"),
            Err(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let stream = mode & 2 != 0;
    *h.reply.lock().unwrap() = (stream, body.to_vec());
    h.rt.block_on(async {
        if mode & 1 == 0 {
            drain(&h.openai, stream).await;
        } else {
            drain(&h.anthropic, stream).await;
        }
    });
});
