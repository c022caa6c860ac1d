# The two commands a newcomer needs: `make demo` and `make test`. See README.md.
.PHONY: test lint unit e2e demo demo-down crds prereqs

## test: everything CI runs — formatting, lints, unit and integration tests, then the e2e
## suite on a real local control plane (built from source on first use, then cached).
test: prereqs lint unit e2e

prereqs:
	bash scripts/prereqs.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --features e2e -- -D warnings

unit:
	cargo test

e2e:
	bash e2e/run.sh

## demo: a local multi-region cluster with the EU/India example; stop with `make demo-down`.
demo: prereqs
	bash e2e/demo.sh up

demo-down:
	bash e2e/demo.sh down

## crds: regenerate crds/ from the Rust types.
crds:
	cargo run --quiet -- crds --out-dir crds
