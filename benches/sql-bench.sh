#!/usr/bin/env bash
# SQL lookup tables, measured: `cargo bench --bench sql` against SQLite, a throwaway
# PostgreSQL and a throwaway MariaDB (each in a temporary directory on a loopback
# port, stopped at the end), then the accept throughput of mtad with recipient
# validation by a virtual mailbox table: a map file, SQLite (cached, uncached),
# PostgreSQL and MariaDB (uncached) — the same load, one run each, same session.
#
#   benches/sql-bench.sh [MESSAGES] [SESSIONS]        (default 20000 20)
#   SKIP_CRITERION=1 benches/sql-bench.sh             (only the accept runs)
#
# Needs postgresql, mariadb-server and smtp-source (postfix); builds release first.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-20000} S=${2:-20}
tmp=$(mktemp -d)
chmod 755 "$tmp"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgport=$(free_port) myport=$(free_port)
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$tmp/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$tmp/my.pid" ] && kill "$(cat "$tmp/my.pid")" 2>/dev/null || true
  sleep 1; rm -rf "$tmp"
}
trap cleanup EXIT

mkdir "$tmp/pg"; [ "$(id -u)" = 0 ] && chown postgres "$tmp/pg"
as_pg "$pgbin/initdb" -D "$tmp/pg" --auth=trust -U postgres --no-sync >/dev/null
as_pg "$pgbin/pg_ctl" -D "$tmp/pg" -o "-p $pgport -c listen_addresses=127.0.0.1 -k $tmp/pg -c fsync=off" \
  -l "$tmp/pg/log" -w start >/dev/null
user=(); [ "$(id -u)" = 0 ] && user=(--user=root)
mariadb-install-db --no-defaults --datadir="$tmp/my" "${user[@]}" --auth-root-authentication-method=normal \
  --skip-test-db >/dev/null 2>&1
mariadbd --no-defaults --datadir="$tmp/my" --socket="$tmp/my.sock" --pid-file="$tmp/my.pid" \
  --port="$myport" "${user[@]}" --bind-address=127.0.0.1 --skip-log-bin --innodb-flush-log-at-trx-commit=0 \
  >"$tmp/my.log" 2>&1 &
for _ in $(seq 100); do mariadb --no-defaults --socket="$tmp/my.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
mariadb --no-defaults --socket="$tmp/my.sock" -uroot -e "CREATE DATABASE bench; CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY 'bench-pw'; GRANT ALL ON bench.* TO 'bench'@'127.0.0.1';"
export MTAD_BENCH_POSTGRES="postgres://postgres@127.0.0.1:$pgport/postgres"
export MTAD_BENCH_MYSQL="mysql://bench:bench-pw@127.0.0.1:$myport/bench"

cd "$here"
cargo build --release -q
if [ -z "${SKIP_CRITERION:-}" ]; then
  echo "== lookups (criterion)"
  cargo bench -q --bench sql 2>/dev/null | grep -E '^sql|time:|^stalls' || true
fi

# the recipient validation tables: smtp-source -r 4 sends to rcpt@, 2rcpt@ .. 4rcpt@dst.test
rows="('rcpt@dst.test', 'dst.test/rcpt/'),"; for i in $(seq 2 1000); do rows+="('${i}rcpt@dst.test', 'dst.test/${i}rcpt/'),"; done
rows=${rows%,}
create="CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, maildir VARCHAR(255)); INSERT INTO mailbox VALUES $rows;"
sqlite3 "$tmp/mail.db" "$create"
as_pg "$pgbin/psql" -q -h 127.0.0.1 -p "$pgport" -U postgres -d postgres -c "$create"
mariadb --no-defaults --socket="$tmp/my.sock" -uroot bench -e "$create"
{ echo "rcpt@dst.test dst.test/rcpt/"; for i in $(seq 2 1000); do echo "${i}rcpt@dst.test dst.test/${i}rcpt/"; done; } >"$tmp/mailboxes"

run() { # name, table node
  local port dir; port=$(free_port); dir="$tmp/run-$1"; mkdir -p "$dir"
  cat >"$dir/mtad.kdl" <<KDL
server {
    hostname "accept.bench.test"
    spool "$dir/spool"
}
listen "bench" address="127.0.0.1:$port"
limits {
    connections-per-ip 1000
}
$2
domains "virtual" "dst.test"
virtual-mailboxes domains="virtual" table="mailboxes"
stage "rcpt" {
    accept rcpt-domain="virtual"
}
delivery {
    queue-only #true
}
KDL
  MTAD_LOG=warn "$here/target/release/mtad" --allow-root --config "$dir/mtad.kdl" 2>"$dir/log" &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  local start end
  start=$(date +%s.%N)
  smtp-source -4 -s "$S" -m "$N" -l 1024 -r 4 -f bench@src.test -t rcpt@dst.test 127.0.0.1:"$port" >/dev/null 2>&1 \
    || echo "smtp-source reported errors ($1)" >&2
  end=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "import sys; print(f'{sys.argv[1]:28} {int(sys.argv[2])/(float(sys.argv[4])-float(sys.argv[3])):8.0f} msg/s')" "$1" "$N" "$start" "$end"
}
echo "== accept with recipient validation ($N messages x 4 recipients, $S sessions)"
run "map file" 'table "mailboxes" file="'"$tmp/mailboxes"'"'
run "sqlite, cached" 'table "mailboxes" sql="sqlite:'"$tmp/mail.db"'" query="SELECT maildir FROM mailbox WHERE username = $1"'
run "sqlite, uncached" 'table "mailboxes" sql="sqlite:'"$tmp/mail.db"'" cache-ttl="0" negative-ttl="0" query="SELECT maildir FROM mailbox WHERE username = $1"'
run "postgresql, uncached" 'table "mailboxes" sql="'"$MTAD_BENCH_POSTGRES"'" cache-ttl="0" negative-ttl="0" query="SELECT maildir FROM mailbox WHERE username = $1"'
run "mariadb, uncached" 'table "mailboxes" sql="'"$MTAD_BENCH_MYSQL"'" cache-ttl="0" negative-ttl="0" query="SELECT maildir FROM mailbox WHERE username = ?"'
