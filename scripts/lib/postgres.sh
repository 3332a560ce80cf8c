# Shell functions for a local PostgreSQL cluster (sourced by scripts/cluster and
# scripts/load): `pg_start DIR` creates the cluster under DIR when it holds none and starts
# it on a free port of 127.0.0.1, setting PG_URL; `pg_stop DIR` stops it. PostgreSQL
# refuses to run as root: as root, its programs run as the `postgres` user (Debian's).

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pg_bin=${pg_bin:-$(dirname "$(command -v initdb)")}

as_pg() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_start() { # $1: directory
    local dir=$1 port
    port=$(free_port)
    mkdir -p "$dir"
    if [[ $(id -u) == 0 ]]; then chown -R postgres:postgres "$dir"; fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        as_pg "$pg_bin/initdb" -D "$dir/data" --auth=trust --username=postgres \
            --encoding=UTF8 >/dev/null
    fi
    as_pg "$pg_bin/pg_ctl" start -w -D "$dir/data" -l "$dir/server.log" \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" >/dev/null
    PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

pg_stop() { # $1: directory
    as_pg "$pg_bin/pg_ctl" stop -w -m fast -D "$1/data" >/dev/null 2>&1 || true
}
