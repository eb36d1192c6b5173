#!/usr/bin/env bash
# bench/backtest/run.sh: the backtest replay of issue 18 ("Measured"), side by
# side in one run: the same user's script (replay.py: daily candlesticks over
# two years for 50 settled markets, every trade page of 10 markets, plain
# requests, sequential) straight at the fake Kalshi, through requests-cache's
# SQLite backend, and through kproxy at the basic tier's 20 requests/s: cold,
# again at once, after a SIGTERM and restart, after a kill -9 and restart
# offline, as one POST /batch, and without the disk tier (today's behaviour).
# Writes bench/results-backtest.md (BACKTEST_OUT to change) and prints it.
# See docs/bench.md, "Backtest replay".
#
#   bench/backtest/run.sh                       # about 2 minutes, at most 5
#   BACKTEST_LATENCY=100ms bench/backtest/run.sh  # the fake's answer delay (default 100ms)
#   BENCH_KEEP=1 bench/backtest/run.sh          # keep the work dir: logs, plan, results.jsonl
#
# Upstream requests are counted from the fake's own log (kalshi-sim -v), not
# from kproxy. A kproxy without the history tier (cache.disk.*, offline) still
# runs: what it lacks shows up as upstream requests and failures per run.
# Everything listens on 127.0.0.1; every process started here is stopped by
# PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/backtest
LATENCY=${BACKTEST_LATENCY:-100ms}
OUT=${BACKTEST_OUT:-$ROOT/bench/results-backtest.md}
BUDGET=${BACKTEST_BUDGET:-290}  # seconds for the whole script; runs that would start later are skipped
RUN_TIMEOUT=100                 # seconds for one replay
ALL_CPUS=0-$(($(nproc) - 1))    # nothing is pinned: a backtest runs wherever the OS puts it
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

command -v go >/dev/null || die "go is required"
command -v curl >/dev/null || die "curl is required"
PY=${PYTHON:-}
if [[ -z $PY ]]; then
	for cand in /usr/bin/python3 python3; do
		if "$cand" -c 'import requests, requests_cache' 2>/dev/null; then
			PY=$cand
			break
		fi
	done
fi
[[ -n $PY ]] || die "need a python3 with requests and requests_cache (Debian: apt-get install python3-requests-cache)"

WORK=$(mktemp -d /tmp/kproxy-backtest.XXXXXX)
BIN=$WORK/bin LOGS=$WORK/logs
mkdir -p "$BIN" "$LOGS" "$WORK/rc" "$WORK/xdg"
trap cleanup EXIT
trap 'exit 130' INT TERM
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)

log "building kproxy and kalshi-sim into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/kproxy ./cmd/kalshi-sim)

free_port SIM_PORT
free_port KP_PORT
start sim "$ALL_CPUS" "$BIN/kalshi-sim" -listen "127.0.0.1:$SIM_PORT" -latency "$LATENCY" -v
SIM_LOG=$LOGS/sim.log
SIM=http://127.0.0.1:$SIM_PORT/trade-api/v2
KP=http://127.0.0.1:$KP_PORT
wait_http "$SIM/exchange/status"
cd "$WORK" # kproxy starts here: no config.yaml to pick up
"$PY" "$HERE/replay.py" plan --base "$SIM" --out "$WORK/plan.json"

# What this kproxy knows: the history tier's keys are startup errors before it lands.
has_key() { env "$1=$2" XDG_CACHE_HOME="$WORK/xdg" "$BIN/kproxy" check-config >/dev/null 2>&1; }
DISK_TIER=no OFFLINE=no
has_key KPROXY_CACHE_DISK_PATH "$WORK/probe" && DISK_TIER=yes
has_key KPROXY_UPSTREAM_OFFLINE true && OFFLINE=yes
log "kproxy knows cache.disk.path: $DISK_TIER; upstream.offline: $OFFLINE"
printf 'cache:\n  disk:\n    path: ""\n' >"$WORK/nodisk.yaml"

KPID= KP_NOTE=
# kp_start DISK|nodisk [offline]: starts kproxy on KP_PORT in front of the
# fake, basic tier, from the work directory (no stray config.yaml);
# with DISK a directory, the history tier lives there. Waits for /healthz;
# a kproxy that does not come up is left in KP_NOTE, not fatal.
kp_start() {
	local disk=$1 mode=${2:-online} env=(KPROXY_LISTEN="127.0.0.1:$KP_PORT" KPROXY_UPSTREAM="http://127.0.0.1:$SIM_PORT"
		KPROXY_UPSTREAM_TIER=basic XDG_CACHE_HOME="$WORK/xdg") args=()
	if [[ $disk == nodisk ]]; then
		[[ $DISK_TIER == yes ]] && args=(-config "$WORK/nodisk.yaml")
	elif [[ $DISK_TIER == yes ]]; then
		env+=(KPROXY_CACHE_DISK_PATH="$disk")
	fi
	# Offline is asked for even when unknown: the run then shows what a user gets today.
	[[ $mode == offline ]] && env+=(KPROXY_UPSTREAM_OFFLINE=true)
	KP_NOTE=
	echo "--- start $disk $mode" >>"$LOGS/kproxy.log"
	start kproxy "$ALL_CPUS" env "${env[@]}" "$BIN/kproxy" "${args[@]}"
	KPID=$LAST_PID
	for _ in $(seq 100); do
		if curl -sf -o /dev/null --max-time 1 "$KP/healthz"; then
			return 0
		fi
		if [[ -z $KPID ]] || ! kill -0 "$KPID" 2>/dev/null; then
			KP_NOTE="kproxy did not start: $(grep -v '^---' "$LOGS/kproxy.log" | tail -1 | cut -c1-160)"
			log "$KP_NOTE"
			KPID=
			return 1
		fi
		sleep 0.1
	done
	KP_NOTE="kproxy did not answer /healthz within 10 s"
	log "$KP_NOTE"
}

