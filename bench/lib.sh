# shellcheck shell=bash
# bench/lib.sh: helpers shared by bench/run.sh and bench/profile.sh (sourced,
# not run). The sourcing script sets WORK (a temp dir with bin/ and logs/)
# before calling start; cleanup stops every process start started, by PID.

# shellcheck source=scripts/lib/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/procs.sh"

SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ensure_tools: nginx, wrk, taskset and curl, installed from Debian if missing.
ensure_tools() {
	local need=()
	command -v nginx >/dev/null || need+=(nginx)
	command -v wrk >/dev/null || need+=(wrk)
	command -v taskset >/dev/null || need+=(util-linux)
	command -v curl >/dev/null || need+=(curl)
	if ((${#need[@]})); then
		log "installing ${need[*]}"
		[[ $(id -u) == 0 ]] || die "need root to apt-get install ${need[*]}"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	fi
	command -v go >/dev/null || die "go is required"
	(($(nproc) >= 2)) || die "need at least 2 cores (servers on core $SERVER_CPU, load on core $LOAD_CPU)"
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	stop_pids 30 "${PIDS[@]}"
	[[ -n ${CACHE_SHM:-} ]] && rm -rf "$CACHE_SHM"
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}

# start NAME CPU CMD...: runs CMD pinned to CPU in the background, output to
# $WORK/logs/NAME.log; the PID is remembered for cleanup and left in
# LAST_PID (taskset and env exec, so it is CMD's own PID).
start() {
	local name=$1 cpu=$2
	shift 2
	taskset -c "$cpu" "$@" >>"$WORK/logs/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# stop PID: ends one process this script started.
stop() {
	local pid=$1 p keep=()
	stop_pids 50 "$pid"
	for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# free_port VAR: sets VAR to a loopback TCP port nobody listens on and that
# this script has not handed out yet, taken below the ephemeral range so
# that no outgoing connection holds it either.
free_port() {
	local p lo
	lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	((lo > 12000)) || die "ephemeral ports start at $lo: no room below for the servers"
	for _ in $(seq 200); do
		p=$((10000 + RANDOM % (lo - 10000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && [[ " ${USED_PORTS:-} " != *" $p "* ]]; then
			USED_PORTS="${USED_PORTS:-} $p"
			printf -v "$1" '%s' "$p"
			return
		fi
	done
	die "no free port"
}

# wait_http URL: until URL answers (any status), at most 10 s.
wait_http() {
	for _ in $(seq 100); do
		curl -s -o /dev/null --max-time 1 "$1" && return 0
		sleep 0.1
	done
	die "$1 did not come up (logs in $WORK/logs)"
}
