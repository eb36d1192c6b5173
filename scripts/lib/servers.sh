# shellcheck shell=bash
# Shared by the scripts that run kproxy in front of kalshi-sim: both built
# into a temporary directory, listening on free 127.0.0.1 ports, stopped by
# PID when the script exits. Source it after `cd` to the repository root,
# then call servers_init NAME and start_servers [VAR=value ...].

# shellcheck source=scripts/lib/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/procs.sh"

# servers_init NAME: sets $tmp and the cleanup trap; NAME prefixes messages.
servers_init() {
	servers_name=$1
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/kproxy-$1.XXXXXX")
	pids=()
	trap servers_cleanup EXIT
}

servers_cleanup() {
	stop_pids 100 "${pids[@]}" # at most 10 s each, then SIGKILL
	rm -rf "$tmp"
}

# fail MESSAGE: prints it with the servers' last log lines, exits 1.
fail() {
	echo "$servers_name: FAIL: $*" >&2
	for log in "$tmp"/*.log; do
		[ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
	done
	exit 1
}

# wait_for LOG REGEX: prints the first match of REGEX in LOG, waiting up to 10 s.
wait_for() {
	local i match
	for ((i = 0; i < 100; i++)); do
		match=$(grep -oE "$2" "$1" 2>/dev/null | head -n 1 || true)
		if [ -n "$match" ]; then
			echo "$match"
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# start_servers [VAR=value ...]: builds and starts kalshi-sim, then kproxy
# (shipped config.yaml, the given extra environment) in front of it; sets
# $sim and exports KPROXY_URL.
start_servers() {
	go build -o "$tmp/kproxy" ./cmd/kproxy
	go build -o "$tmp/kalshi-sim" ./cmd/kalshi-sim
	"$tmp/kalshi-sim" -listen 127.0.0.1:0 2>"$tmp/sim.log" &
	pids+=("$!")
	sim=$(wait_for "$tmp/sim.log" 'http://127\.0\.0\.1:[0-9]+') || fail "kalshi-sim did not start"
	env -u KPROXY_CONFIG -u KPROXY_ADMIN_TOKEN -u KPROXY_REDIS_URL \
		KPROXY_LOG_FORMAT=json KPROXY_LOG_LEVEL=info KPROXY_CACHE_DISK_PATH="$tmp/disk" "$@" \
		"$tmp/kproxy" -config config.yaml -listen 127.0.0.1:0 -upstream "$sim" 2>"$tmp/kproxy.log" &
	pids+=("$!")
	local addr
	addr=$(wait_for "$tmp/kproxy.log" '"addr":"127\.0\.0\.1:[0-9]+"') || fail "kproxy did not start"
	addr=${addr#\"addr\":\"}
	export KPROXY_URL="http://${addr%\"}"
	echo "$servers_name: kalshi-sim at $sim, kproxy at $KPROXY_URL"
}
