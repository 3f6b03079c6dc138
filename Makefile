.PHONY: run test bench

# Install the bot into .venv and run it (settings come from the environment; see README.md).
run:
	@test -x .venv/bin/python || python3 -m venv .venv
	@.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
	.venv/bin/python -m bot

# Every check: ruff, mypy and pytest in a fresh-or-existing .venv.
test:
	./scripts/test
