# Bulwark: the two commands (see README.md). Both work as root and as an ordinary user.
.PHONY: run serve test stop bootstrap lint

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap  ## start the local stack and serve on http://127.0.0.1:8000 (PORT honoured)
	@bash scripts/run.sh

serve: bootstrap  ## serve one traffic class's pool in the foreground: make serve POOL=catalog (port 8101; PORT honoured)
	@POOL="$(POOL)" bash scripts/serve.sh

test:  ## lint, then the whole suite against a throwaway stack (bootstrap also installs the suite's tools)
	@BOOTSTRAP_TEST_TOOLS=1 bash scripts/bootstrap.sh
	@bash scripts/test.sh

stop:  ## stop the server started by `make run` and the local stack (data kept)
	@bash scripts/stop.sh

lint: bootstrap  ## ruff, and the import contracts (shop -> resilience -> core)
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports --no-cache --no-logo

.PHONY: drill
drill: bootstrap  ## the resilience drill: own stack + gunicorn, the seed's five criteria under load, PASS/FAIL (ARGS="--phases redis jwt")
	@.venv/bin/python -m bench.drill $(ARGS)

.PHONY: bench
BENCH ?= hotpaths failover jwt serving observability ratelimit
bench:  ## benchmarks, each rewriting only its own part of docs/benchmarks.md (~1.5 h; a subset: BENCH="hotpaths jwt")
	@BOOTSTRAP_TEST_TOOLS=1 bash scripts/bootstrap.sh  # the suite's tools: valgrind for the hot paths' instruction counts
	@set -e; for b in $(BENCH); do echo "== python -m bench.$$b --publish"; .venv/bin/python -m bench.$$b --publish; done
