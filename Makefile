# catalog-cache: the two set-up commands are `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help setup dev test lint validate bench build deploy

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install the local tools (redis-server, moto[server], cfn-lint, cargo-lambda) and fetch crates
	@source scripts/ensure-tools.sh && ensure_redis && ensure_python_tools
	$(CARGO) fetch

dev: ## run the API and the refresh job locally on 127.0.0.1:3000 (embedded store and cache, demo data)
	$(CARGO) run -p local

test: ## run every test: unit, integration against real Redis (standalone + cluster) and moto, the API contract (schemathesis), the status page in headless Chromium, cfn-lint
	scripts/with-services.sh $(CARGO) test --workspace --all-targets
	scripts/contract-test.sh
	scripts/browser-test.sh
	@$(MAKE) --no-print-directory validate

bench: build ## run the benchmarks (after the arm64 build, whose sizes it reports), then the cost model and the plots; figures go to bench/results/latest.json and the README, charts to bench/results/*.svg
	$(CARGO) build --release -p api -p bench
	scripts/with-services.sh $(CARGO) run --release -p bench --bin bench
	python3 scripts/bench-readme.py

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: ## cargo-lambda release builds of the five functions for arm64 (target/lambda/<function>/bootstrap)
	scripts/build-arm64.sh

deploy: build ## sam build and deploy, then one refresh run to warm the cache
	cd infra && sam build --template template.yaml --beta-features
	cd infra && sam deploy --guided
	cd infra && aws lambda invoke --function-name "$$(aws cloudformation describe-stacks --stack-name "$${STACK:-catalog-cache}" --query "Stacks[0].Outputs[?OutputKey=='RefreshFunctionName'].OutputValue" --output text)" --payload '{}' /dev/stdout

validate: ## check the SAM template with cfn-lint
	@source scripts/ensure-tools.sh && ensure_python_tools && cfn_lint infra/template.yaml && echo "cfn-lint: infra/template.yaml ok"
