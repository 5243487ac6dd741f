.PHONY: serve test setup bench lint

serve:  ## set up, then run the service on port 8000
	bash scripts/serve.sh

test:  ## set up, then run lint, types and the whole test suite
	bash scripts/test.sh

setup:  ## virtual environment, install, model build
	bash scripts/setup.sh

bench:  ## the benchmark of this service against the raw engine (writes docs/benchmarks.md)
	.venv/bin/python -m bench.run

.PHONY: image image-gpu
IMAGE ?= inferline
TAG ?= 0.1.0

image:  ## the CPU image (deploy/docker/Dockerfile; builds the model inside), $(IMAGE):$(TAG)
	docker build -f deploy/docker/Dockerfile -t $(IMAGE):$(TAG) .

image-gpu:  ## the CUDA image (deploy/docker/Dockerfile.gpu), $(IMAGE):$(TAG)-gpu
	docker build -f deploy/docker/Dockerfile.gpu -t $(IMAGE):$(TAG)-gpu .
