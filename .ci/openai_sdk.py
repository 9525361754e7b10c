"""CI: the official `openai` Python SDK, unchanged, against a running `pocket serve`.

Environment: POCKET_URL (e.g. http://127.0.0.1:7878), POCKET_KEY. Checks models.list(), a
non-streaming chat completion (content and usage), and a streaming one (the chunks join to a
non-empty answer, one choice finishes with `stop`, the stream ends by itself). Works whether
the server streams the answer token by token or as one chunk.
"""

import os
import sys

from openai import OpenAI

base = os.environ["POCKET_URL"].rstrip("/") + "/v1"
key = os.environ["POCKET_KEY"]


def check(condition, message):
    if not condition:
        print(f"openai-sdk: FAILED: {message}", file=sys.stderr)
        sys.exit(1)


client = OpenAI(base_url=base, api_key=key, timeout=60.0, max_retries=0)

models = [m.id for m in client.models.list()]
check("default" in models, f"models.list() names the agents: {models}")
print(f"openai-sdk: models {models}")

completion = client.chat.completions.create(
    model="default",
    messages=[
        {"role": "system", "content": "You are concise."},
        {"role": "user", "content": "What is 17 * 23?"},
    ],
)
check(completion.object == "chat.completion", f"object {completion.object!r}")
check(len(completion.choices) == 1, f"one choice: {completion.choices}")
choice = completion.choices[0]
content = choice.message.content or ""
check(choice.message.role == "assistant", f"role {choice.message.role!r}")
check("391" in content, f"the answer names 391: {content!r}")
check(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
usage = completion.usage
check(usage is not None, "usage is present")
check(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage counts tokens: {usage}")
check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage adds up: {usage}")
print(f"openai-sdk: completion {content!r} usage {usage.total_tokens} tokens")

stream = client.chat.completions.create(
    model="default",
    messages=[{"role": "user", "content": "What is 12 * 12?"}],
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finishes, chunks, streamed_usage = [], [], 0, None
with stream:
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object!r}")
        if chunk.usage is not None:
            streamed_usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason is not None:
                finishes.append(c.finish_reason)
answer = "".join(pieces)
check(answer.strip() != "", "the streamed chunks join to a non-empty answer")
check("144" in answer, f"the streamed answer names 144: {answer!r}")
check(finishes == ["stop"], f"exactly one finish, `stop`: {finishes}")
# include_usage asks for a usage chunk; when the server sends one, it must count tokens.
check(streamed_usage is None or streamed_usage.total_tokens > 0, f"usage chunk: {streamed_usage}")
print(f"openai-sdk: stream of {chunks} chunks ({len(pieces)} with content): {answer!r}")
print("openai-sdk: ok")
