# Sourced by .ci/run (and usable by hand: `source .ci/postgres.sh && pg_start`): a throwaway
# PostgreSQL cluster for the report store tests, in a temporary folder, on a free port of
# 127.0.0.1, run as the `postgres` user (CI runs as root, which PostgreSQL refuses).
# pg_start exports UPGRAM_TEST_POSTGRES; pg_stop stops the cluster and removes its folder.

pg_bin=""
pg_dir=""

pg_start() {
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  pg_dir=$(mktemp -d)
  chown postgres: "$pg_dir"
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; return 1; }
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c fsync=off" start >/dev/null \
    || { cat "$pg_dir/server.log" >&2; return 1; }
  export UPGRAM_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($pg_dir)"
}

pg_stop() {
  if [ -n "$pg_dir" ] && [ -d "$pg_dir/data" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "$pg_dir" ]; then
    rm -rf "$pg_dir"
  fi
  pg_dir=""
}
