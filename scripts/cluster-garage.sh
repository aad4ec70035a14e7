# Garage and nginx for scripts/cluster (sourced; uses $dir, $ca, secret).
#
# Garage is pinned (2.5.0) and built with `cargo install --locked` into
# ~/.cargo/bin when absent. Three nodes on 127.0.1.1-3 in two zones (dc-a:
# nodes 1 and 2; dc-b: node 3), replication 3, consistency "consistent"
# (writes and reads need 2 of 3), RPC secured by a generated rpc secret, the
# admin API on loopback behind a generated token. A bucket "strata" with a
# host key (read, write) and a maintenance key (read, write, owner).
# nginx (Debian's) terminates TLS on 127.0.1.10:3443 with a certificate from
# the cluster's CA and fails over between the three nodes' S3 APIs.

garage_version=2.5.0
garage_bin="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
s3_host=127.0.1.10
s3_port=3443
# Serves a certificate that expired in 2020 (tests of the refusal).
s3_expired_port=3444
node_ip() { printf '127.0.1.%s' "$1"; }
node_zone() { if [ "$1" = 3 ]; then echo dc-b; else echo dc-a; fi; }
node_dir() { printf '%s/garage/%s' "$dir" "$1"; }
# The garage CLI, talking to node $GNODE (default 1) over its RPC.
gcli() { "$garage_bin" -c "$(node_dir "${GNODE:-1}")/garage.toml" "$@"; }

ensure_garage() {
  if [ ! -x "$garage_bin" ] || ! "$garage_bin" --version 2>/dev/null | grep -q "$garage_version"; then
    echo "cluster: building Garage $garage_version (cargo install --locked; about 10 min cold, then cached in ~/.cargo/bin)" >&2
    cargo install garage --version "$garage_version" --locked --quiet
  fi
}

ensure_nginx() {
  if [ ! -x /usr/sbin/nginx ]; then
    echo "cluster: installing nginx (Debian's packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nginx-light >/dev/null
  fi
}

garage_config() { # node
  local n=$1 d
  d=$(node_dir "$n")
  mkdir -p "$d/meta" "$d/data"
  (
    umask 077
    cat > "$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
metadata_fsync = true
data_fsync = true
# strata's chunks (and restic's packs) arrive compressed: Garage's own zstd
# pass (level 1 by default) would only burn the nodes' CPU.
compression_level = "none"
rpc_bind_addr = "$(node_ip "$n"):3901"
rpc_public_addr = "$(node_ip "$n"):3901"
rpc_secret = "$(cat "$dir/secrets/garage_rpc_hex")"

[s3_api]
s3_region = "garage"
api_bind_addr = "$(node_ip "$n"):3900"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "$(node_ip "$n"):3903"
admin_token = "$(cat "$(secret garage_admin)")"
EOF
  )
}

