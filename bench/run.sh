#!/usr/bin/env bash
# bench/run.sh: kproxy against nginx's proxy_cache and a bare Go server, on
# this machine, all on 127.0.0.1. Prints one markdown table and writes it to
# bench/results.md. See docs/bench.md for what is measured and why.
#
#   bench/run.sh                 # full run: 4 interleaved rounds of 5 s (8–10 minutes)
#   BENCH_QUICK=1 bench/run.sh   # 1 round of 2 s (2–3 minutes), while developing
#   BENCH_KEEP=1 bench/run.sh    # keep the work directory (logs, configs, raw results)
#
# Layout: every server under test is pinned to core 0 (Go servers therefore
# run with GOMAXPROCS=1, nginx with 1 worker); load generators and fake
# upstreams are pinned to core 1. Every process started here is stopped by
# PID on exit.
set -euo pipefail
# The history tier is off for every kproxy here: its default directory (the
# user cache directory) would carry answers from one run into the next, and a
# "cold" key would not be cold.
export KPROXY_CACHE_DISK_PATH=off

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
	ROUNDS=1 DUR=2 STALE_FOR=3s FILL_N=6000 QUIET_BUDGET=30
else
	ROUNDS=4 DUR=5 STALE_FOR=4s FILL_N=9000 QUIET_BUDGET=120
fi
CONNS=64
OPEN_RATE=5000
UP_LATENCY=500ms
BURST_N=200
MEM_MAX=64MiB
SERVER_CPU=0
LOAD_CPU=1
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ensure_tools
WORK=$(mktemp -d /tmp/kproxy-bench.XXXXXX)
BIN=$WORK/bin LOGS=$WORK/logs
mkdir -p "$BIN" "$LOGS"
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A SPID=() # server under test -> PID
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# record METRIC SERVER VALUE
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }
# kv LINE KEY: the value of KEY=value in a probe/openloop output line.
kv() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }

# --- build -----------------------------------------------------------------
log "building into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/kproxy ./cmd/kalshi-sim ./bench/cmd/bare ./bench/cmd/fakeup \
	./bench/cmd/openloop ./bench/cmd/probe ./bench/cmd/report)

# --- bodies ----------------------------------------------------------------
free_port SIM_PORT
start sim "$LOAD_CPU" "$BIN/kalshi-sim" -listen "127.0.0.1:$SIM_PORT"
SIM=http://127.0.0.1:$SIM_PORT
wait_http "$SIM/trade-api/v2/exchange/status"
PATH20='/trade-api/v2/markets?series_ticker=KXBIGSERIES&limit=13'
PATH1=/trade-api/v2/series/KXEARNINGSMENTIONMETA
curl -sf "$SIM$PATH20" -o "$WORK/body20.json"
curl -sf "$SIM$PATH1" -o "$WORK/body1.json"
SIZE20=$(stat -c %s "$WORK/body20.json")
SIZE1=$(stat -c %s "$WORK/body1.json")
log "bodies: $PATH20 = $SIZE20 B, $PATH1 = $SIZE1 B"

# --- fake upstream for coalescing and stale --------------------------------
free_port FK_PORT
free_port FK_CTL
start fakeup "$LOAD_CPU" "$BIN/fakeup" -listen "127.0.0.1:$FK_PORT" -control "127.0.0.1:$FK_CTL" -body "$WORK/body1.json"
FKC=http://127.0.0.1:$FK_CTL
wait_http "$FKC/count"

# --- kproxy: shipped config.yaml (production defaults: access log and metrics on)
free_port KP_PORT
KP=http://127.0.0.1:$KP_PORT
start kproxy-hit "$SERVER_CPU" "$BIN/kproxy" -config "$ROOT/config.yaml" -listen "127.0.0.1:$KP_PORT" -upstream "$SIM"
SPID[kproxy]=$LAST_PID
wait_http "$KP/healthz"

# kproxy for coalescing and stale: the series route with ttl 1s (so
# stale_while_revalidate 1s, stale_if_error 10m by default), upstream fakeup.
free_port KF_PORT
KF=http://127.0.0.1:$KF_PORT
cat >"$WORK/kproxy-fk.yaml" <<EOF
# bench: coalescing and stale-under-hanging-upstream; everything else default
cache:
  routes:
    - {pattern: "/trade-api/v2/series/{series_ticker}", ttl: 1s}
