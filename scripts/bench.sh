#!/usr/bin/env bash
# Loads a release build of pilotfish with `pilotfish loadgen` and prints a
# markdown table of what was measured (issue 8). Every number in the table
# comes from this run: the loadgen's JSON report, /proc/PID of pilotfish, its
# /metrics and its log. Nothing is typed in.
#
#   scripts/bench.sh                   # 1,000 services x 2 endpoints = 2,000 proxies, SotW
#   S=100 E=2 scripts/bench.sh         # a smaller mesh
#   MODE=delta scripts/bench.sh        # delta xDS
#
# Environment (defaults in brackets):
#   S services [1000], E endpoints (workloads, proxies) per service [2],
#   R services with a VirtualService [S], K namespaces [1],
#   PROXIES simulated Envoys [S*E], MODE sotw|delta [sotw],
#   CONNECT_RATE proxies started per second, 0 = all at once [0],
#   CHANGES changes of each kind (endpoint, virtualservice) [3],
#   DEBOUNCE pilotfish --debounce [100ms], IDLE seconds of idle CPU sampling [10],
#   SYNC_TIMEOUT seconds [300], FLOOR 1 to also run the floor server [1],
#   KEEP 1 to keep the work directory, OUT a file to also write the table to,
#   BIN a pilotfish binary to use instead of building one.
# Bad load (each off by default; each runs after the normal figures against
# the same pilotfish and adds a table):
#   STUCK K proxies that sync then stop reading their socket, with CHANGES
#     changes of each kind, the run held STUCK_SECS [60] after sync while
#     pilotfish's open streams (/metrics pilot_xds) are sampled each second;
#   CHURN_SECS seconds of churn at CHURN_RATE proxies/s [PROXIES/100, at
#     least 1]: RSS, open streams, fds and threads before and after;
#   STORM 1: once synced, pilotfish is killed (SIGKILL) and started again
#     on the same ports and config; time until all proxies are synced again
#     and pilotfish's peak RSS (VmHWM) during the storm.
#
# Everything binds loopback only. Loops are bounded in count and time.
set -euo pipefail

S=${S:-1000}
E=${E:-2}
R=${R:-$S}
K=${K:-1}
PROXIES=${PROXIES:-$((S * E))}
MODE=${MODE:-sotw}
CONNECT_RATE=${CONNECT_RATE:-0}
CHANGES=${CHANGES:-3}
DEBOUNCE=${DEBOUNCE:-100ms}
IDLE=${IDLE:-10}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-300}
FLOOR=${FLOOR:-1}
KEEP=${KEEP:-0}
OUT=${OUT:-}
STUCK=${STUCK:-0}
STUCK_SECS=${STUCK_SECS:-60}
CHURN_SECS=${CHURN_SECS:-0}
CHURN_RATE=${CHURN_RATE:-$(( PROXIES / 100 > 0 ? PROXIES / 100 : 1 ))}
STORM=${STORM:-0}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "$MODE" in
  sotw) delta_flag=() ;;
  delta) delta_flag=(--delta) ;;
  *) echo "MODE must be sotw or delta" >&2; exit 2 ;;
esac

