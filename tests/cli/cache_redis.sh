#!/usr/bin/env bash
# Scale-out with a shared Redis result tier, all on 127.0.0.1: one
# redis-server (no persistence), three `camserve serve` replicas with --redis,
# nginx in front with an upstream of the three.
#   a result computed by one replica is a hit on another; one replica killed
#   -> the others keep answering through nginx; Redis stopped -> every request
#   still answered (misses); Redis back -> sharing resumes after the backoff.
# Skips (77) when redis-server or nginx is not installed.
#
#   bash tests/cli/cache_redis.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1
src=$2
tmp=$(mktemp -d)
. "$src/tests/cli/lib/server_common.bash"
REDIS_PID=
NGINX_PID=
REPLICA_PIDS=()
cleanup() {
    if [ -n "$NGINX_PID" ]; then
        # TERM lets the master take its workers down; -9 on the master alone
        # would orphan them
        local workers
        workers=$(pgrep -P "$NGINX_PID" 2>/dev/null)
        kill -TERM "$NGINX_PID" 2>/dev/null
        for _ in $(seq 1 20); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$NGINX_PID" $workers 2>/dev/null
        wait "$NGINX_PID" 2>/dev/null
    fi
    for p in "${REPLICA_PIDS[@]}" $REDIS_PID; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    cleanup_server
    rm -rf "$tmp"
}
trap cleanup EXIT
need_tools
for t in redis-server nginx; do
    command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || { echo "SKIP: $t is not installed"; exit 77; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# A port nothing listens on, below the kernel's ephemeral range: ports in
# that range are also the source ports of client connections (the other
# server tests' curls, run in parallel by ctest -j), which nothing listens
# on but which still make a bind fail (seen: "bind: Address already in use").
free_port() {
    local p lo=32768 hi
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    [ "$lo" -gt 12000 ] || lo=32768
    for _ in $(seq 1 50); do
        p=$((10000 + RANDOM % (lo - 10000)))
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

png=$src/tests/data/images/resize_src.png
model=$src/tests/golden/resnet_basic/model.onnx

# ---- Redis ----
RPORT=$(free_port)
mkdir -p "$tmp/redis"
start_redis() {
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp/redis" \
        --daemonize no --logfile "$tmp/redis/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
        [ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = PONG ] && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break # it exited (a port taken since free_port looked)
        sleep 0.1
    done
    return 1
}
started=0
for _ in 1 2 3; do
    start_redis && { started=1; break; }
    kill "$REDIS_PID" 2>/dev/null
    RPORT=$(free_port)
done
[ "$started" = 1 ] || { fail "redis-server did not start: $(tail -5 "$tmp/redis/redis.log")"; exit 1; }
ok "redis-server on 127.0.0.1:$RPORT"

# ---- three replicas ----
PORTS=()
for r in 0 1 2; do
    start_server "replica$r" --model "$model:golden" --redis "redis://127.0.0.1:$RPORT/0" --workers 1 || exit 1
    REPLICA_PIDS[$r]=$SERVER_PID
    PORTS[$r]=$PORT
    SERVER_PID=
done
ok "replicas on ${PORTS[*]}"

# ---- nginx ----
NPORT=$(free_port)
mkdir -p "$tmp/nginx"
{
    [ "$(id -u)" = 0 ] && echo "user root;" # workers must reach the temp dir
    cat <<EOF
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    client_max_body_size 30m;
    upstream camserve {
        server 127.0.0.1:${PORTS[0]} max_fails=1 fail_timeout=5s;
        server 127.0.0.1:${PORTS[1]} max_fails=1 fail_timeout=5s;
        server 127.0.0.1:${PORTS[2]} max_fails=1 fail_timeout=5s;
    }
    server {
        listen 127.0.0.1:$NPORT;
        location / {
            proxy_pass http://camserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
        }
    }
}
EOF
} > "$tmp/nginx/nginx.conf"
"$NGINX" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/error.log" -g 'daemon off;' &
NGINX_PID=$!
LB=http://127.0.0.1:$NPORT
for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$LB/healthz")" = 200 ] && break
    sleep 0.1
done
if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$LB/healthz")" != 200 ]; then
    fail "nginx did not start: $(tail -5 "$tmp/nginx/error.log")"
    exit 1
fi
ok "nginx on 127.0.0.1:$NPORT"

