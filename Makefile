# LCPFS: the README's two commands.
#   make dev    install what the build needs, build, run a local cluster (Ctrl-C stops it)
#   make test   install what the build needs, build, run every check and test
# and, for containers (Docker Engine with Compose):
#   make image         the lcpfs:dev image, FROM scratch, from the release binaries
#   make cluster-up    3 monitors and 6 OSDs on a private network (deploy/compose)
#   make cluster-test  a smoke test against that cluster (an OSD stopped and back)
#   make cluster-down  stop it and remove its volumes
#   make chaos-image   lcpfs:chaos, the same with failpoints in the OSD's disk calls
#   make chaos         faults at random against a chaos-build cluster, with a history
#                      checker
#   make chaos-short   two minutes of it on a fresh cluster, removed afterwards
#
# CARGO_TARGET_DIR is honoured (CI points it at a cache outside the clone).

SHELL := /bin/bash
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BIN := $(TARGET_DIR)/release
DATA ?= $(CURDIR)/lcpfs-data
# Debian packages the build needs: libclang for RocksDB's bindings, a C++ compiler for
# RocksDB itself.
PACKAGES := libclang-dev g++

.PHONY: chaos chaos-image chaos-short dev test deps build fmt lint unit k8s image cluster-up cluster-down cluster-test

deps:
	@missing=""; \
	if command -v dpkg >/dev/null 2>&1; then \
	  for pkg in $(PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "LCPFS needs these packages; install them with:"; \
	    echo "  sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

build: deps
	$(CARGO) build --release --workspace

dev: build
	$(BIN)/lcpfs dev --data $(DATA)

fmt:
	$(CARGO) fmt --all --check

lint: deps
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# The cluster tests start the daemons' binaries, which `cargo test` does not build
# (they are other packages' binaries): build them first. The engine's failpoint tests
# need the chaos build of the engine; --workspace keeps every other crate's features
# as in the builds above (with -p, RocksDB would be built a second time).
unit: deps
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release --workspace
	$(CARGO) test --release --workspace --features lcpfs-engine/failpoints --test failpoints

# The Kubernetes manifests, validated against the Kubernetes schemas by
# kubernetes-validate, installed into a virtualenv beside the build cache.
VENV := $(TARGET_DIR)/k8s-venv
KUBERNETES_VALIDATE := kubernetes-validate==1.37.0

$(VENV)/bin/kubernetes-validate:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet $(KUBERNETES_VALIDATE)

k8s: $(VENV)/bin/kubernetes-validate
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/python deploy/k8s/validate.py

test: deps fmt lint k8s unit

# Compose v2 (`docker compose`) or v1 (`docker-compose`), whichever is installed.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose) \
	-p lcpfs -f deploy/compose/docker-compose.yml

image: build
	deploy/image/build.sh $(BIN) lcpfs:dev

# The chaos build: the OSD with failpoints in its disk calls (engine/src/disk_io.rs)
# and crash points (osd/src/crash.rs), which an OSD of a release never has. Built
# beside the release OSD, copied out, and the release OSD put back in place.
CHAOS_BIN := $(TARGET_DIR)/chaos
chaos-image: build
	$(CARGO) build --release --workspace --features lcpfs-osd/failpoints --bin lcpfs-osd
	mkdir -p $(CHAOS_BIN)
	cp $(BIN)/lcpfs-osd $(CHAOS_BIN)/lcpfs-osd
	cp $(BIN)/lcpfs $(BIN)/lcpfs-mon $(CHAOS_BIN)/
	$(CARGO) build --release --workspace --bin lcpfs-osd
	deploy/image/build.sh $(CHAOS_BIN) lcpfs:chaos

# The compose cluster's CA and certificates (deploy/compose/tls), and the client
# certificate the host's `lcpfs`, smoke test and chaos runs use.
COMPOSE_TLS := deploy/compose/tls
CLIENT_TLS := $(CURDIR)/$(COMPOSE_TLS)/client.admin

cluster-up: image
	deploy/compose/certs.sh $(BIN)/lcpfs
	$(COMPOSE) up -d

cluster-test: cluster-up
	LCPFS_TLS_DIR=$(CLIENT_TLS) deploy/compose/smoke.sh $(BIN)/lcpfs

# Down with every profile, so that the spare OSD goes too when a chaos run added it.
COMPOSE_DOWN := COMPOSE_PROFILES=spare $(COMPOSE) down --volumes --timeout 20

cluster-down:
	$(COMPOSE_DOWN)
	rm -rf $(COMPOSE_TLS)

# Faults at random against the compose cluster with a history checker; not part of
# `make test`. CHAOS_ARGS, e.g. `--duration 120 --seed 42`, go to lcpfs-chaos.
CHAOS_ARGS ?= --duration 600
# The chaos image, monitors that mark an OSD out after 30 s down (`down-out`), and
# OSDs that log peering and recovery (`info`), to trace an anomaly back.
CHAOS_ENV := LCPFS_IMAGE=lcpfs:chaos LCPFS_DOWN_OUT_INTERVAL=30 LCPFS_LOG=info
CHAOS := $(CHAOS_ENV) LCPFS_TLS_DIR=$(CLIENT_TLS) $(BIN)/lcpfs-chaos --compose "$(COMPOSE)"
chaos: chaos-image
	deploy/compose/certs.sh $(BIN)/lcpfs
	$(CHAOS_ENV) $(COMPOSE) up -d
	$(CHAOS) $(CHAOS_ARGS)

# A short run: two minutes of faults against a fresh cluster, removed afterwards
# whatever the outcome. CI runs it as `make chaos` does: every fault kind, and
# writes given up mid-request. CHAOS_ARGS_SHORT adds lcpfs-chaos arguments, e.g.
# `--faults kill,power --seed 42`.
CHAOS_ARGS_SHORT ?=
chaos-short: chaos-image
	$(COMPOSE_DOWN)
	rm -rf $(COMPOSE_TLS)
	deploy/compose/certs.sh $(BIN)/lcpfs
	$(CHAOS_ENV) $(COMPOSE) up -d
	$(CHAOS) --duration 120 --recovery-timeout 300 $(CHAOS_ARGS_SHORT); \
	status=$$?; $(COMPOSE_DOWN); rm -rf $(COMPOSE_TLS); exit $$status