if [ -z "${BIN:-}" ]; then
  echo "building release..." >&2
  cargo build --release --bin pilotfish >&2
  BIN="${CARGO_TARGET_DIR:-$root/target}/release/pilotfish"
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/pilotfish-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Each proxy is a connection: both ends need a descriptor.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
clk=$(getconf CLK_TCK)
# VmRSS / VmHWM of a process, in MiB.
mem_mb() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# Waits (bounded) for a file to exist while a process lives.
wait_file() {
  local file=$1 pid=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    [ -e "$file" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'; }
jqr() { jq -r "$1" "$2"; }

echo "scenario: $S services x $E endpoints, $R VirtualServices, $K namespaces" >&2
"$BIN" loadgen scenario --out "$work/config" --services "$S" --endpoints "$E" \
  --routes "$R" --namespaces "$K" >&2

# A CA runs when pilotfish has one (mTLS on, SDS served): keep its state here.
state_flag=()
if "$BIN" serve --help 2>/dev/null | grep -q -- '--state-dir'; then
  state_flag=(--state-dir "$work/state")
fi
xds_port=$(free_port)
admin_port=$(free_port)
# When the xDS port needs TLS and a bearer token, the loadgen (plaintext, no
# credentials) uses pilotfish's plaintext port; the secure one idles.
addr_flags=(--xds-address "127.0.0.1:$xds_port")
if "$BIN" serve --help 2>/dev/null | grep -q -- '--plaintext-xds-address'; then
  addr_flags=(--xds-address "127.0.0.1:$(free_port)" --plaintext-xds-address "127.0.0.1:$xds_port")
fi
# The admission webhook's fixed default port would clash between runs.
if "$BIN" serve --help 2>/dev/null | grep -q -- '--webhook-address'; then
  addr_flags+=(--webhook-address off)
fi
start_pf() { # starts pilotfish (appending to its log), sets $pf, waits for /readyz
  "$BIN" serve --config-dir "$work/config" "${addr_flags[@]}" \
    --admin-address "127.0.0.1:$admin_port" --debounce "$DEBOUNCE" "${state_flag[@]}" \
    --log-level "warn,pilotfish::xds=info,pilotfish::xds::server=warn,pilotfish::config=info" \
    2>>"$work/pilotfish.log" &
  pf=$!
  pids+=("$pf")
  local ready=0 i
  for ((i = 0; i < 600; i++)); do
    if curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$pf" 2>/dev/null || break
    sleep 0.1
  done
  [ "$ready" = 1 ] || { echo "pilotfish did not become ready" >&2; cat "$work/pilotfish.log" >&2; exit 1; }
}
start_pf
backlog=$(ss -ltnH "sport = :$xds_port" | awk '{ print $3 }')
overflows() { nstat -az TcpExtListenOverflows 2>/dev/null | awk '/ListenOverflows/ { print $2 }'; }
overflows_start=$(overflows)
rss_start=$(mem_mb "$pf" VmRSS)
cpu_start=$(cpu_ticks "$pf")

echo "loadgen: $PROXIES proxies ($MODE)..." >&2
changes_total=$((CHANGES * 2))
"$BIN" loadgen run --xds-address "127.0.0.1:$xds_port" --scenario "$work/config" \
  --proxies "$PROXIES" "${delta_flag[@]}" --connect-rate "$CONNECT_RATE" \
  --sync-timeout "$SYNC_TIMEOUT" --idle $((IDLE + 2)) --ready-file "$work/synced" \
  --change-kind endpoint,virtualservice --changes "$changes_total" --change-after 2 \
  --settle 15 --json "$work/report.json" >"$work/loadgen.txt" 2>"$work/loadgen.log" &
lg=$!
pids+=("$lg")
if ! wait_file "$work/synced" "$lg" $((SYNC_TIMEOUT + 60)); then
  echo "loadgen ended before the sync phase did" >&2
  cat "$work/loadgen.log" "$work/loadgen.txt" >&2
  exit 1
fi
cpu_synced=$(cpu_ticks "$pf")
rss_synced=$(mem_mb "$pf" VmRSS)
hwm_synced=$(mem_mb "$pf" VmHWM)
sleep "$IDLE"
cpu_idle_end=$(cpu_ticks "$pf")
rss_idle_end=$(mem_mb "$pf" VmRSS)
lg_rc=0
wait "$lg" || lg_rc=$?
[ "$lg_rc" = 0 ] || { echo "loadgen failed ($lg_rc)" >&2; cat "$work/loadgen.log" >&2; exit 1; }
cpu_end=$(cpu_ticks "$pf")
overflows_end=$(overflows)
rss_end=$(mem_mb "$pf" VmRSS)
hwm_end=$(mem_mb "$pf" VmHWM)
curl -sf "http://127.0.0.1:$admin_port/metrics" >"$work/metrics.txt" || true
# The log as it stands after the normal run (the bad-load sections add to it).
cp "$work/pilotfish.log" "$work/pilotfish.main.log"

rep="$work/report.json"
per_kind() { # kind field -> median over that kind's changes
  jq -r --arg k "$1" ".changes[] | select(.change.kind == \$k) | $2 // \"n/a\"" "$rep" | median
}
converged() {
  jq -r --arg k "$1" '[.changes[] | select(.change.kind == $k)] | "\(map(.converged) | min // 0)/\(map(.expected) | max // 0) (min over \(length) changes)"' "$rep"
}

kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }

# Bad load, against the same pilotfish.
now_ms() { date +%s%3N; }
# A metric's value from pilotfish's /metrics (empty when unavailable).
metric() { { curl -sf "http://127.0.0.1:$admin_port/metrics" 2>/dev/null || true; } | awk -v m="$1" '$1 == m { print $2; exit }'; }
# Waits (bounded) for a line starting with $2 in file $1 while process $3 lives.
wait_line() {
  local file=$1 prefix=$2 pid=$3 secs=$4 i
  for ((i = 0; i < secs * 10; i++)); do
    grep -q "^$prefix" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# Ends a loadgen run held open (it writes its report on SIGTERM).
end_run() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# Waits (bounded, 30 s) for pilotfish's open streams to fall to $1; prints the count.
streams_settle() {
  local i v
  for ((i = 0; i < 300; i++)); do
    v=$(metric pilot_xds)
    [ "${v:-x}" = "$1" ] && break
    sleep 0.1
  done
  echo "${v:-n/a}"
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0) printf "%+.1f %%", (b - a) / a * 100; else print "n/a" }'; }
bad_tables=""
# Loadgen arguments shared by the bad-load runs.
bad_run=("$BIN" loadgen run --xds-address "127.0.0.1:$xds_port" --scenario "$work/config"
  --proxies "$PROXIES" "${delta_flag[@]}" --connect-rate "$CONNECT_RATE" --sync-timeout "$SYNC_TIMEOUT")

if [ "$STUCK" -gt 0 ]; then
  echo "stuck: $STUCK of $PROXIES proxies stop reading once synced; held ${STUCK_SECS}s..." >&2
  streams_settle 0 >/dev/null
  rm -f "$work/stuck.ready"
  "${bad_run[@]}" --stuck "$STUCK" --ready-file "$work/stuck.ready" \
    --change-kind endpoint,virtualservice --changes "$changes_total" --change-after 2 --settle 15 \
    --duration $((SYNC_TIMEOUT + STUCK_SECS + 60)) --json "$work/stuck.json" \
    >"$work/stuck.txt" 2>"$work/stuck.log" &
  slg=$!
  pids+=("$slg")
  wait_file "$work/stuck.ready" "$slg" $((SYNC_TIMEOUT + 60)) || { cat "$work/stuck.log" >&2; exit 1; }
  # pilotfish's open streams each second: when (if) it closes the stuck ones.
  # And the kernel's bytes queued on them: pilotfish's send queues (Send-Q,
  # server side) and the proxies' unread receive queues (Recv-Q).
  stuck_streams_first=$(metric pilot_xds) stuck_closed_after=never stuck_sendq=0 stuck_recvq=0
  for ((i = 1; i <= STUCK_SECS; i++)); do
    sleep 1
    v=$(metric pilot_xds)
    q=$(ss -tnH "sport = :$xds_port" 2>/dev/null | awk '$3 > m { m = $3 } END { print m + 0 }' || echo 0)
    r=$(ss -tnH "dport = :$xds_port" 2>/dev/null | awk '$2 > m { m = $2 } END { print m + 0 }' || echo 0)
    [ "$q" -gt "$stuck_sendq" ] && stuck_sendq=$q
    [ "$r" -gt "$stuck_recvq" ] && stuck_recvq=$r
    echo "$i ${v:-n/a} sendq=$q recvq=$r" >>"$work/stuck.streams"
    if [ "$stuck_closed_after" = never ] && [ -n "$v" ] && [ "$v" -le $((PROXIES - STUCK)) ]; then
      stuck_closed_after="${i} s"
    fi
  done
  stuck_streams_last=$(metric pilot_xds)
  end_run "$slg"
  cat "$work/stuck.txt" >&2
  sr="$work/stuck.json"
  stuck_kind() { jq -r --arg k "$1" ".changes[] | select(.change.kind == \$k) | $2 // \"n/a\"" "$sr" | median; }
  stuck_conv() { jq -r --arg k "$1" '[.changes[] | select(.change.kind == $k)] | "\(map(.converged) | min // 0)/\(map(.expected) | max // 0), stuck ones: \(map(.stuck_converged) | max // 0)"' "$sr"; }
  bad_tables+=$(cat <<EOF


#### Stuck proxies: $STUCK of $PROXIES sync, then stop reading their socket

| figure | measured | normal run |
|---|---|---|
| proxies that stopped reading | $(jqr '.stuck.stopped_reading' "$sr")/$STUCK | |
| endpoint change: converged (stuck ones left out) | $(stuck_conv endpoint) | $(converged endpoint) |
| endpoint change → EDS ACKed, p50 / p99 (median of $CHANGES, others only) | $(stuck_kind endpoint .latency.p50_ms) / $(stuck_kind endpoint .latency.p99_ms) ms | $(per_kind endpoint .latency.p50_ms) / $(per_kind endpoint .latency.p99_ms) ms |
| VirtualService change: converged (stuck ones left out) | $(stuck_conv virtualservice) | $(converged virtualservice) |
| VirtualService change → RDS ACKed, p50 / p99 (median of $CHANGES, others only) | $(stuck_kind virtualservice .latency.p50_ms) / $(stuck_kind virtualservice .latency.p99_ms) ms | $(per_kind virtualservice .latency.p50_ms) / $(per_kind virtualservice .latency.p99_ms) ms |
| pilotfish's open ADS streams (pilot_xds) at sync / after ${STUCK_SECS} s | ${stuck_streams_first:-n/a} / ${stuck_streams_last:-n/a} | |
| stuck streams closed by pilotfish (open streams ≤ $((PROXIES - STUCK))) after | $stuck_closed_after | |
| largest kernel queue on one connection: pilotfish's Send-Q / a proxy's unread Recv-Q | $(kib "$stuck_sendq") / $(kib "$stuck_recvq") | |
EOF
)
fi

if [ "$CHURN_SECS" -gt 0 ]; then
  echo "churn: $CHURN_RATE proxies/s reconnect as fresh Envoys for ${CHURN_SECS}s..." >&2
  streams_settle 0 >/dev/null
  rm -f "$work/churn.ready"
  "${bad_run[@]}" --ready-file "$work/churn.ready" --churn-rate "$CHURN_RATE" --churn-for "$CHURN_SECS" \
    --settle 60 --duration $((SYNC_TIMEOUT + CHURN_SECS + 120)) --json "$work/churn.json" \
    >"$work/churn.txt" 2>"$work/churn.log" &
  clg=$!
  pids+=("$clg")
  wait_file "$work/churn.ready" "$clg" $((SYNC_TIMEOUT + 60)) || { cat "$work/churn.log" >&2; exit 1; }
  churn_rss0=$(mem_mb "$pf" VmRSS) churn_streams0=$(metric pilot_xds)
  churn_fds0=$(metric process_open_fds) churn_threads0=$(metric process_threads)
  sleep $((CHURN_SECS / 4))
  churn_rss1=$(mem_mb "$pf" VmRSS)
  wait_line "$work/churn.ready" churned "$clg" $((CHURN_SECS + 120)) || { cat "$work/churn.log" >&2; exit 1; }
  churn_rss2=$(mem_mb "$pf" VmRSS) churn_streams2=$(metric pilot_xds)
  churn_fds2=$(metric process_open_fds) churn_threads2=$(metric process_threads)
  end_run "$clg"
  churn_streams_after=$(streams_settle 0)
  cat "$work/churn.txt" >&2
  cr="$work/churn.json"
  bad_tables+=$(cat <<EOF


#### Churn: $CHURN_RATE proxies/s reconnect as fresh Envoys for ${CHURN_SECS} s ($PROXIES proxies)

| figure | measured | issue 8 target |
|---|---|---|
| reconnects asked / made | $(jqr '"\(.churn.kicks) / \(.churn.churns)"' "$cr") | |
| resync after a reconnect, p50 / p99 / max | $(jqr '"\(.churn.resync.p50_ms) / \(.churn.resync.p99_ms) / \(.churn.resync.max_ms)"' "$cr") ms | |
| pilotfish RSS: synced before the churn / after 1/4 of it / after it, all synced again | $churn_rss0 / $churn_rss1 / $churn_rss2 MiB | |
| RSS growth over the churn (from 1/4 of it to the end) | $(pct "$churn_rss0" "$churn_rss2") ($(pct "$churn_rss1" "$churn_rss2")) | < 5 % |
| open ADS streams (pilot_xds) before / after the churn / once the loadgen left | ${churn_streams0:-n/a} / ${churn_streams2:-n/a} / $churn_streams_after | $PROXIES / $PROXIES / 0 |
| open fds before / after the churn; OS threads before / after | ${churn_fds0:-n/a} / ${churn_fds2:-n/a}; ${churn_threads0:-n/a} / ${churn_threads2:-n/a} | |
EOF
)
fi

if [ "$STORM" = 1 ]; then
  echo "storm: killing pilotfish once $PROXIES proxies are synced, starting it again..." >&2
  streams_settle 0 >/dev/null
  rm -f "$work/storm.ready"
  "${bad_run[@]}" --ready-file "$work/storm.ready" --settle 60 \
    --duration $((SYNC_TIMEOUT * 2 + 120)) --json "$work/storm.json" \
    >"$work/storm.txt" 2>"$work/storm.log" &
  stg=$!
  pids+=("$stg")
  wait_file "$work/storm.ready" "$stg" $((SYNC_TIMEOUT + 60)) || { cat "$work/storm.log" >&2; exit 1; }
  storm_rss_before=$(mem_mb "$pf" VmRSS) storm_hwm_before=$(mem_mb "$pf" VmHWM)
  sleep 1
  kill_ms=$(now_ms)
  kill -KILL "$pf" 2>/dev/null || true
  wait "$pf" 2>/dev/null || true
  start_pf
  ready_ms=$(now_ms)
  storm_ok=1
  wait_line "$work/storm.ready" resynced "$stg" "$SYNC_TIMEOUT" || storm_ok=0
  storm_hwm=$(mem_mb "$pf" VmHWM) storm_rss=$(mem_mb "$pf" VmRSS)
  resynced_ms=$(awk '/^resynced/ { print $NF; exit }' "$work/storm.ready")
  end_run "$stg"
  cat "$work/storm.txt" >&2
  str="$work/storm.json"
  storm_all="not all synced again within ${SYNC_TIMEOUT} s"
  if [ "$storm_ok" = 1 ]; then
    storm_all="$((resynced_ms - kill_ms)) ms after the kill, $((resynced_ms - ready_ms)) ms after the new pilotfish was ready"
  fi
  bad_tables+=$(cat <<EOF


#### Reconnect storm: pilotfish killed (SIGKILL) and started again with $PROXIES proxies synced

| figure | measured |
|---|---|
| new pilotfish ready (/readyz) after the kill | $((ready_ms - kill_ms)) ms |
| all proxies synced again | $storm_all |
| per proxy, stream lost → synced again, p50 / p99 / max | $(jqr '"\(.resync_after_loss.p50_ms) / \(.resync_after_loss.p99_ms) / \(.resync_after_loss.max_ms)"' "$str") ms |
| lowest synced count during the outage | $(jqr '.outages[0].lowest_synced // "n/a"' "$str")/$PROXIES |
| pilotfish before the kill: RSS / peak (VmHWM) | $storm_rss_before / $storm_hwm_before MiB |
| new pilotfish once all synced again: RSS / peak (VmHWM) during the storm | $storm_rss / $storm_hwm MiB |
| connections / stream errors (loadgen) | $(jqr '"\(.connects) / \(.stream_errors)"' "$str") |
EOF
)
fi

kill "$pf" 2>/dev/null || true
wait "$pf" 2>/dev/null || true

cat "$work/loadgen.txt" >&2
idle_cpu=$(awk -v a="$cpu_synced" -v b="$cpu_idle_end" -v t="$clk" -v s="$IDLE" 'BEGIN { printf "%.2f", (b - a) / t / s * 100 }')
sync_cpu=$(awk -v a="$cpu_start" -v b="$cpu_synced" -v t="$clk" 'BEGIN { printf "%.2f", (b - a) / t }')
run_cpu=$(awk -v a="$cpu_start" -v b="$cpu_end" -v t="$clk" 'BEGIN { printf "%.2f", (b - a) / t }')
# pilotfish's log, without colours: snapshot build times, config reloads.
sed 's/\x1b\[[0-9;]*m//g' "$work/pilotfish.main.log" >"$work/pilotfish.txt"
snapshot_ms=$(grep -o 'took_ms=[0-9.]*' "$work/pilotfish.txt" | cut -d= -f2 | xargs printf '%.0f ' || true)
stream_warnings=$(grep -c 'WARN' "$work/pilotfish.txt" || true)
rejects=$(awk '/^pilot_total_xds_rejects_total/ { s += $2 } END { print s + 0 }' "$work/metrics.txt" 2>/dev/null || echo n/a)
pushes=$(awk '/^pilot_xds_pushes_total/ { printf "%s%s=%s", sep, $1, $2; sep = ", " }' "$work/metrics.txt" 2>/dev/null | sed 's/pilot_xds_pushes_total{type="\([a-z]*\)"}/\1/g' || true)

# The floor: the same sizes served by a minimal server on the same gRPC stack.
floor_sync=n/a floor_sync_p99=n/a floor_spread=n/a floor_p99=n/a pf_spread=n/a ratio=n/a
if [ "$FLOOR" = 1 ]; then
  run_floor() { # extra floor args... ; sets $work/floor.json
    local port fpid
    port=$(free_port)
    "$BIN" loadgen floor --listen "127.0.0.1:$port" "$@" >"$work/floor.out" 2>&1 &
    fpid=$!
    pids+=("$fpid")
    for ((i = 0; i < 100; i++)); do
      grep -q listening "$work/floor.out" 2>/dev/null && break
      sleep 0.1
    done
    "$BIN" loadgen run --xds-address "127.0.0.1:$port" --proxies "$PROXIES" "${delta_flag[@]}" \
      --workload-prefix floor- --connect-rate "$CONNECT_RATE" --sync-timeout "$SYNC_TIMEOUT" \
      "${floor_run_args[@]}" --json "$work/floor.json" >"$work/floor.txt" 2>&1 || true
    kill "$fpid" 2>/dev/null || true
    wait "$fpid" 2>/dev/null || true
    cat "$work/floor.txt" >&2
  }
  round() { printf '%.0f' "$1"; }
  echo "floor: initial sync with pilotfish's sizes..." >&2
  floor_run_args=()
  run_floor --clusters "$(round "$(jqr .resources_per_proxy.cds "$rep")")" \
    --listeners "$(round "$(jqr .resources_per_proxy.lds "$rep")")" \
    --routes "$(round "$(jqr .resources_per_proxy.rds "$rep")")" \
    --cds-bytes "$(jqr .sync_bytes_per_proxy.cds "$rep")" --eds-bytes "$(jqr .sync_bytes_per_proxy.eds "$rep")" \
    --lds-bytes "$(jqr .sync_bytes_per_proxy.lds "$rep")" --rds-bytes "$(jqr .sync_bytes_per_proxy.rds "$rep")"
  floor_sync=$(jqr '.all_synced_ms // "n/a"' "$work/floor.json" 2>/dev/null || echo n/a)
  floor_sync_p99=$(jqr '.sync.p99_ms // "n/a"' "$work/floor.json" 2>/dev/null || echo n/a)
  # One EDS push the size of pilotfish's endpoint-change response, to every
  # proxy, each subscribed to as many EDS names as with pilotfish (so its
  # ACKs are as large); counted once the proxies are synced.
  eds_push=$(jq -r '[.changes[] | select(.change.kind == "endpoint") | select(.traffic.responses > 0) | .traffic.bytes / .traffic.responses] | if length > 0 then (add / length | floor) else 1000 end' "$rep")
  echo "floor: fan-out of a $eds_push-byte EDS push..." >&2
  sync_s=$(awk -v ms="$floor_sync" 'BEGIN { if (ms + 0 > 0) printf "%d", ms / 1000; else print 60 }')
  floor_run_args=(--duration $((sync_s * 3 / 2 + 20 + PROXIES / 200)))
  run_floor --clusters "$(round "$(jqr .resources_per_proxy.cds "$rep")")" \
    --listeners "$(round "$(jqr .resources_per_proxy.lds "$rep")")" \
    --routes "$(round "$(jqr .resources_per_proxy.rds "$rep")")" \
    --cds-bytes "$(jqr .sync_bytes_per_proxy.cds "$rep")" --eds-bytes "$(jqr .sync_bytes_per_proxy.eds "$rep")" \
    --lds-bytes "$(jqr .sync_bytes_per_proxy.lds "$rep")" --rds-bytes "$(jqr .sync_bytes_per_proxy.rds "$rep")" \
    --push-every 1 --push-types eds --push-bytes "$eds_push"
  floor_spread=$(jqr '.floor.spread_p50_ms // "n/a"' "$work/floor.json" 2>/dev/null || echo n/a)
  floor_p99=$(jqr '.floor.latency.p99_ms // "n/a"' "$work/floor.json" 2>/dev/null || echo n/a)
  pf_spread=$(per_kind endpoint .spread_ms)
  ratio=$(awk -v a="$pf_spread" -v b="$floor_spread" 'BEGIN { if (b + 0 > 0 && a != "n/a") printf "%.2f", a / b; else print "n/a" }')
fi

table=$(cat <<EOF
### pilotfish under load: $S services, $PROXIES proxies ($MODE)

Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); loadgen on the same machine.
Command: \`S=$S E=$E R=$R K=$K PROXIES=$PROXIES MODE=$MODE CONNECT_RATE=$CONNECT_RATE DEBOUNCE=$DEBOUNCE scripts/bench.sh\`

| figure | measured | issue 8 target |
|---|---|---|
| proxies synced (CDS, LDS and every EDS, RDS, SDS name ACKed) | $(jqr '"\(.synced)/\(.proxies)"' "$rep") | all |
| initial sync of all proxies (from the first connect) | $(jqr '.all_synced_ms // "not all synced"' "$rep") ms | ≤ 10 s |
| initial sync per proxy p50 / p99 / max | $(jqr '"\(.sync.p50_ms) / \(.sync.p99_ms) / \(.sync.max_ms)"' "$rep") ms | |
| pilotfish RSS: idle before proxies / synced / after idle / end | $rss_start / $rss_synced / $rss_idle_end / $rss_end MiB | ≤ 150 MB synced |
| pilotfish peak RSS (VmHWM) at sync / at end | $hwm_synced / $hwm_end MiB | |
| pilotfish CPU for the initial sync | $sync_cpu s | |
| pilotfish idle CPU over ${IDLE} s, proxies connected | $idle_cpu % of a core | ≤ 1 % |
| responses during the idle window | $(jqr '.idle.responses // "n/a"' "$rep") | 0 |
| endpoint change: converged (EDS ACKed) | $(converged endpoint) | all |
| endpoint change → EDS ACKed, p50 / p99 / max (median of $CHANGES changes, incl. ${DEBOUNCE} debounce) | $(per_kind endpoint .latency.p50_ms) / $(per_kind endpoint .latency.p99_ms) / $(per_kind endpoint .latency.max_ms) ms | p99 ≤ 100 ms after the debounce |
| VirtualService change: converged (RDS ACKed) | $(converged virtualservice) | all |
| VirtualService change → RDS ACKed, p50 / p99 / max (median of $CHANGES changes, incl. debounce) | $(per_kind virtualservice .latency.p50_ms) / $(per_kind virtualservice .latency.p99_ms) / $(per_kind virtualservice .latency.max_ms) ms | p99 ≤ 250 ms |
| endpoint change fan-out (last − first proxy ACK), median | $pf_spread ms | |
| floor: same EDS push to $PROXIES streams with as many EDS names each, fan-out (last − first), median | $floor_spread ms (p99 latency $floor_p99 ms) | |
| fan-out ÷ floor | $ratio | ≤ 1.5 |
| floor: initial sync of all proxies, same CDS/EDS/LDS/RDS sizes (no SDS) | $floor_sync ms (per proxy p99 $floor_sync_p99 ms) | |
| config per proxy at sync: CDS / EDS / LDS / RDS / SDS | $(kib "$(jqr .sync_bytes_per_proxy.cds "$rep")") / $(kib "$(jqr .sync_bytes_per_proxy.eds "$rep")") / $(kib "$(jqr .sync_bytes_per_proxy.lds "$rep")") / $(kib "$(jqr .sync_bytes_per_proxy.rds "$rep")") / $(kib "$(jqr .sync_bytes_per_proxy.sds "$rep")") | |
| resources per proxy: CDS / EDS (SotW: last response) / LDS / RDS / SDS | $(jqr '"\(.resources_per_proxy.cds) / \(.resources_per_proxy.eds) / \(.resources_per_proxy.lds) / \(.resources_per_proxy.rds) / \(.resources_per_proxy.sds)"' "$rep") | |
| bytes pushed per endpoint change / per VirtualService change (all proxies, median) | $(kib "$(per_kind endpoint .traffic.bytes)") / $(kib "$(per_kind virtualservice .traffic.bytes)") | |
| redundant responses (SotW) or resources (delta): CDS / EDS / LDS / RDS / SDS | $(jqr '"\(.redundant.cds) / \(.redundant.eds) / \(.redundant.lds) / \(.redundant.rds) / \(.redundant.sds)"' "$rep") | 0 |
| pilotfish's xDS listen backlog / SYNs dropped by full accept queues during the run (TcpExtListenOverflows, whole machine) | ${backlog:-n/a} / $(( ${overflows_end:-0} - ${overflows_start:-0} )) | |
| stream errors / connections | $(jqr '"\(.stream_errors) / \(.connects)"' "$rep") | 0 / $PROXIES |
| NACKs counted by pilotfish | $rejects | 0 |
| pilotfish pushes by type (/metrics) | ${pushes:-n/a} | |
| pilotfish CPU for the whole run | $run_cpu s | |
| xDS snapshot builds, first then one per change (ms, pilotfish's log) | ${snapshot_ms:-n/a} | |
| WARN lines in pilotfish's log (run and shutdown of the proxies) | ${stream_warnings:-0} | |
| loadgen's own CPU / peak RSS | $(jqr '"\(.loadgen.cpu_seconds) s / \(.loadgen.peak_rss_mb) MB"' "$rep") | |
EOF
)
table+=$bad_tables
echo "$table"
if [ -n "$OUT" ]; then echo "$table" >"$OUT"; fi
