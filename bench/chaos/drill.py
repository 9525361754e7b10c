#!/usr/bin/env python3
"""Chaos drill of the real `pocket` binary: faults, kill -9, restarts, and the bookkeeping
that proves nothing was lost or done twice. Standard library only; run by bench/chaos.sh.

One drill (`--store sqlite` or `--store postgres`):

* A counting HTTP server on 127.0.0.1 is the tool's side effect: every GET /t/N appends a
  line "N K T" to a count file (K = how many times /t/N ran so far, T = monotonic time) and
  answers `exec K of t/N`. The tool is `http_fetch` (declared idempotent; a call started but
  not journaled before a crash may run again, a journaled one never).
* `sim` fails 30 % of model calls with transient faults (429, 500, reset, timeout) that the
  resilience layer retries.
* SQLite: `pocket serve` alone on a SQLite file; the serve process itself is killed with
  `kill -9` and restarted. PostgreSQL: `pocket serve` plus two `pocket worker`s on a fresh
  schema; the workers are killed and restarted.
* Kill moments come from a seeded RNG (the seed is printed); RSS of every pocket process is
  sampled from /proc twice a second.

Checks, each a failure of the drill when broken:
1. every task succeeded, once (status and answer via the API; the answer carries the
   execution the journal recorded, which must be the task's last execution);
2. no journaled call ran twice: every repeated execution of a task is explained by a kill -9
   between the two executions, and repeats are at most the in-flight capacity per kill;
3. retries within the retry budget: at every /metrics scrape (before each kill of a serve
   process and at the end) pocket_retries_total <= ratio * first calls + min_per_sec *
   (uptime + window), and no "retry budget exhausted" is needed for the tasks to succeed;
4. memory bounded: the highest RSS of each process stays under --rss-bound-mib.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

API_KEY = "chaos-drill-key"

# Every process started, so that a failed drill leaves none behind.
PROCS: list["Proc"] = []

# The retry policy the drill configures and then checks the counters against.
RETRY_MAX_ATTEMPTS = 6
BUDGET_RATIO = 1.0
BUDGET_MIN_PER_SEC = 10
BUDGET_WINDOW_SECS = 10

# Seconds from a restart to the next kill: enough for the leases of the killed runs (2 s)
# to expire and for their tasks to run again.
KILL_SPACING_SECS = 4.0

# Per process: at most this many runs in flight (instances x concurrency).
MAX_INSTANCES = 4
INSTANCE_CONCURRENCY = 8


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failed(Exception):
    """A broken promise."""


# ---------------------------------------------------------------- the counting tool server


class Counter:
    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.runs: dict[str, list[float]] = {}
        self.file = open(path, "a", encoding="utf-8")

    def hit(self, name: str) -> int:
        with self.lock:
            k = self.counts.get(name, 0) + 1
            self.counts[name] = k
            now = time.monotonic()
            self.runs.setdefault(name, []).append(now)
            self.file.write(f"{name} {k} {now:.6f}\n")
            self.file.flush()
            return k


def start_counter(path: str) -> tuple[http.server.ThreadingHTTPServer, Counter]:
    counter = Counter(path)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            m = re.fullmatch(r"/t/(\d+)", self.path)
            if not m:
                self.send_error(404)
                return
            k = counter.hit(m.group(1))
            body = f"exec {k} of t/{m.group(1)}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client killed mid-request resets its connection: expected here

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counter


# ---------------------------------------------------------------- processes


class Proc:
    """One pocket process (serve or worker), restartable; its stderr goes to a log file."""

    def __init__(self, role: str, argv: list[str], logfile: str, env: dict[str, str]) -> None:
        self.role = role
        self.argv = argv
        self.logfile = logfile
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self.base_url: str | None = None
        self.started_at = 0.0

    def start(self) -> None:
        if self not in PROCS:
            PROCS.append(self)
        offset = os.path.getsize(self.logfile) if os.path.exists(self.logfile) else 0
        err = open(self.logfile, "ab")
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=self.env
        )
        err.close()
        self.started_at = time.monotonic()
        if self.role == "serve":
            self.base_url = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with open(self.logfile, "rb") as f:
                    f.seek(offset)
                    m = re.search(rb"pocket serve on (http://[0-9.:]+)", f.read())
                if m:
                    self.base_url = m.group(1).decode()
                    return
                if self.popen.poll() is not None:
                    raise Failed(f"serve exited with {self.popen.returncode}; see {self.logfile}")
                time.sleep(0.05)
            raise Failed(f"serve did not start in 30 s; see {self.logfile}")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise Failed(f"{self.role} did not stop within 60 s of SIGTERM")

    def rss_kib(self) -> int | None:
        if not self.alive():
            return None
        assert self.popen is not None
        try:
            with open(f"/proc/{self.popen.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None


class RssSampler(threading.Thread):
    def __init__(self, procs: list[Proc]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.peak: dict[str, int] = {}
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for i, p in enumerate(self.procs):
                rss = p.rss_kib()
                if rss is not None:
                    key = f"{p.role}{'' if p.role == 'serve' else i}"
                    self.peak[key] = max(self.peak.get(key, 0), rss)
                    self.samples += 1
            self.done.wait(0.5)


# ---------------------------------------------------------------- HTTP client


class Api:
    def __init__(self, proc: Proc) -> None:
        self.proc = proc

    def call(self, method: str, path: str, body: object | None = None, retry_for: float = 60.0):
        """One request; connection failures (the server is being killed) are retried."""
        deadline = time.monotonic() + retry_for
        while True:
            url = self.proc.base_url
            try:
                if url is None:
                    raise ConnectionError("serve is down")
                u = urllib.parse.urlsplit(url)
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                headers = {"Authorization": f"Bearer {API_KEY}"}
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    headers["Content-Type"] = "application/json"
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                text = resp.read().decode()
                conn.close()
                if resp.status == 503 and time.monotonic() < deadline:
                    time.sleep(0.2)  # draining or not ready yet
                    continue
                return resp.status, text
            except (OSError, http.client.HTTPException, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def metric_sum(text: str, name: str, key_prefix: str | None = None) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)", line)
        if not m:
            continue
        labels = m.group(1) or ""
        if key_prefix is not None and key_prefix not in labels:
            continue
        total += float(m.group(2))
    return total


def budget_check(text: str, where: str) -> dict[str, float]:
    """The retry-budget invariant on one scrape of /metrics (model retries).

    The budget allows `ratio x first calls + min_per_sec x (uptime + window)` retries. The
    serve process's /metrics has no model-call counter, so first calls are bounded from
    below by the runs started (each run calls the model at least once): the check is
    stricter than the budget itself.
    """
    retries = metric_sum(text, "pocket_retries_total", 'key="model:')
    first = metric_sum(text, "pocket_runs_total")
    calls = first + retries
    uptime = metric_sum(text, "pocket_uptime_seconds")
    allowed = BUDGET_RATIO * first + BUDGET_MIN_PER_SEC * (uptime + BUDGET_WINDOW_SECS)
    if retries > allowed:
        raise Failed(
            f"retry budget broken at {where}: {retries:.0f} retries > {allowed:.0f} allowed "
            f"({BUDGET_RATIO} x {first:.0f} runs + {BUDGET_MIN_PER_SEC}/s x "
            f"({uptime:.1f} s + {BUDGET_WINDOW_SECS} s))"
        )
    return {"retries": retries, "calls": calls, "first": first, "uptime": uptime, "allowed": allowed}


# ---------------------------------------------------------------- the drill


def write_config(path: str, seed: int, instances: int, concurrency: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            f"""
# Written by bench/chaos/drill.py.
[models.flaky]
provider = "sim"
seed = {seed}
latency_ms = 10
jitter_ms = 10
retry_after_ms = 50
# 30 % of model calls fail with a transient fault, 7.5 % each.
faults = {{ rate_limit = 0.075, server_error = 0.075, connection_reset = 0.075, timeout = 0.075 }}

