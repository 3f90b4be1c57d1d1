#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth for `postgres`,
# starting the machine's cluster if none runs. Idempotent.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432; then exit 0; fi
echo "[postgres] no server on 127.0.0.1:5432; starting the local cluster" >&2
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z "$version" ]]; then
  echo "[postgres] no cluster configured; creating one" >&2
  version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  pg_createcluster "$version" main >/dev/null
fi
conf=/etc/postgresql/$version/main
# Trust auth on loopback, as the test harness expects (local machine only).
if ! grep -q "lanewatch-tests" "$conf/pg_hba.conf"; then
  sed -i '1i host all all 127.0.0.1/32 trust # lanewatch-tests\nhost all all ::1/128 trust # lanewatch-tests' "$conf/pg_hba.conf"
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 0.5; done
echo "[postgres] server did not come up on 127.0.0.1:5432" >&2
exit 1
