#!/usr/bin/env bash
# `make run`: start the local stack, complete .env, migrate, load the demo catalog, make sure an
# admin user exists, then serve with gunicorn on http://127.0.0.1:${PORT:-8000} in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WHO=run
source scripts/dev_prepare.sh
"$PY" manage.py seed_demo
"$PY" manage.py ensure_admin --password-file .stack/dev/admin_password
# Its second factor (the controls need it): enrolled once, the URI and QR code printed then; later runs say so.
"$PY" manage.py staff_otp enroll admin
port=$("$PY" -c 'from resilience.config import load_config; print(load_config().port)')
echo "Serving on http://127.0.0.1:$port (Ctrl-C stops the server; 'make stop' stops the stack)."
exec .venv/bin/gunicorn settings.wsgi --pid .stack/dev/gunicorn.pid
