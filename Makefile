# The two front-door commands. Each one first runs the idempotent set-up.
.PHONY: demo test setup

setup:
	./scripts/setup.sh

demo: setup
	cargo xtask demo $(ARGS)

test: setup
	cargo xtask test