EOF
start kproxy-fk "$SERVER_CPU" "$BIN/kproxy" -config "$WORK/kproxy-fk.yaml" -listen "127.0.0.1:$KF_PORT" -upstream "http://127.0.0.1:$FK_PORT"
SPID[kproxy-fk]=$LAST_PID
wait_http "$KF/healthz"

# --- bare Go ceiling -------------------------------------------------------
free_port BARE_PORT
BARE=http://127.0.0.1:$BARE_PORT
start bare "$SERVER_CPU" "$BIN/bare" -listen "127.0.0.1:$BARE_PORT" -body "$PATH20=$WORK/body20.json" -body "$PATH1=$WORK/body1.json"
SPID[bare]=$LAST_PID
wait_http "$BARE/"

# --- nginx -----------------------------------------------------------------
free_port NG_PORT
free_port NF_PORT
NG=http://127.0.0.1:$NG_PORT NF=http://127.0.0.1:$NF_PORT
NGX=$WORK/nginx
CACHE_DIR=$NGX/cache
if [[ -d /dev/shm && -w /dev/shm ]]; then
	CACHE_DIR=$(mktemp -d /dev/shm/kproxy-bench-nginx.XXXXXX) # tmpfs: nginx's best case
	CACHE_SHM=$CACHE_DIR
fi
mkdir -p "$NGX/logs" "$NGX/tmp" "$CACHE_DIR"
cat >"$NGX/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log $NGX/logs/access.log combined buffer=64k flush=200ms;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    keepalive_requests 1000000;
    default_type application/json;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache_lock on;
    proxy_cache_use_stale updating error timeout http_500 http_502 http_503 http_504;
    proxy_cache_background_update on;
    add_header X-Cache \$upstream_cache_status;
    gzip on;
    gzip_comp_level 1;
    gzip_min_length 512;
    gzip_types application/json;
    proxy_cache_path $CACHE_DIR/hit levels=1:2 keys_zone=hit:16m max_size=256m inactive=10m use_temp_path=off;
    proxy_cache_path $CACHE_DIR/fk levels=1:2 keys_zone=fk:16m max_size=64m inactive=10m use_temp_path=off;
    upstream sim { server 127.0.0.1:$SIM_PORT; keepalive 32; }
    upstream fk { server 127.0.0.1:$FK_PORT; keepalive 32; }
    server {
        listen 127.0.0.1:$NG_PORT;
        location / { proxy_pass http://sim; proxy_cache hit; proxy_cache_valid 200 5s; }
    }
    server {
        listen 127.0.0.1:$NF_PORT;
        location / { proxy_pass http://fk; proxy_cache fk; proxy_cache_valid 200 1s; }
    }
}
EOF
nginx -t -p "$NGX/" -c "$NGX/nginx.conf" >"$LOGS/nginx-t.log" 2>&1 || die "nginx -t failed: $(cat "$LOGS/nginx-t.log")"
start nginx "$SERVER_CPU" nginx -p "$NGX/" -c "$NGX/nginx.conf" -g 'daemon off;'
SPID[nginx]=$LAST_PID
wait_http "$NG/"

# --- metadata --------------------------------------------------------------
META=$WORK/meta.txt
{
	echo "date=$(date -u +'%Y-%m-%d %H:%M UTC')"
	echo "nproc=$(nproc)"
	echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	echo "kernel=$(uname -r)"
	echo "go=$(go version | cut -d' ' -f3-)"
	echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
	echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' + uncommitted changes')"
	echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "rounds=$ROUNDS"
	echo "duration=${DUR}s"
	echo "conns=$CONNS"
	echo "size20=$SIZE20"
	echo "size1=$SIZE1"
	echo "path20=$PATH20"
	echo "path1=$PATH1"
	echo "open_rate=$OPEN_RATE"
	echo "up_latency=$UP_LATENCY"
	echo "burst_n=$BURST_N"
	echo "mem_max=$MEM_MAX"
	echo "stale_for=$STALE_FOR"
} >"$META"

# --- helpers for the hit scenarios -----------------------------------------
declare -A BASE=([kproxy]=$KP [nginx]=$NG [bare]=$BARE)
SERVERS=(kproxy nginx bare)