[agents.default]
model = "flaky"
tools = ["http_fetch"]

[tools.http_fetch]
allow_private = true      # the counting server is on loopback
timeout_secs = 10

[resilience.retry]
max_attempts = {RETRY_MAX_ATTEMPTS}
base_delay_ms = 20
max_delay_ms = 400
budget_ratio = {BUDGET_RATIO}
budget_min_per_sec = {BUDGET_MIN_PER_SEC}
budget_window_secs = {BUDGET_WINDOW_SECS}

# The drill measures retries and the journal; a breaker opening on a 30 % fault rate would
# only add waiting (it has tests of its own).
[resilience.breaker]
enabled = false

[cluster]
lease_secs = 2.0
heartbeat_secs = 0.5
poll_interval_ms = 50
instance_concurrency = {concurrency}
min_instances = 1
max_instances = {instances}
cool_down_secs = 2.0
shutdown_grace_secs = 10.0
retry_base_secs = 0.2
retry_max_secs = 2.0
"""
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", choices=["sqlite", "postgres"], required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--rss-bound-mib", type=int, default=128)
    ap.add_argument("--time-limit", type=float, default=150.0)
    ap.add_argument("--postgres-url", default=os.environ.get("POCKET_TEST_POSTGRES_URL"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()

    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    log(f"drill on {a.store}: {a.tasks} tasks, {a.kills} kill -9s, seed {seed} "
        f"(rerun with --seed {seed})")
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix=f"pocket-chaos-{a.store}-")
    server, counter = start_counter(os.path.join(work, "count.txt"))
    port = server.server_address[1]
    cfg = os.path.join(work, "pocket.toml")
    write_config(cfg, seed, MAX_INSTANCES, INSTANCE_CONCURRENCY)
    # On PostgreSQL the serve process takes a small share, so that the killed workers do
    # most of the work.
    serve_cfg = cfg
    if a.store == "postgres":
        serve_cfg = os.path.join(work, "serve.toml")
        write_config(serve_cfg, seed + 1, 1, 2)

    env = {k: v for k, v in os.environ.items() if k not in ("POCKET_CONFIG", "RUST_LOG")}
    env["POCKET_API_KEYS"] = API_KEY
    env["POCKET_LOG"] = "warn"

    schema = None
    if a.store == "sqlite":
        store = f"sqlite://{os.path.join(work, 'pocket.db')}"
    else:
        if not a.postgres_url:
            raise Failed("--postgres-url or POCKET_TEST_POSTGRES_URL is needed")
        schema = f"chaos_{os.getpid()}_{seed}"
        psql(a.postgres_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};")
        sep = "&" if "?" in a.postgres_url else "?"
        store = f"{a.postgres_url}{sep}options[search_path]={schema}"

    serve = Proc(
        "serve",
        [a.bin, "serve", "--config", serve_cfg, "--store", store, "--listen", "127.0.0.1:0"],
        os.path.join(work, "serve.log"),
        env,
    )
    procs = [serve]
    if a.store == "postgres":
        for i in (1, 2):
            procs.append(
                Proc("worker", [a.bin, "worker", "--config", cfg, "--store", store],
                     os.path.join(work, f"worker{i}.log"), env)
            )
    victims = [serve] if a.store == "sqlite" else procs[1:]
    started = time.monotonic()
    for p in procs:
        p.start()
    sampler = RssSampler(procs)
    sampler.start()
    api = Api(serve)
    kills: list[tuple[float, str]] = []
    scrapes: list[dict[str, float]] = []

    # Kill moments, drawn once from the seed: when this many tasks have succeeded, plus a
    # delay, so that every kill lands while runs are in flight.
    moments = sorted(rng.randrange(a.tasks // 20, a.tasks * 9 // 10) for _ in range(a.kills))
    delays = [rng.uniform(0.0, 0.5) for _ in range(a.kills)]
    downtimes = [rng.uniform(0.1, 1.5) for _ in range(a.kills)]
    chosen = [rng.randrange(len(victims)) for _ in range(a.kills)]
    log("kill plan (after N succeeded + delay -> victim, down for): " + ", ".join(
        f"{m}+{x:.2f}s->{victims[c].role}{c + 1 if a.store == 'postgres' else ''} ({d:.1f} s)"
        for m, x, c, d in zip(moments, delays, chosen, downtimes)))

    ids: list[str | None] = [None] * a.tasks
    submit_error: list[BaseException] = []

    def submit_all() -> None:
        try:
            for i in range(a.tasks):
                body = {"task": f"fetch http://127.0.0.1:{port}/t/{i}", "idempotency_key": f"chaos-{i}"}
                status, text = api.call("POST", "/v1/tasks", body)
                if status != 202:
                    raise Failed(f"submit {i}: {status} {text}")
                ids[i] = json.loads(text)["id"]
        except BaseException as e:  # noqa: BLE001 (reported by the main thread)
            submit_error.append(e)

    submitter = threading.Thread(target=submit_all, daemon=True)
    submitter.start()

    chaos_error: list[BaseException] = []

    def succeeded() -> int:
        status, text = api.call("GET", "/v1/cluster")
        return json.loads(text)["queue"].get("succeeded", 0) if status == 200 else 0

    def chaos() -> None:
        try:
            kill_all()
        except BaseException as e:  # noqa: BLE001 (reported by the main thread)
            chaos_error.append(e)

    def kill_all() -> None:
        # A task whose lease expires three times is dead-lettered as a poison task (default
        # max_attempts 3), so kills are spaced: runs requeued by one kill finish first.
        quiet_until = 0.0
        for m, x, c, d in zip(moments, delays, chosen, downtimes):
            while succeeded() < m or time.monotonic() < quiet_until:
                time.sleep(0.05)
            time.sleep(x)
            victim = victims[c]
            if victim.role == "serve":
                status, text = api.call("GET", "/metrics")
                if status == 200:
                    scrapes.append(budget_check(text, f"the scrape before kill {len(kills) + 1}"))
            victim.kill9()
            kills.append((time.monotonic(), victim.role))
            time.sleep(d)
            victim.start()
            quiet_until = time.monotonic() + KILL_SPACING_SECS

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()

    # Wait until every task is finished.
    deadline = started + a.time_limit
    while True:
        if submit_error or chaos_error:
            raise (submit_error + chaos_error)[0]
        if time.monotonic() > deadline:
            raise Failed(f"not finished within {a.time_limit} s; see {work}")
        if not submitter.is_alive() and not chaos_thread.is_alive():
            status, text = api.call("GET", "/v1/cluster")
            q = json.loads(text)["queue"] if status == 200 else {}
            done = q.get("succeeded", 0) + q.get("failed", 0) + q.get("cancelled", 0)
            if done >= a.tasks:
                break
        time.sleep(0.5)
    elapsed = time.monotonic() - started

    status, text = api.call("GET", "/metrics")
    if status != 200:
        raise Failed(f"/metrics: {status}")
    scrapes.append(budget_check(text, "the end"))
    sampler.done.set()
    sampler.join()

    # 1. Every task succeeded once, with the journaled execution in its answer.
    answers_checked = 0
    repeated = 0
    for i, tid in enumerate(ids):
        status, text = api.call("GET", f"/v1/tasks/{tid}")
        view = json.loads(text)
        if status != 200 or view.get("status") != "succeeded":
            raise Failed(f"task {i} ({tid}) is {view.get('status')}: {view.get('error')}")
        answer = (view.get("result") or {}).get("answer", "")
        m = re.search(r"exec (\d+) of t/(\d+)", answer)
        if not m or m.group(2) != str(i):
            raise Failed(f"task {i}: unexpected answer {answer!r}")
        runs = counter.runs.get(str(i), [])
        if int(m.group(1)) != len(runs):
            raise Failed(
                f"task {i}: the answer has execution {m.group(1)} but the tool ran {len(runs)} "
                "times: a call ran after its result was journaled")
        answers_checked += 1
        # 2. Each repeat is explained by a kill -9 between the two executions.
        for before, after in zip(runs, runs[1:]):
            if not any(before < t < after for t, _ in kills):
                raise Failed(f"task {i}: its tool ran again with no kill in between "
                             f"({before - started:.2f} s and {after - started:.2f} s)")
            repeated += 1
    per_kill = MAX_INSTANCES * INSTANCE_CONCURRENCY
    if repeated > per_kill * len(kills):
        raise Failed(f"{repeated} repeated calls > {per_kill} in flight x {len(kills)} kills")
    stray = set(counter.counts) - {str(i) for i in range(a.tasks)}
    if stray:
        raise Failed(f"calls for unknown tasks: {sorted(stray)[:5]}")

    # 3. The budget was never exhausted (logs of every process).
    exhausted = 0
    for p in procs:
        with open(p.logfile, encoding="utf-8", errors="replace") as f:
            exhausted += f.read().count("retry budget exhausted")

    # Graceful stop of everything: exit 0.
    for p in procs:
        code = p.stop()
        if code != 0:
            raise Failed(f"{p.role} exited {code} on SIGTERM; see {p.logfile}")
    server.shutdown()

    # 4. Memory.
    bound_kib = a.rss_bound_mib * 1024
    for key, peak in sorted(sampler.peak.items()):
        if peak > bound_kib:
            raise Failed(f"{key} peaked at {peak / 1024:.0f} MiB > {a.rss_bound_mib} MiB")

    retries = sum(s["retries"] for s in scrapes)
    runs = sum(s["first"] for s in scrapes)
    log(f"RESULT {a.store}: seed {seed}; {a.tasks} tasks succeeded exactly once in {elapsed:.1f} s; "
        f"{len(kills)} kill -9s; {sum(counter.counts.values())} tool executions, {repeated} repeats "
        f"of calls in flight at a kill, 0 repeats of journaled calls")
    log(f"RESULT {a.store}: serve /metrics over {len(scrapes)} scrapes: {runs:.0f} runs, "
        f"{retries:.0f} model-call retries (budget {BUDGET_RATIO} x first calls + {BUDGET_MIN_PER_SEC}/s: "
        f"never exceeded); 'retry budget exhausted' in logs: {exhausted}")
    log(f"RESULT {a.store}: peak RSS " + ", ".join(
        f"{k} {v / 1024:.0f} MiB" for k, v in sorted(sampler.peak.items()))
        + f" (bound {a.rss_bound_mib} MiB, {sampler.samples} samples)")
    if schema:
        psql(a.postgres_url, f"DROP SCHEMA {schema} CASCADE;")
    if not a.keep:
        subprocess.run(["rm", "-rf", work], check=False)
    return 0


def psql(url: str, sql: str) -> None:
    env = dict(os.environ, PGOPTIONS="--client-min-messages=warning")
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL, env=env)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        log(f"FAILED: {e}")
        sys.exit(1)
    finally:
        for proc in PROCS:
            if proc.alive():
                assert proc.popen is not None
                proc.popen.kill()
                proc.popen.wait()
