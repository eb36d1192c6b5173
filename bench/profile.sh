#!/usr/bin/env bash
# bench/profile.sh: CPU and allocation profiles of kproxy's hit path under
# the 1 KB hit load of bench/run.sh (wrk -t1 -c64, kproxy pinned to core 0,
# shipped config.yaml: access log and metrics on). kproxy is built as
# bench/cmd/kproxyprof: cmd/kproxy's assembly plus net/http/pprof on a
# separate loopback port. Writes to bench/profiles/:
#   cpu-{id,gz}, allocs-{id,gz}: 1 KB hits, identity and gzip
#   cpu-batch: warm POST /batch/markets (7 series) one after another
#   allocs-fill: allocations of the miss path while a 64 MiB cache fills
#   heap-mem: live heap after filling it with distinct ~20 KB keys
# as .pb.gz profiles with their `go tool pprof -top` lists (.txt) beside them.
#
#   bench/profile.sh             # 15 s per profile
#   BENCH_QUICK=1 bench/profile.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SECS=15
[[ ${BENCH_QUICK:-0} == 1 ]] && SECS=4
OUT=$ROOT/bench/profiles
PATH1=/trade-api/v2/series/KXEARNINGSMENTIONMETA

ensure_tools
WORK=$(mktemp -d /tmp/kproxy-prof.XXXXXX)
mkdir -p "$WORK/bin" "$WORK/logs" "$OUT"
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building"
(cd "$ROOT" && go build -o "$WORK/bin/" ./cmd/kalshi-sim ./bench/cmd/kproxyprof ./bench/cmd/probe)
free_port SIM_PORT
free_port KP_PORT
free_port PPROF_PORT
start sim "$LOAD_CPU" "$WORK/bin/kalshi-sim" -listen "127.0.0.1:$SIM_PORT"
wait_http "http://127.0.0.1:$SIM_PORT/trade-api/v2/exchange/status"
start kproxyprof "$SERVER_CPU" "$WORK/bin/kproxyprof" -config "$ROOT/config.yaml" -listen "127.0.0.1:$KP_PORT" \
	-upstream "http://127.0.0.1:$SIM_PORT" -pprof "127.0.0.1:$PPROF_PORT"
KP=http://127.0.0.1:$KP_PORT
PP=http://127.0.0.1:$PPROF_PORT/debug/pprof
wait_http "$KP/healthz"

for enc in id gz; do
	hdr="X-Bench: identity"
	[[ $enc == gz ]] && hdr="Accept-Encoding: gzip"
	curl -s -o /dev/null -H "$hdr" "$KP$PATH1"
	curl -s -o /dev/null -H "$hdr" "$KP$PATH1"
	# wrk outlasts the profiles by 2 s on each side.
	taskset -c "$LOAD_CPU" wrk -t1 -c64 -d$((SECS + 4))s --latency -H "$hdr" "$KP$PATH1" >"$WORK/logs/wrk-$enc.log" &
	WRK=$!
	sleep 2
	curl -s -o "$OUT/allocs-$enc.pb.gz" "$PP/allocs?seconds=$SECS" &
	ALLOCS=$!
	curl -s -o "$OUT/cpu-$enc.pb.gz" "$PP/profile?seconds=$SECS"
	wait "$ALLOCS" "$WRK"
	log "$enc: $(awk '/^Requests\/sec:/' "$WORK/logs/wrk-$enc.log")"
	go tool pprof -top -nodecount=40 "$WORK/bin/kproxyprof" "$OUT/cpu-$enc.pb.gz" >"$OUT/cpu-$enc.top.txt" 2>/dev/null
	go tool pprof -top -cum -nodecount=60 "$WORK/bin/kproxyprof" "$OUT/cpu-$enc.pb.gz" >"$OUT/cpu-$enc.cum.txt" 2>/dev/null
	go tool pprof -top -sample_index=alloc_space -nodecount=30 "$WORK/bin/kproxyprof" "$OUT/allocs-$enc.pb.gz" >"$OUT/allocs-$enc.top.txt" 2>/dev/null
	go tool pprof -top -sample_index=alloc_objects -nodecount=30 "$WORK/bin/kproxyprof" "$OUT/allocs-$enc.pb.gz" >"$OUT/allocs-objects-$enc.top.txt" 2>/dev/null
	cp "$WORK/logs/wrk-$enc.log" "$OUT/wrk-$enc.txt"
