"""The peer workload on LangGraph (`create_react_agent` over `langchain-openai`)."""

import asyncio
import warnings
from importlib.metadata import version

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

warnings.filterwarnings("ignore")  # create_react_agent's deprecation notice
from langgraph.prebuilt import create_react_agent  # noqa: E402

import common  # noqa: E402


@tool
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


async def main():
    args = common.parse_args()
    llm = ChatOpenAI(
        model="stub",
        base_url=args.base_url,
        api_key="bench-key",
        max_retries=0,
        timeout=common.TIMEOUT_S,
        http_async_client=common.http_client(args.concurrency),
    )
    graph = create_react_agent(llm, [add])

    async def run_one():
        out = await graph.ainvoke({"messages": [("user", common.TASK)]})
        return out["messages"][-1].content

    await common.measure(f"langgraph {version('langgraph')}", run_one, args)


asyncio.run(main())
