"""What the Python peers of bench/peers.sh share: the task, the HTTP client limits, and
the measurement (same figures as `pocket-bench agent`: tasks/s, CPU-s per task, p50/p99
latency added over the stub's two fixed latencies, peak RSS)."""

import argparse
import asyncio
import json
import math
import resource
import sys
import time

import httpx2
import openai

TASK = "What is 17 + 25? Use the add tool."
EXPECTED = "42"
# Generous, so a saturated event loop shows as latency rather than as timed-out tasks (the
# SDK's default connect timeout of 5 s failed most C=1,024 tasks on a loaded machine).
TIMEOUT_S = 300.0


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--latency-ms", type=float, default=0.0)
    a = p.parse_args()
    if a.tasks < 1 or a.concurrency < 1:
        p.error("--tasks and --concurrency must be at least 1")
    return a


def http_client(concurrency):
    """The SDK's own client, with a pool as large as the concurrency (its default caps at
    1,000 connections, which would queue the C=1,024 runs inside the client)."""
    n = concurrency + 16
    return openai.DefaultAsyncHttpxClient(
        limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n)
    )


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    rank = min(max(math.ceil(p * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


async def measure(framework, run_one, args):
    """Runs `run_one()` (one task, returns the answer) args.tasks times, args.concurrency at
    a time, and prints the report as one JSON line."""
    next_task = 0
    latencies = []
    errors = 0

    async def worker():
        nonlocal next_task, errors
        while next_task < args.tasks:
            next_task += 1
            t0 = time.perf_counter()
            try:
                answer = await run_one()
                if EXPECTED in str(answer):
                    latencies.append(time.perf_counter() - t0)
                else:
                    if errors == 0:
                        print(f"{framework}: unexpected answer: {answer!r}", file=sys.stderr)
                    errors += 1
            except Exception as e:  # a failed task is counted, the first one shown
                if errors == 0:
                    print(f"{framework}: task failed: {e!r}", file=sys.stderr)
                errors += 1

    cpu0 = cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(args.concurrency, args.tasks))))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu0
    latencies.sort()
    base = 2 * args.latency_ms / 1000.0
    added = lambda p: max(percentile(latencies, p) - base, 0.0) * 1000.0  # noqa: E731
    print(json.dumps({
        "framework": framework,
        "concurrency": args.concurrency,
        "tasks": args.tasks,
        "errors": errors,
        "elapsed_s": elapsed,
        "tasks_per_s": args.tasks / elapsed,
        "cpu_s_per_task": cpu / args.tasks,
        "p50_added_ms": added(0.50),
        "p99_added_ms": added(0.99),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))
