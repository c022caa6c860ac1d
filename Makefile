# The two commands a newcomer needs: `make demo` and `make test`. See README.md.
.PHONY: test lint unit deploy-check deploy-manifests e2e demo demo-down crds prereqs image

## test: everything CI runs — formatting, lints, unit and integration tests, then the e2e
## suite on a real local control plane (built from source on first use, then cached).
test: prereqs lint unit deploy-check e2e

prereqs:
	bash scripts/prereqs.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --features e2e -- -D warnings

unit:
	cargo test

## deploy-check: helm lint + template, kustomize overlays, Argo CD health checks in Lua.
deploy-check:
	bash scripts/deploy-check.sh

## deploy-manifests: regenerate what deploy/ derives from the chart and the Lua files.
deploy-manifests:
	"$$(bash scripts/prereqs.sh helm-path)/helm" template sovereign-operator charts/sovereign-operator --kube-version 1.33.0 \
		--namespace sovereign-system > deploy/kustomize/base/operator.yaml
	cp deploy/monitoring/alerts.yaml charts/sovereign-operator/files/alerts.yaml
	bash deploy/argocd/render-cm.sh

e2e:
	bash e2e/run.sh

## demo: a local multi-region cluster with the EU/India example; stop with `make demo-down`.
## CLUSTERS=2: one cluster per jurisdiction (eu and in, a kubeconfig with both contexts).
CLUSTERS ?= 1
demo: prereqs
	bash e2e/demo.sh up $(if $(filter 2,$(CLUSTERS)),two)

demo-down:
	bash e2e/demo.sh down $(if $(filter 2,$(CLUSTERS)),two)

## crds: regenerate crds/ from the Rust types, and its copies in the chart and kustomize base.
crds:
	cargo run --quiet -- crds --out-dir crds
	cargo run --quiet -- crds --out-dir charts/sovereign-operator/crds
	cargo run --quiet -- crds --out-dir deploy/kustomize/base/crds

## image: the operator's OCI image archive from the release binary, without a container engine
## (umoci + skopeo, installed from Debian on first use); see docs/dataplane.md.
image:
	cargo build --release --locked --bin sovereign-operator
	bash scripts/image.sh "$${CARGO_TARGET_DIR:-target}/release/sovereign-operator"
