# The two commands of the README. Both set up what they need (scripts/bootstrap.sh) on a fresh machine.
SHELL := /bin/bash
.PHONY: demo test bootstrap unit

bootstrap:
	@scripts/bootstrap.sh > .bootstrap.env

# The whole product on the embedded cluster: operator + a CPU-stub QuranFineTune run to its verdict.
demo: bootstrap
	@source .bootstrap.env && quranft demo

# The whole suite (unit, embedded-cluster, end-to-end). .ci/run calls this. The cluster tests that train the
# real tiny model and the rest run as two concurrent pytest processes, each with its own embedded cluster
# (scripts/run_tests.sh), which print the time per test area.
test: bootstrap
	@source .bootstrap.env && scripts/run_tests.sh $(PYTEST_ARGS)

# Only the fast tests that need neither the cluster nor training.
unit: bootstrap
	@source .bootstrap.env && python -m pytest -m "not cluster and not slow" $(PYTEST_ARGS)
