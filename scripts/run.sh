#!/usr/bin/env bash
# `make run`: start the local stack, complete .env, migrate, load the demo catalog, make sure an
# admin user exists, then serve with gunicorn on http://127.0.0.1:${PORT:-8000} in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
STACK=(--name dev --port-base "${BULWARK_DEV_PORT_BASE:-63432}")

"$PY" -m devstack "${STACK[@]}" up >/dev/null
mapfile -t stack_env < <("$PY" -m devstack "${STACK[@]}" env | grep -E '^(DATABASE_URL|DATABASE_REPLICA_URLS|REDIS_URL)=')
"$PY" -m resilience.config.devenv .env "${stack_env[@]}"

"$PY" manage.py migrate --noinput
"$PY" manage.py seed_demo
"$PY" manage.py ensure_admin --password-file .stack/dev/admin_password
port=$("$PY" -c 'from resilience.config import load_config; print(load_config().port)')
echo "Serving on http://127.0.0.1:$port (Ctrl-C stops the server; 'make stop' stops the stack)."
exec .venv/bin/gunicorn settings.wsgi --pid .stack/dev/gunicorn.pid
