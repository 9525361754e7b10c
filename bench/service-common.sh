# Shared by bench/service-latency.sh and bench/service-ab.sh (sourced, not run).

# pocket serve's config for the service benches: one agent whose model is the openai
# provider at the stub on port $2, task store $3. Written to $1.
write_serve_config() {
  cat > "$1" <<TOML
[models.stub]
provider = "openai"
model = "stub"
base_url = "http://127.0.0.1:$2/v1"
api_key_env = "POCKET_BENCH_UPSTREAM_KEY"

[agents.default]
model = "stub"

[store]
url = "$3"

[cluster]
max_queued = 100000
TOML
}

# utime + stime of a process, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# Context switches (voluntary + involuntary) so far of a process's live threads (a thread
# that has exited takes its count with it).
ctx_switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null \
    | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {n += $2} END {print n + 0}'
}

# Waits up to 10 s for something to listen on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    if (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}