done
# Warm batch: the seven series of the seed, one POST after another.
SEVEN='"KXEARNINGSMENTIONMETA","KXEARNINGSMENTIONTSLA","KXEARNINGSMENTIONNVDA","KXEARNINGSMENTIONAAPL","KXEARNINGSMENTIONMSFT","KXEARNINGSMENTIONAMZN","KXEARNINGSMENTIONGOOGL"'
BODY="{\"series_tickers\":[$SEVEN],\"limit\":200}"
if [[ $(curl -s -o /dev/null -w '%{http_code}' -XPOST -d "$BODY" "$KP/batch/markets") == 200 ]]; then
	urls=()
	for _ in $(seq 200); do urls+=("$KP/batch/markets"); done
	# POSTs one after another until the profile is taken (bounded: 100 x 200)
	(
		for _ in $(seq 100); do
			[[ -e $WORK/stop-batch ]] && break
			taskset -c "$LOAD_CPU" "$WORK/bin/probe" time -post "$BODY" "${urls[@]}"
		done
	) >"$WORK/logs/batch.txt" &
	LOOP=$!
	sleep 1
	curl -s -o "$OUT/cpu-batch.pb.gz" "$PP/profile?seconds=$((SECS / 2 + 1))"
	touch "$WORK/stop-batch"
	wait "$LOOP"
	log "batch: $(wc -l <"$WORK/logs/batch.txt") x 200 warm POSTs, last: $(tail -n 1 "$WORK/logs/batch.txt" | cut -d' ' -f1-2)"
	go tool pprof -top -nodecount=40 "$WORK/bin/kproxyprof" "$OUT/cpu-batch.pb.gz" >"$OUT/cpu-batch.top.txt" 2>/dev/null
	go tool pprof -top -cum -nodecount=60 "$WORK/bin/kproxyprof" "$OUT/cpu-batch.pb.gz" >"$OUT/cpu-batch.cum.txt" 2>/dev/null
else
	log "POST /batch/markets not ready; no batch profile"
fi

# Memory: a fresh instance with a 64 MiB cache filled with distinct ~20 KB keys.
free_port KM_PORT
free_port KM_PPROF
cat >"$WORK/mem.yaml" <<YAML
upstream: {read_rate: 5000}
cache: {max_bytes: 64MiB}
YAML
start kproxyprof-mem "$SERVER_CPU" "$WORK/bin/kproxyprof" -config "$WORK/mem.yaml" -listen "127.0.0.1:$KM_PORT" \
	-upstream "http://127.0.0.1:$SIM_PORT" -pprof "127.0.0.1:$KM_PPROF"
KM_PID=$LAST_PID
wait_http "http://127.0.0.1:$KM_PORT/healthz"
taskset -c "$LOAD_CPU" "$WORK/bin/probe" fill -url "http://127.0.0.1:$KM_PORT/trade-api/v2/markets?series_ticker=KXBIGSERIES&limit=13" -n 9000 -c 16 -timeout 10s >"$WORK/logs/fill.txt" &
FILL=$!
# What the miss path allocates while the cache fills (the fill takes ~6 s).
curl -s -o "$OUT/allocs-fill.pb.gz" "http://127.0.0.1:$KM_PPROF/debug/pprof/allocs?seconds=3"
wait "$FILL"
go tool pprof -top -sample_index=alloc_space -nodecount=25 "$WORK/bin/kproxyprof" "$OUT/allocs-fill.pb.gz" >"$OUT/allocs-fill.top.txt" 2>/dev/null
curl -s -o "$OUT/heap-mem.pb.gz" "http://127.0.0.1:$KM_PPROF/debug/pprof/heap?gc=1"
{
	echo "# after: $(cat "$WORK/logs/fill.txt")"
	echo "# readyz: $(curl -s "http://127.0.0.1:$KM_PORT/readyz")"
	grep -E '^Vm(HWM|RSS)' "/proc/$KM_PID/status" | sed 's/^/# /'
	curl -s "http://127.0.0.1:$KM_PPROF/debug/pprof/heap?debug=1" | grep -E '^# (HeapAlloc|HeapSys|HeapIdle|HeapInuse|HeapReleased|NextGC|Sys|NumGC|GCSys|Stack|MSpan|OtherSys) '
} >"$OUT/heap-mem.memstats.txt"
go tool pprof -top -sample_index=inuse_space -nodecount=25 "$WORK/bin/kproxyprof" "$OUT/heap-mem.pb.gz" >"$OUT/heap-mem.top.txt" 2>/dev/null
stop "$KM_PID"
log "memory: $(grep -E 'VmHWM' "$OUT/heap-mem.memstats.txt")"
log "profiles in $OUT"
