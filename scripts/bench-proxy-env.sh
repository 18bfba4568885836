# Shared by scripts/bench-proxy and scripts/proxy-instructions (sourced): the
# ports, a work directory removed on exit, the upstream (an nginx answering a
# 1 KiB body), HAProxy's configuration, and a single-node control plane
# routing web.bench to the upstream. Expects scripts/env.sh sourced and the
# release `meridian` built.
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
PROXY_CORE=0 LOAD_CORE=1
[ "$(nproc)" -ge 2 ] || { PROXY_CORE=0; LOAD_CORE=0; echo "(one core: proxies and load share it)"; }

UP=18801 HAP=18802 NGX=18803 MP=18804 CP=18805 CPH=18806 ADM=18807
start_upstream() {
  local body
  body=$(head -c 1023 /dev/zero | tr '\0' 'x')
  mkdir -p "$work/nginx-up"
  cat > "$work/nginx-up/nginx.conf" <<CONF
worker_processes 1; pid $work/nginx-up/pid; error_log $work/nginx-up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; server { listen 127.0.0.1:$UP; listen 127.0.0.1:$((UP+100)) http2;
  location / { return 200 "$body\n"; } } }
CONF
  taskset -c $LOAD_CORE nginx -c "$work/nginx-up/nginx.conf" -g 'daemon off;' & pids+=($!)
}
# haproxy_config THREADS: HAProxy proxying HTTP/1.1 on $HAP and h2c on $HAP+100 to the upstream.
haproxy_config() {
  cat <<CONF
global
  nbthread $1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$HAP
  bind 127.0.0.1:$((HAP+100)) proto h2
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:$UP
CONF
}
# A single-node control plane with the service web.bench on port $MP, whose endpoint is the upstream.
start_control_plane() {
  taskset -c $LOAD_CORE "$bin/meridian" --insecure server --node-id 1 --data-dir "$work/cp" --grpc-addr 127.0.0.1:$CP \
    --http-addr 127.0.0.1:$CPH --initial-cluster 1=127.0.0.1:$CP 2>"$work/cp.log" & pids+=($!)
  for _ in $(seq 1 100); do "$bin/meridian" --insecure --server 127.0.0.1:$CP get clusters >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin/meridian" --insecure --server 127.0.0.1:$CP apply -f - >/dev/null <<YAML
kind: Cluster
metadata: {name: bench}
spec: {region: local, zone: local-a}
---
kind: Service
metadata: {name: web, namespace: bench}
spec: {protocol: http, port: $MP}
---
kind: Endpoints
metadata: {name: web, namespace: bench, cluster: bench}
spec: {endpoints: [{address: 127.0.0.1, port: $UP}]}
YAML
}
# meridian-proxy's arguments in these measurements: its routes from that
# control plane, listeners as the mesh gives them ($MP for web.bench).
proxy_args=(--insecure --xds 127.0.0.1:$CP --node-id bench --cluster bench
  --admin-addr 127.0.0.1:$ADM --state-dir "$work/proxy")
# routes PORT AUTHORITY: waits (up to two minutes) until a request through PORT is answered.
routes() {
  for _ in $(seq 1 600); do curl -fsS -o /dev/null -H "Host: $2" "http://127.0.0.1:$1/" 2>/dev/null && return; sleep 0.2; done
  echo "$(basename "$0"): nothing answers through port $1; see $work" >&2; exit 1
}
# start_proxy_alone BIN: meridian-proxy BIN, one worker on the proxy's core,
# its pid in $proxy, once web.bench is routed through $MP.
start_proxy_alone() {
  taskset -c $PROXY_CORE "$1" "${proxy_args[@]}" --workers 1 2>>"$work/proxy.log" & proxy=$!; pids+=($proxy)
  routes $MP web.bench
}
