.PHONY: serve test setup bench lint

serve:  ## set up, then run the service on port 8000
	bash scripts/serve.sh

test:  ## set up, then run lint, types and the whole test suite
	bash scripts/test.sh

setup:  ## virtual environment, install, model build
	bash scripts/setup.sh

bench:  ## the benchmark of this service against the raw engine (writes docs/benchmarks.md)
	.venv/bin/python -m bench.run