# True when the pid in file $1 is a live process whose command line holds
# $2 (a stale pid file, or a pid reused by another program, is not).
alive() {
  [ -s "$1" ] || return 1
  local pid
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

node_running() { alive "$(node_dir "$1")/pid" "$(node_dir "$1")/garage.toml"; }

start_node() { # node
  local n=$1 d i
  d=$(node_dir "$n")
  node_running "$n" && return 0
  [ -s "$d/garage.toml" ] || garage_config "$n"
  nohup "$garage_bin" -c "$d/garage.toml" server >> "$d/server.log" 2>&1 < /dev/null &
  echo $! > "$d/pid"
  for i in $(seq 1 150); do
    GNODE=$n gcli status >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "cluster: Garage node $n did not start; see $d/server.log" >&2
  return 1
}

stop_node() { # node
  local n=$1 d i
  d=$(node_dir "$n")
  if node_running "$n"; then
    kill "$(cat "$d/pid")" 2>/dev/null || true
    for i in $(seq 1 50); do node_running "$n" || break; sleep 0.1; done
    if node_running "$n"; then kill -9 "$(cat "$d/pid")" 2>/dev/null || true; fi
  fi
  rm -f "$d/pid"
}

node_id() { GNODE=$1 gcli node id -q 2>/dev/null | head -n 1; }

layout_version() {
  gcli layout show 2>/dev/null | awk -F': *' '/Current cluster layout version/ {print $2; exit}'
}

# Replaces node N by a fresh, empty one at the same address: stop it, wipe
# its metadata and data, start it (a new identity), swap the old identity
# for the new one in the layout, and wait until the layout is stable again
# (the metadata re-replicated) and the nodes' block resync queues drain.
replace_node() { # node
  local n=$1 ctl=1 old new v i q
  [ "$n" = 1 ] && ctl=2
  old=$(cat "$(node_dir "$n")/node_id" 2>/dev/null || true)
  [ -n "$old" ] || { echo "cluster: node $n has no recorded id (was the cluster brought up by this script?)" >&2; return 1; }
  stop_node "$n"
  rm -rf "$(node_dir "$n")/meta" "$(node_dir "$n")/data"
  start_node "$n"
  new=$(node_id "$n")
  GNODE=$ctl gcli node connect "$new" >/dev/null
  GNODE=$ctl gcli layout remove "${old%%@*}" >/dev/null
  GNODE=$ctl gcli layout assign -z "$(node_zone "$n")" -c 1G "${new%%@*}" >/dev/null
  v=$(GNODE=$ctl layout_version)
  GNODE=$ctl gcli layout apply --version "$(( ${v:-0} + 1 ))" >/dev/null
  printf '%s\n' "$new" > "$(node_dir "$n")/node_id"
  # The old identity will never come back: do not wait for its
  # acknowledgement (Garage refuses this unless a quorum of every piece of
  # metadata is on the remaining nodes), and wait for the new version to
  # be the only live one.
  local target=$(( ${v:-0} + 1 )) stable=
  for i in $(seq 1 240); do
    if [ "$(GNODE=$ctl layout_version)" = "$target" ] &&
      GNODE=$ctl gcli layout history 2>/dev/null | grep -q "stable state"; then
      stable=1
      break
    fi
    GNODE=$ctl gcli layout skip-dead-nodes --version "$target" >/dev/null 2>&1 || true
    sleep 0.5
  done
  if [ -z "$stable" ]; then
    echo "cluster: the layout did not become stable at version $target after replacing node $n" >&2
    return 1
  fi
  for i in $(seq 1 40); do
    q=$(GNODE=$ctl gcli status 2>/dev/null | awk '$NF ~ /cargo:/ {s += $(NF-1)} END {print s+0}')
    [ "$q" = 0 ] && break
    sleep 0.5
  done
  echo "cluster: node $n replaced (${old%%@*} -> ${new%%@*}); layout stable; block resync queue: ${q:-?}" >&2
}

# Writes secrets/<key>.s3 (mode 0600): the key's id and secret, read from
# the CLI's output (never passed in argv).
key_credentials() { # key name
  local name=$1 out="$dir/secrets/$1.s3" info id sk
  [ -s "$out" ] && return 0
  info=$(gcli key info "$name" --show-secret 2>/dev/null || gcli key create "$name")
  id=$(printf '%s\n' "$info" | awk -F': *' '/Key ID/ {print $2; exit}')
  sk=$(printf '%s\n' "$info" | awk -F': *' '/Secret key/ {print $2; exit}')
  if [ -z "$id" ] || [ -z "$sk" ]; then
    echo "cluster: could not read the credentials of Garage key $name" >&2
    return 1
  fi
  (umask 077; printf 'access_key_id = "%s"\nsecret_access_key = "%s"\n' "$id" "$sk" > "$out")
}

nginx_up() {
  ensure_nginx
  make_tls
  local d="$dir/nginx"
  mkdir -p "$d"
  cat > "$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
# Each proxied request holds two connections; a fleet of hosts with 16
# requests in flight each needs thousands (512 dropped TLS handshakes at 16
# concurrent saves).
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  upstream garage_s3 {
    server $(node_ip 1):3900 max_fails=1 fail_timeout=5s;
    server $(node_ip 2):3900 max_fails=1 fail_timeout=5s;
    server $(node_ip 3):3900 max_fails=1 fail_timeout=5s;
  }
  server {
    listen $s3_host:$s3_expired_port ssl;
    ssl_certificate $dir/tls/s3-expired.crt;
    ssl_certificate_key $dir/tls/s3-expired.key;
    location / { proxy_pass http://garage_s3; proxy_set_header Host \$http_host; }
  }
  server {
    listen $s3_host:$s3_port ssl;
    ssl_certificate $dir/tls/s3.crt;
    ssl_certificate_key $dir/tls/s3.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {
      proxy_pass http://garage_s3;
      # SigV4 signs the host the client used.
      proxy_set_header Host \$http_host;
      proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
      proxy_connect_timeout 2s;
      proxy_read_timeout 120s;
      proxy_send_timeout 120s;
    }
  }
}
EOF
  if alive "$d/nginx.pid" nginx; then
    /usr/sbin/nginx -c "$d/nginx.conf" -s reload
  else
    /usr/sbin/nginx -c "$d/nginx.conf"
  fi
}

garage_up() {
  ensure_garage
  mkdir -p "$dir/garage" "$dir/secrets"
  if [ ! -s "$dir/secrets/garage_rpc_hex" ]; then
    (umask 077; openssl rand -hex 32 | tr -d '\n' > "$dir/secrets/garage_rpc_hex")
  fi
  local n v
  for n in 1 2 3; do start_node "$n"; done
  for n in 1 2 3; do node_id "$n" > "$(node_dir "$n")/node_id"; done
  for n in 2 3; do gcli node connect "$(node_id "$n")" >/dev/null; done
  # The layout: 1 GB per node, two zones; applied once.
  if [ ! -e "$dir/garage/layout-applied" ]; then
    for n in 1 2 3; do
      gcli layout assign -z "$(node_zone "$n")" -c 1G "$(node_id "$n" | cut -d@ -f1)" >/dev/null
    done
    v=$(gcli layout show 2>/dev/null | awk '/[Cc]urrent cluster layout version/ {print $NF; exit}')
    gcli layout apply --version "$(( ${v:-0} + 1 ))" >/dev/null
    touch "$dir/garage/layout-applied"
  fi
  gcli bucket info strata >/dev/null 2>&1 || gcli bucket create strata >/dev/null
  key_credentials strata-host
  key_credentials strata-maint
  gcli bucket allow --read --write strata --key strata-host >/dev/null
  gcli bucket allow --read --write --owner strata --key strata-maint >/dev/null
  nginx_up
}

garage_down() {
  local n
  if alive "$dir/nginx/nginx.pid" nginx; then
    /usr/sbin/nginx -c "$dir/nginx/nginx.conf" -s stop 2>/dev/null || true
  fi
  for n in 1 2 3; do stop_node "$n"; done
}

garage_status() {
  echo "garage $garage_version (nodes, zones, layout, health):"
  gcli status 2>&1 | sed 's/^/  /' || true
  echo "s3 endpoint: https://$s3_host:$s3_port (nginx, TLS from $ca)"
}

s3_url() { # key name
  printf 's3://strata?endpoint=https://%s:%s&region=garage&ca=%s&credentials=%s' \
    "$s3_host" "$s3_port" "$ca" "$dir/secrets/$1.s3"
}
