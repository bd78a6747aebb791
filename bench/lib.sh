# Shared by bench/callgrind and bench/symbol-order (sourced, not run):
# processes they start, stopped by PID on exit, and the demo upstreams.
# Needs ROOT and WORK set; appends to PIDS.

PIDS=()

# Stops every process started here (TERM, then KILL after 10 s) and removes WORK.
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null
    done
    rm -rf "$WORK"
}

# A free loopback port: bind port 0, read it back, release it.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# demo NAME BINARY: a demo service (target/release/BINARY) on an ephemeral
# port; sets RET to its address.
demo() {
    "$ROOT/target/release/$2" --listen 127.0.0.1:0 >"$WORK/$1.out" 2>/dev/null &
    PIDS+=("$!")
    for _ in $(seq 100); do [[ -s $WORK/$1.out ]] && break; sleep 0.1; done
    RET=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listening"])' "$WORK/$1.out")
}

# The head of a bench sidecar config: service NAME, admin on port ADMIN
# (0: any), quiet logs, no drain delay.
head_yaml() {
    printf 'service: %s\nadmin: { listen: 127.0.0.1:%s }\nlog: { level: warn }\ndrain: { delay: 0s, deadline: 1s }\n' "$1" "${2:-0}"
}