# kp_stop: SIGTERM (lib.sh stop: SIGKILL after 5 s); kp_crash: kill -9.
kp_stop() { [[ -n $KPID ]] && stop "$KPID"; KPID=; }
kp_crash() {
	[[ -n $KPID ]] || return 0
	kill -KILL "$KPID" 2>/dev/null || true
	wait "$KPID" 2>/dev/null || true # reaped here: no "Killed" from the shell
	local p keep=()
	for p in "${PIDS[@]}"; do [[ $p == "$KPID" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
	KPID=
}

# replay NAME ARGS...: one run of the user's script; a run past the budget is
# skipped, a run past RUN_TIMEOUT is recorded as timed out.
replay() {
	local name=$1
	shift
	if ((SECONDS > BUDGET - RUN_TIMEOUT / 3)); then
		log "skipped '$name': over the ${BUDGET}s budget"
		printf '{"name": "%s", "note": "skipped: over the %ss budget"}\n' "$name" "$BUDGET" >>"$RESULTS"
		return 0
	fi
	log "run: $name"
	local note=()
	[[ -n $KP_NOTE ]] && note=(--note "$KP_NOTE")
	if ! timeout "$RUN_TIMEOUT" "$PY" "$HERE/replay.py" run --plan "$WORK/plan.json" --name "$name" \
		--sim-log "$SIM_LOG" --out "$RESULTS" "${note[@]}" "$@" >/dev/null; then
		log "run '$name' failed or timed out after ${RUN_TIMEOUT}s"
		printf '{"name": "%s", "note": "replay failed or timed out (%ss)"}\n' "$name" "$RUN_TIMEOUT" >>"$RESULTS"
	fi
	tail -1 "$RESULTS"
}

RC=$WORK/rc/backtest.sqlite
DISK=$WORK/disk

replay "direct" --base "$SIM"
replay "requests-cache cold" --base "$SIM" --cache-file "$RC" --disk "$RC"
replay "requests-cache warm" --base "$SIM" --cache-file "$RC" --disk "$RC"

kp_start "$DISK" || true
replay "kproxy 1 cold" --base "$KP/trade-api/v2" --disk "$DISK"
replay "kproxy 1b again at once" --base "$KP/trade-api/v2" --disk "$DISK"
kp_stop
kp_start "$DISK" || true
replay "kproxy 2 after SIGTERM + restart" --base "$KP/trade-api/v2" --disk "$DISK"
kp_crash
kp_start "$DISK" offline || true
replay "kproxy 3 after kill -9 + restart, offline" --base "$KP/trade-api/v2" --disk "$DISK"
kp_stop
kp_start "$DISK" || true
replay "kproxy /batch after restart" --batch "$KP" --disk "$DISK"
kp_stop

kp_start nodisk || true
replay "kproxy no disk: 1' cold" --base "$KP/trade-api/v2"
replay "kproxy no disk: 1b' again at once" --base "$KP/trade-api/v2"
kp_stop
kp_start nodisk || true
replay "kproxy no disk: 2' after SIGTERM + restart" --base "$KP/trade-api/v2"
kp_stop

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- . ":(exclude)bench/results-backtest.md" 2>/dev/null || commit+=" (uncommitted changes)"
"$PY" "$HERE/replay.py" report --results "$RESULTS" --plan "$WORK/plan.json" --out "$OUT" \
	--meta "date=$(date -u '+%Y-%m-%d %H:%M UTC')" --meta "commit=$commit" \
	--meta "disk_tier=$DISK_TIER" --meta "offline=$OFFLINE" --meta "latency=$LATENCY" \
	--meta "cpus=$(nproc)" --meta "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
	--meta "load_start=$LOAD_START" --meta "load_end=$(cut -d' ' -f1 /proc/loadavg)" \
	--meta "python=$("$PY" -c 'import platform; print("Python", platform.python_version())')" \
	--meta "requests=$("$PY" -c 'import requests; print(requests.__version__)')" \
	--meta "requests_cache=$("$PY" -c 'import requests_cache; print(requests_cache.__version__)')" \
	--meta "elapsed=${SECONDS}s"
log "wrote $OUT in ${SECONDS}s"