explain_at() { # explain_at NAME BASE ALPHA
    req "$1" 200 -H "Content-Type: image/png" --data-binary @"$png" "$2/v1/explain?alpha=$3"
}
metric_at() { curl -s --max-time 5 "$1/metrics" | grep -E "^$2 " | awk '{print $2}' | head -1; }
R0=http://127.0.0.1:${PORTS[0]}
R1=http://127.0.0.1:${PORTS[1]}
R2=http://127.0.0.1:${PORTS[2]}

# ---- computed on one replica, a hit on the others ----
explain_at "replica 0 computes" "$R0" 0.31 && jcheck "a miss" '.cache == "miss"'
top=$(jq -r '.predictions[0].index' "$tmp/body")
explain_at "replica 1, same request" "$R1" 0.31 && jcheck "a hit from Redis" '.cache == "hit"' \
    && jcheck "same answer" ".predictions[0].index == $top"
explain_at "replica 2, same request" "$R2" 0.31 && jcheck "a hit" '.cache == "hit"'
[ "$(metric_at "$R1" 'camserve_cache_hits_total\{tier="redis"\}')" -ge 1 ] 2>/dev/null \
    && ok "redis hit counted on replica 1" || fail "redis hit metric on replica 1"
explain_at "through nginx" "$LB" 0.31 && jcheck "a hit whichever replica answered" '.cache == "hit"'

# ---- through nginx: every replica shares ----
bad=0
for i in $(seq 10 21); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -H "Content-Type: image/png" \
        --data-binary @"$png" "$LB/v1/explain?alpha=0.$i")
    [ "$code" = 200 ] || bad=$((bad + 1))
done
[ $bad = 0 ] && ok "12 requests through nginx: all 200" || fail "$bad of 12 requests through nginx failed"

# ---- one replica killed ----
kill -9 "${REPLICA_PIDS[0]}"
wait "${REPLICA_PIDS[0]}" 2>/dev/null
REPLICA_PIDS[0]=
bad=0
hits=0
for i in $(seq 10 21); do
    out=$(curl -s --max-time 30 -w '\n%{http_code}' -H "Content-Type: image/png" \
        --data-binary @"$png" "$LB/v1/explain?alpha=0.$i")
    [ "$(echo "$out" | tail -1)" = 200 ] || bad=$((bad + 1))
    echo "$out" | head -1 | jq -e '.cache == "hit"' >/dev/null 2>&1 && hits=$((hits + 1))
done
[ $bad = 0 ] && ok "replica 0 killed: 12 requests through nginx, all 200" || fail "$bad of 12 failed after a replica died"
[ $hits = 12 ] && ok "and all 12 were hits (computed before, shared via Redis)" || fail "only $hits of 12 were hits"

# ---- Redis stopped ----
kill -9 "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null
REDIS_PID=
bad=0
t0=$(date +%s%N)
for i in $(seq 30 41); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -H "Content-Type: image/png" \
        --data-binary @"$png" "$LB/v1/explain?alpha=0.$i")
    [ "$code" = 200 ] || bad=$((bad + 1))
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $bad = 0 ] && ok "Redis down: 12 new requests through nginx, all 200 (${ms} ms)" || fail "$bad of 12 failed with Redis down"
errs=$(metric_at "$R1" 'camserve_cache_errors_total\{tier="redis"\}')
errs2=$(metric_at "$R2" 'camserve_cache_errors_total\{tier="redis"\}')
[ $((errs + errs2)) -ge 1 ] 2>/dev/null && ok "redis errors counted ($errs, $errs2), answered as misses" || fail "redis error metric: $errs $errs2"

# ---- Redis back: sharing resumes after the backoff ----
start_redis || { fail "redis-server did not restart on $RPORT: $(tail -5 "$tmp/redis/redis.log")"; exit 1; }
resumed=0
for i in $(seq 50 75); do
    curl -s -o /dev/null --max-time 30 -H "Content-Type: image/png" --data-binary @"$png" "$R1/v1/explain?alpha=0.$i"
    if curl -s --max-time 30 -H "Content-Type: image/png" --data-binary @"$png" "$R2/v1/explain?alpha=0.$i" \
        | jq -e '.cache == "hit"' >/dev/null 2>&1; then
        resumed=1
        break
    fi
    sleep 0.5
done
[ $resumed = 1 ] && ok "Redis restarted: replicas share again" || fail "replicas did not reconnect to Redis"

for r in 1 2; do
    SERVER_PID=${REPLICA_PIDS[$r]}
    SERVER_LOG=$tmp/replica$r.log
    REPLICA_PIDS[$r]=
    stop_server || fail "replica $r did not stop"
done
echo "cache_redis: $fails failure(s)"
[ "$fails" -eq 0 ]
