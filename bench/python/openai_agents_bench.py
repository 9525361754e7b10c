"""The peer workload on the OpenAI Agents SDK (`openai-agents`), Chat Completions API."""

import asyncio
from importlib.metadata import version

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

import common


@function_tool
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


async def main():
    args = common.parse_args()
    set_tracing_disabled(True)  # no trace export: nothing leaves the machine
    client = AsyncOpenAI(
        base_url=args.base_url,
        api_key="bench-key",
        max_retries=0,
        timeout=common.TIMEOUT_S,
        http_client=common.http_client(args.concurrency),
    )
    agent = Agent(
        name="bench",
        model=OpenAIChatCompletionsModel(model="stub", openai_client=client),
        tools=[add],
    )

    async def run_one():
        result = await Runner.run(agent, common.TASK, max_turns=4)
        return result.final_output

    await common.measure(f"openai-agents {version('openai-agents')}", run_one, args)


asyncio.run(main())