# rotated ROUND: the servers, starting at a different one each round.
rotated() {
	local i n=${#SERVERS[@]}
	for ((i = 0; i < n; i++)); do echo "${SERVERS[$(((i + $1) % n))]}"; done
}

# warm SERVER PATH [HEADER]: request until a cached server says HIT.
warm() {
	local url=${BASE[$1]}$2 h=${3:-X-Bench: warm} xc
	for _ in $(seq 10); do
		xc=$(curl -s -o /dev/null -D - -H "$h" "$url" | tr -d '\r' | sed -n 's/^[Xx]-[Cc]ache: //p')
		[[ $1 == bare || $xc == HIT ]] && return 0
		sleep 0.05
	done
	log "warning: $url never answered HIT (last X-Cache: ${xc:-none})"
}

# us VALUE: a wrk latency (123.45us, 1.23ms, 1.02s) in microseconds.
us() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
		printf "%.0f", n }'
}

# Noise: other work on this machine (other engineers' tests, builds) steals
# CPU from the servers and the load generator. user_ticks is the user time
# of cores 0 and 1 together; proc_ticks the user time of the given PIDs and
# their children threads; child_ticks the user time of this shell's reaped
# children (the load generator that just ran). foreign = user time nobody
# under test used, in percent of one core over the run.
CLK=$(getconf CLK_TCK)
user_ticks() { awk -v a="cpu$SERVER_CPU" -v b="cpu$LOAD_CPU" '$1 == a || $1 == b {s += $2 + $3} END {print s}' /proc/stat; }
proc_ticks() {
	local t=0 p
	for p in "$@"; do
		[[ -r /proc/$p/stat ]] && t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | cut -d' ' -f12)))
	done
	echo "$t"
}
# child_ticks sets CT (times must run in this shell, not a subshell).
child_ticks() {
	times >"$WORK/times"
	CT=$(awk -v clk="$CLK" 'NR == 2 {split($1, a, /[ms]/); printf "%d", (a[1] * 60 + a[2]) * clk}' "$WORK/times")
}
# server_pids SERVER: the processes of a server under test.
server_pids() {
	local pid=${SPID[$1]}
	echo "$pid"
	if [[ $1 == nginx ]]; then pgrep -P "$pid" || true; fi
}
# noise_begin SERVER / noise_end SERVER SECONDS: foreign CPU % around a run,
# left in NOISE (both must run in this shell, not in a subshell).
noise_begin() {
	local pids
	mapfile -t pids < <(server_pids "$1")
	child_ticks
	N_U0=$(user_ticks) N_P0=$(proc_ticks "${pids[@]}") N_C0=$CT
}
noise_end() {
	local u p c pids
	mapfile -t pids < <(server_pids "$1")
	child_ticks
	u=$(($(user_ticks) - N_U0)) p=$(($(proc_ticks "${pids[@]}") - N_P0)) c=$((CT - N_C0))
	NOISE=$(awk -v f=$((u - p - c)) -v clk="$CLK" -v d="$2" 'BEGIN {v = 100 * f / clk / d; printf "%.0f", (v < 0 ? 0 : v)}')
}

# busy_ticks: "busy total" ticks of cores 0 and 1 together.
busy_ticks() {
	awk -v a="cpu$SERVER_CPU" -v b="cpu$LOAD_CPU" '$1 == a || $1 == b {
		busy += $2 + $3 + $4 + $7 + $8; total += $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }
		END {print busy, total}' /proc/stat
}

