#!/usr/bin/env bash
# Runs the bookinfo mesh on this machine: pilotfish, one stock Envoy per
# workload (each bound to the workload's own loopback address) and the
# stand-in apps. Used by `make run`; stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."

ENVOY=${ENVOY_BIN:-.tools/envoy}
PILOTFISH=target/debug/pilotfish
APP=target/debug/examples/bookinfo-app
RUN=${RUN_DIR:-.run/bookinfo}
CONFIG=$RUN/config

for bin in "$ENVOY" "$PILOTFISH" "$APP"; do
  [ -x "$bin" ] || { echo "missing $bin: run 'make run' (it builds and installs everything)"; exit 1; }
done

rm -rf "$RUN" && mkdir -p "$CONFIG" "$RUN/logs"
cp examples/bookinfo/mesh/*.yaml "$CONFIG/"
cp examples/bookinfo/routing/destination-rule-all.yaml examples/bookinfo/routing/virtual-service-all-v1.yaml "$CONFIG/"
cp examples/bookinfo/routing/bookinfo-gateway.yaml "$CONFIG/"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$PILOTFISH" serve --config-dir "$CONFIG" --state-dir "$RUN/state" >"$RUN/logs/pilotfish.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs http://127.0.0.1:15014/readyz >/dev/null && break; sleep 0.1; done

# name app version N downstream-calls...
start() {
  local name=$1 app=$2 version=$3 n=$4; shift 4
  "$PILOTFISH" bootstrap --workload "$name" --config-dir "$CONFIG" --state-dir "$RUN/state" \
    --admin-address "127.0.0.$n:15000" >"$RUN/$name.yaml"
  "$ENVOY" -c "$RUN/$name.yaml" --use-dynamic-base-id --drain-strategy immediate --concurrency 1 --log-level warn \
    >"$RUN/logs/$name-envoy.log" 2>&1 &
  pids+=($!)
  local calls=()
  for c in "$@"; do calls+=(--call "$c"); done
  "$APP" --service "$app" --version "$version" --listen "127.0.1.$n:9080" \
    --sidecar "127.0.0.$n:15001" "${calls[@]}" >"$RUN/logs/$name-app.log" 2>&1 &
  pids+=($!)
}
start productpage-v1 productpage v1 11 details:9080/details/0 reviews:9080/reviews/0
start details-v1 details v1 12
start reviews-v1 reviews v1 13
start reviews-v2 reviews v2 14 ratings:9080/ratings/0
start reviews-v3 reviews v3 15 ratings:9080/ratings/0
start ratings-v1 ratings v1 16

# The ingress gateway (mesh/ingressgateway.yaml; Istio's bookinfo-gateway
# sample selects it): a stock Envoy with no app beside it.
"$PILOTFISH" bootstrap --workload istio-ingressgateway --gateway --config-dir "$CONFIG" \
  --state-dir "$RUN/state" --admin-address 127.0.0.30:15000 >"$RUN/istio-ingressgateway.yaml"
"$ENVOY" -c "$RUN/istio-ingressgateway.yaml" --use-dynamic-base-id --concurrency 1 --log-level warn \
  >"$RUN/logs/istio-ingressgateway-envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do curl -fs http://127.0.0.11:9080/productpage >/dev/null 2>&1 && break; sleep 0.1; done
cat <<MSG

bookinfo is running (logs in $RUN/logs, config in $CONFIG).

  curl -s http://127.0.0.11:9080/productpage                      # through productpage's sidecar
  curl -s http://127.0.0.30:8080/productpage                      # through the ingress gateway
  curl -s -H 'end-user: jason' http://127.0.0.11:9080/productpage
  curl -s -x http://127.0.0.11:15001 http://reviews:9080/reviews/0 # any sidecar is an HTTP proxy

Switch routing by editing files in $CONFIG (pilotfish picks changes up at once):
  cp examples/bookinfo/routing/virtual-service-reviews-test-v2.yaml $CONFIG/   # jason -> reviews v2
  cp examples/bookinfo/routing/virtual-service-reviews-50-v3.yaml $CONFIG/     # 50% v1, 50% v3
Debug: curl -s http://127.0.0.1:15014/debug/syncz ; Envoy admin: http://127.0.0.13:15000/
Ctrl-C stops everything.
MSG
wait
