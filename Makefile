.PHONY: install run test bench doctor

.venv/bin/python:
	python3 -m venv .venv

# The bot and its runtime dependencies, into .venv.
install: .venv/bin/python
	@.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .

# Run the bot (settings come from the environment; see README.md).
run: install
	.venv/bin/python -m bot

# Every check: ruff, mypy and pytest in .venv (created on first use).
test:
	./scripts/test

# Benchmarks against the loopback fakes (a few minutes); writes bench/results.json.
bench: install
	.venv/bin/python -m bench

# Check the Slack app and Oxen.ai settings before users do (README, "Checking a deployment");
# e.g. make doctor ARGS="--paid C0123456789".
doctor: install
	.venv/bin/python -m bot doctor $(ARGS)