# wait_quiet: up to 30 s for both cores to be nearly idle before a round,
# from a budget of QUIET_BUDGET seconds for the whole run.
wait_quiet() {
	local a b busy
	for i in $(seq 15); do
		if ((QUIET_BUDGET <= 0)); then
			((i == 1)) || QUIET_TIMEOUTS=$((${QUIET_TIMEOUTS:-0} + 1))
			return 0
		fi
		a=$(busy_ticks)
		sleep 1
		b=$(busy_ticks)
		# percent of one core in use, over both cores (at most 200)
		busy=$(awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%d", (t > 0 ? 200 * (y[1] - x[1]) / t : 0)}')
		((busy <= 15)) && return 0
		((i == 1)) && log "machine busy (${busy}% of a core in use by others); waiting up to 30 s"
		sleep 1
		QUIET_BUDGET=$((QUIET_BUDGET - 2))
	done
	log "warning: machine still busy (${busy}%); measuring anyway"
	QUIET_TIMEOUTS=$((${QUIET_TIMEOUTS:-0} + 1))
}

truncate_logs() {
	local f
	for f in "$LOGS/kproxy-hit.log" "$NGX/logs/access.log"; do
		[[ -f $f ]] && : >"$f"
	done
}

# measure SERVER SECONDS CMD...: runs CMD on the load core between
# noise_begin and noise_end; leaves its output in out and the foreign CPU %
# in noise, then empties the servers' access logs.
measure() {
	local srv=$1 secs=$2
	shift 2
	noise_begin "$srv"
	out=$(taskset -c "$LOAD_CPU" "$@")
	noise_end "$srv" "$secs"
	noise=$NOISE
	truncate_logs
}

# noisy NOISE TRY WHAT: true if try TRY (1 or 2) of WHAT, which lost NOISE%
# of a core to foreign work, is to be measured again (more than NOISY%, the
# first try, RETRIES left); then it spends one retry and says so.
noisy() {
	(($1 > NOISY && $2 != 2 && RETRIES > 0)) || return 1
	RETRIES=$((RETRIES - 1))
	log "$3: ${1}% foreign CPU; measuring again"
}

# --- 1. hit throughput and latency at saturation ----------------------------
# A run that lost more than NOISY% of a core to foreign work is measured once
# more (at most RETRIES times in all, to bound the run); the retry is kept
# either way and its noise recorded.
NOISY=10
RETRIES=$((ROUNDS * 4))
declare -A SCEN_PATH=([20k-id]=$PATH20 [20k-gz]=$PATH20 [1k-id]=$PATH1 [1k-gz]=$PATH1)
SCENARIOS=(20k-id 20k-gz 1k-id 1k-gz)
for ((r = 0; r < ROUNDS; r++)); do
	wait_quiet
	for sc in "${SCENARIOS[@]}"; do
		hdr="X-Bench: identity"
		[[ $sc == *-gz ]] && hdr="Accept-Encoding: gzip"
		for srv in $(rotated "$r"); do
			for try in 1 2; do
				warm "$srv" "${SCEN_PATH[$sc]}" "$hdr"
				measure "$srv" "$DUR" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H "$hdr" "${BASE[$srv]}${SCEN_PATH[$sc]}"
				noisy "$noise" "$try" "round $((r + 1)) $sc $srv" || break
				wait_quiet
			done
			echo "== round $r $sc $srv (foreign CPU ${noise}%)" >>"$LOGS/wrk.log"
			echo "$out" >>"$LOGS/wrk.log"
			rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
			p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
			p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
			bad=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
			[[ -n $bad ]] && log "warning: $srv $sc: $bad"
			record "hit_rps/$sc" "$srv" "$rps"
			record "hit_p50_us/$sc" "$srv" "$(us "$p50")"
			record "hit_p99_us/$sc" "$srv" "$(us "$p99")"
			record noise_pct "$srv" "$noise"
			log "round $((r + 1))/$ROUNDS $sc $srv: $rps req/s, p50 $p50, p99 $p99 (foreign CPU ${noise}%)"
		done
	done
done

# --- 2. open-loop p99 at a fixed rate, 1 KB object --------------------------
for ((r = 0; r < ROUNDS; r++)); do
	wait_quiet
	for srv in $(rotated "$r"); do
		for try in 1 2; do
			warm "$srv" "$PATH1"
			measure "$srv" "$DUR" "$BIN/openloop" -url "${BASE[$srv]}$PATH1" -rate "$OPEN_RATE" -duration "${DUR}s" -conns "$CONNS"
			noisy "$noise" "$try" "round $((r + 1)) open loop $srv" || break
			wait_quiet
		done
		echo "== round $r $srv (foreign CPU ${noise}%): $out" >>"$LOGS/openloop.log"
		record open_p50_us "$srv" "$(kv "$out" p50_us)"
		record open_p99_us "$srv" "$(kv "$out" p99_us)"
		record open_max_us "$srv" "$(kv "$out" max_us)"
		record noise_pct "$srv" "$noise"
		[[ $(kv "$out" errors) == 0 && $(kv "$out" non200) == 0 ]] || log "warning: open loop $srv: $out"
		log "round $((r + 1))/$ROUNDS open loop $OPEN_RATE/s $srv: $out (foreign CPU ${noise}%)"
	done
done

# --- 3. coalescing: BURST_N concurrent requests for a cold key -------------
curl -sf -XPOST "$FKC/unhang" && curl -sf -XPOST "$FKC/latency?d=$UP_LATENCY"
upstream_total() { curl -s "$KF/metrics" | awk '/^kproxy_upstream_requests_total/ {s += $NF} END {print s + 0}'; }
for ((r = 0; r < ROUNDS; r++)); do
	wait_quiet
	for srv in kproxy nginx; do
		base=$KF
		[[ $srv == nginx ]] && base=$NF
		curl -sf -XPOST "$FKC/reset"
		m0=$(upstream_total)
		out=$(taskset -c "$LOAD_CPU" "$BIN/probe" burst -url "$base/trade-api/v2/series/KXCOLD$r$srv" -n "$BURST_N")
		sleep 0.2
		n=$(curl -sf "$FKC/count")
		record coal_upstream "$srv" "$n"
		record coal_max_ms "$srv" "$(kv "$out" max_ms)"
		[[ $srv == kproxy ]] && record coal_metrics_delta kproxy "$(($(upstream_total) - m0))"
		log "round $((r + 1))/$ROUNDS coalescing $srv: upstream requests $n, $out"
	done
	# The harness floor: the same burst straight at the fake upstream, no
	# proxy (200 goroutines on one core take their time to send and read).
	out=$(taskset -c "$LOAD_CPU" "$BIN/probe" burst -url "http://127.0.0.1:$FK_PORT/trade-api/v2/series/KXCOLD${r}direct" -n "$BURST_N")
	record coal_max_ms direct "$(kv "$out" max_ms)"
	log "round $((r + 1))/$ROUNDS coalescing floor, straight at the upstream: $out"
done

# --- 4. stale under a hanging upstream -------------------------------------
curl -sf -XPOST "$FKC/latency?d=0s"
for ((r = 0; r < ROUNDS; r++)); do
	wait_quiet
	for srv in kproxy nginx; do
		base=$KF pidof=kproxy-fk
		[[ $srv == nginx ]] && base=$NF pidof=nginx
		# Every answer counts here, so a round disturbed by foreign work is
		# run once more (with a fresh key), like the hit runs.
		for try in 1 2; do
			url=$base/trade-api/v2/series/KXSTALE$r$srv$try
			curl -sf -XPOST "$FKC/unhang"
			curl -sf -o /dev/null "$url" || die "stale: warming $url failed"
			sleep 1.3 # past the 1 s ttl
			curl -sf -XPOST "$FKC/hang"
			noise_begin "$pidof"
			out=$(taskset -c "$LOAD_CPU" "$BIN/probe" stale -url "$url" -for "$STALE_FOR" -every 100ms -timeout 2s -v 2>>"$LOGS/stale-$srv.log")
			noise_end "$pidof" "${STALE_FOR%s}"
			noise=$NOISE
			curl -sf -XPOST "$FKC/unhang"
			noisy "$noise" "$try" "round $((r + 1)) stale $srv" || break
			wait_quiet
		done
		record stale_noise_pct "$srv" "$noise"
		for kind in keepalive fresh; do
			line=$(grep "kind=$kind " <<<"$out")
			record "stale_max_ms/$kind" "$srv" "$(kv "$line" max_ms)"
			record "stale_over5/$kind" "$srv" "$(kv "$line" over5ms)/$(kv "$line" n)"
			log "round $((r + 1))/$ROUNDS stale $srv: $line (foreign CPU ${noise}%)"
		done
	done
done

# --- 5. batch: the seed's 7 series, upstream latency 500 ms ----------------
free_port SIM5_PORT
start sim500 "$LOAD_CPU" "$BIN/kalshi-sim" -listen "127.0.0.1:$SIM5_PORT" -latency "$UP_LATENCY"
wait_http "http://127.0.0.1:$SIM5_PORT/trade-api/v2/exchange/status"
free_port KB_PORT
KB=http://127.0.0.1:$KB_PORT
start kproxy-batch "$SERVER_CPU" env KPROXY_ADMIN_TOKEN=bench "$BIN/kproxy" -config "$ROOT/config.yaml" -listen "127.0.0.1:$KB_PORT" -upstream "http://127.0.0.1:$SIM5_PORT"
wait_http "$KB/healthz"
SEVEN=(KXEARNINGSMENTIONMETA KXEARNINGSMENTIONTSLA KXEARNINGSMENTIONNVDA KXEARNINGSMENTIONAAPL KXEARNINGSMENTIONMSFT KXEARNINGSMENTIONAMZN KXEARNINGSMENTIONGOOGL)
seq_urls=()
for s in "${SEVEN[@]}"; do seq_urls+=("$KB/trade-api/v2/markets?series_ticker=$s&limit=200"); done
batch_body=$(printf '"%s",' "${SEVEN[@]}")
batch_body="{\"series_tickers\":[${batch_body%,}],\"limit\":200}"
purge() { curl -sf -o /dev/null -XDELETE -H 'Authorization: Bearer bench' "$KB/admin/cache?prefix=" || die "purge failed"; }
BATCH_READY=1
for ((r = 0; r < ROUNDS; r++)); do
	purge
	out=$(taskset -c "$LOAD_CPU" "$BIN/probe" time "${seq_urls[@]}")
	record batch_seq_cold_ms kproxy "$(kv "$out" total_ms)"
	log "round $((r + 1))/$ROUNDS batch: sequential cold: $out"
	purge
	out=$(taskset -c "$LOAD_CPU" "$BIN/probe" time -post "$batch_body" "$KB/batch/markets")
	log "round $((r + 1))/$ROUNDS batch: POST /batch/markets cold: $out"
	if [[ $(kv "$out" status) != 200* ]]; then
		BATCH_READY=0
		log "POST /batch/markets is not ready ($(kv "$out" status)); batch rows are n/a"
		continue
	fi
	record batch_cold_ms kproxy "$(kv "$out" total_ms)"
	# warm: five POSTs one after another; the median is recorded
	out=$(taskset -c "$LOAD_CPU" "$BIN/probe" time -post "$batch_body" "$KB/batch/markets" "$KB/batch/markets" \
		"$KB/batch/markets" "$KB/batch/markets" "$KB/batch/markets")
	record batch_warm_ms kproxy "$(kv "$out" each_ms | tr ',' '\n' | sort -g | sed -n 3p)"
	log "round $((r + 1))/$ROUNDS batch: POST /batch/markets warm: $out"
done
echo "batch_ready=$BATCH_READY" >>"$META"

# --- 6. memory: fill a 64 MiB cache with distinct ~20 KB keys ---------------
free_port KM_PORT
KM=http://127.0.0.1:$KM_PORT
cat >"$WORK/kproxy-mem.yaml" <<EOF
# bench: memory bound; the upstream rate is raised so the fill takes seconds
upstream: {read_rate: 5000}
cache: {max_bytes: $MEM_MAX}
EOF
start kproxy-mem "$SERVER_CPU" "$BIN/kproxy" -config "$WORK/kproxy-mem.yaml" -listen "127.0.0.1:$KM_PORT" -upstream "$SIM"
KM_PID=$LAST_PID
wait_http "$KM/healthz"
out=$(taskset -c "$LOAD_CPU" "$BIN/probe" fill -url "$KM$PATH20" -n "$FILL_N" -c 16 -timeout 10s)
log "memory fill: $out"
ready=$(curl -s "$KM/readyz")
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$KM_PID/status")
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$KM_PID/status")
record mem_hwm_mib kproxy "$((hwm_kb / 1024))"
record mem_rss_mib kproxy "$((rss_kb / 1024))"
cache_bytes=$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' <<<"$ready")
cache_items=$(sed -n 's/.*"items":\([0-9]*\).*/\1/p' <<<"$ready")
record mem_cache_mib kproxy "$(awk -v b="${cache_bytes:-0}" 'BEGIN {printf "%.1f", b / 1048576}')"
record mem_cache_items kproxy "${cache_items:-0}"
echo "fill=$out" >>"$META"
log "memory: VmHWM $((hwm_kb / 1024)) MiB, VmRSS $((rss_kb / 1024)) MiB, cache $ready"
stop "$KM_PID"

{
	echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "quiet_timeouts=${QUIET_TIMEOUTS:-0}"
	echo "noisy=$NOISY"
} >>"$META"

# --- report ----------------------------------------------------------------
"$BIN/report" -results "$RESULTS" -meta "$META" >"$WORK/results.md"
cp "$WORK/results.md" "$ROOT/bench/results.md"
cp "$RESULTS" "$ROOT/bench/results.tsv"
cat "$WORK/results.md"
log "wrote bench/results.md"
exit 0
