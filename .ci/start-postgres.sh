#!/usr/bin/env bash
# Make sure the PostgreSQL server the tests use (127.0.0.1:5432, trust auth, database `test`) is up.
set -euo pipefail
ready() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ready; then exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  bash "$(dirname "$0")/install-deps.sh" postgresql
fi
version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$version" ]; then
  echo "start-postgres: no PostgreSQL cluster found under /etc/postgresql" >&2
  exit 1
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  if ready; then exit 0; fi
  sleep 1
done
echo "start-postgres: PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
