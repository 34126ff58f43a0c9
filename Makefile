# Developer entry points. CI runs .ci/run, which needs no make.

CARGO ?= cargo
IMAGE ?= local-pv-provisioner:dev
NAMESPACE ?= kube-system
NODE_NAME ?= $(shell hostname)

.PHONY: build test lint image e2e run bench

## build: the release binary, target/release/local-pv-provisioner
build:
	$(CARGO) build --release --locked

## test: every test (unit, loop devices, fake API server scenarios, e2e in fake mode); run as root
test:
	$(CARGO) test --locked

## lint: formatting, clippy, and the chart/kustomize/Dockerfile checks
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	python3 -m pip install --quiet -r .ci/requirements-deploy.txt
	python3 .ci/check_deploy.py

## image: the container image (needs a Docker engine)
image:
	docker build -t $(IMAGE) .

## e2e: the end-to-end suite against the cluster of $(KUBECONFIG) (see e2etest/README.md); run as root
e2e:
	$(MAKE) -C e2etest test

## run: the controller against the current kubeconfig's cluster, as this machine's node; run as root
run: build
	./target/release/local-pv-provisioner --node-name $(NODE_NAME) --namespace-name $(NAMESPACE) --development

## bench: the speed benchmark, one table against the issue's targets (see BENCH.md); run as root
bench:
	$(CARGO) bench --locked --bench speed
