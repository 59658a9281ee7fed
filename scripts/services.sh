# Start a throw-away PostgreSQL and Redis for the test suite, on free ports, as real servers.
# Sourced by scripts/test: exports DB_* and REDIS_URL, and stops both servers on exit.
# Installs the Debian packages first when they are missing (needs root, as on CI), nginx and
# openssl too: the deployment tests start their own nginx with a throw-away certificate.

set -euo pipefail

_need_packages=()
pg_bin=""
for candidate in /usr/lib/postgresql/*/bin; do
  [ -x "$candidate/initdb" ] && pg_bin="$candidate"
done
[ -n "$pg_bin" ] || _need_packages+=(postgresql)
command -v redis-server >/dev/null 2>&1 || _need_packages+=(redis-server)
{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 || _need_packages+=(nginx)
command -v openssl >/dev/null 2>&1 || _need_packages+=(openssl)
if [ ${#_need_packages[@]} -gt 0 ]; then
  echo "== installing ${_need_packages[*]} (Debian packages)"
  if [ "$(id -u)" != 0 ]; then
    echo "missing ${_need_packages[*]}: install them (apt-get install ${_need_packages[*]}) or run as root" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${_need_packages[@]}" >/dev/null
  for candidate in /usr/lib/postgresql/*/bin; do
    [ -x "$candidate/initdb" ] && pg_bin="$candidate"
  done
fi

_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

SERVICES_DIR="$(mktemp -d /tmp/hoofhearted-services.XXXXXX)"
PG_PORT="$(_free_port)"
REDIS_PORT="$(_free_port)"
PG_DATA="$SERVICES_DIR/pg"
# PostgreSQL refuses to run as root: run it as the 'postgres' user (or 'nobody') when we are root.
_pg_user=""
if [ "$(id -u)" = 0 ]; then
  _pg_user="postgres"
  id postgres >/dev/null 2>&1 || _pg_user="nobody"
  chown -R "$_pg_user" "$SERVICES_DIR"
  chmod 755 "$SERVICES_DIR"
fi
_as_pg() {
  if [ -n "$_pg_user" ]; then runuser -u "$_pg_user" -- "$@"; else "$@"; fi
}

_as_pg "$pg_bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >"$SERVICES_DIR/initdb.log" 2>&1
_as_pg "$pg_bin/pg_ctl" -D "$PG_DATA" -l "$SERVICES_DIR/postgres.log" -w -t 30 \
  -o "-p $PG_PORT -k $SERVICES_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log" --dir "$SERVICES_DIR"
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done

stop_services() {
  _as_pg "$pg_bin/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$SERVICES_DIR/redis.pid" ] && kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null || true
  rm -rf "$SERVICES_DIR"
}
trap stop_services EXIT

export PG_BIN="$pg_bin" PG_DATA PG_PORT PG_SERVICES_USER="$_pg_user"
export DB_HOST=127.0.0.1 DB_PORT="$PG_PORT" DB_USER=postgres DB_PASSWORD="" DB_NAME=hoofhearted
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" TEST_REDIS_PORT="$REDIS_PORT"
echo "== PostgreSQL on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT"
