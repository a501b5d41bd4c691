# Sourced by scripts/run.sh (`make run`) and scripts/serve.sh (`make serve POOL=`): the local stack up, the fake
# payment gateway running, .env completed, migrations applied. Expects PY; sets STACK. Messages start with $WHO.
STACK=(--name dev --port-base "${BULWARK_DEV_PORT_BASE:-63432}")

"$PY" -m devstack "${STACK[@]}" up >/dev/null
mapfile -t stack_env < <("$PY" -m devstack "${STACK[@]}" env | grep -E '^(DATABASE_URL|DATABASE_REPLICA_URLS|REDIS_URL)=')

# The fake payment gateway (devstack/fake_gateway.py) in the background, in its own session (Ctrl-C on the
# server leaves it running, like the stack); `make stop` stops it. Switch its mode with:
#   curl -X POST http://127.0.0.1:$gw_port/_control -d '{"mode": "decline"}'   (succeed | decline | fail | hang)
gw_port=$(( ${BULWARK_DEV_PORT_BASE:-63432} + 8 ))
gw_pid=.stack/dev/fake_gateway.pid
if ! { [ -f "$gw_pid" ] && kill -0 "$(cat "$gw_pid")" 2>/dev/null; }; then
    setsid "$PY" -m devstack.fake_gateway --port "$gw_port" --pid-file "$gw_pid" \
        </dev/null >>.stack/dev/fake_gateway.log 2>&1 &
    for _ in $(seq 1 50); do [ -s "$gw_pid" ] && break; sleep 0.1; done
    [ -s "$gw_pid" ] || { echo "$WHO: the fake payment gateway did not start; see .stack/dev/fake_gateway.log" >&2; exit 1; }
fi
echo "Fake payment gateway on http://127.0.0.1:$gw_port (PAYMENT_GATEWAY_URL in .env; 'make stop' stops it)."
"$PY" -m resilience.config.devenv .env "${stack_env[@]}" "PAYMENT_GATEWAY_URL=http://127.0.0.1:$gw_port"

"$PY" manage.py migrate --noinput
