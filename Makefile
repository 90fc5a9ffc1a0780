# LCPFS: the README's two commands.
#   make dev    install what the build needs, build, start the local demo
#   make test   install what the build needs, build, run every check and test
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

MON_ADDR ?= 127.0.0.1:6789
MON_METRICS ?= 127.0.0.1:9283

.PHONY: dev dev-stop test deps build fmt lint unit

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
	@$(BIN)/lcpfs-osd store $(DATA)/osd.0 status >/dev/null 2>&1 || { \
	  mkdir -p $(DATA) && \
	  $(BIN)/lcpfs-osd store $(DATA)/osd.0 create --layout raidz1 --disks 3 --disk-size 256M && \
	  $(BIN)/lcpfs-osd store $(DATA)/osd.0 collection create demo --compression auto && \
	  $(BIN)/lcpfs-osd store $(DATA)/osd.0 put demo README.md README.md; }
	@$(BIN)/lcpfs-osd store $(DATA)/osd.0 status
	@echo
	@$(BIN)/lcpfs-osd store $(DATA)/osd.0 ls demo
	@echo
	@echo
	@if ! $(BIN)/lcpfs --mon $(MON_ADDR) --timeout 1 mon stat >/dev/null 2>&1; then \
	  mkdir -p $(DATA)/mon.a; \
	  args="--data $(DATA)/mon.a --metrics-addr $(MON_METRICS)"; \
	  [ -f $(DATA)/mon.a/mon.json ] || \
	    args="$$args --id a --addr $(MON_ADDR) --initial-members a=$(MON_ADDR)"; \
	  nohup $(BIN)/lcpfs-mon $$args >>$(DATA)/mon.a/log 2>&1 & echo $$! >$(DATA)/mon.a/pid; \
	fi
	@$(BIN)/lcpfs --mon $(MON_ADDR) --timeout 30 status
	@echo
	@echo "A demo engine store is in $(DATA)/osd.0, and monitor a runs on $(MON_ADDR)"
	@echo "(metrics on http://$(MON_METRICS)/metrics; stop it with make dev-stop). Try:"
	@echo "  $(BIN)/lcpfs-osd store $(DATA)/osd.0 put demo NAME FILE"
	@echo "  $(BIN)/lcpfs-osd store $(DATA)/osd.0 scrub"
	@echo "  export LCPFS_MON=$(MON_ADDR) LCPFS_KEYRING=$(DATA)/mon.a/keyring"
	@echo "  $(BIN)/lcpfs auth add client.me"
	@echo "  $(BIN)/lcpfs map watch"

dev-stop:
	@if [ -f $(DATA)/mon.a/pid ]; then \
	  pid=$$(cat $(DATA)/mon.a/pid); kill $$pid 2>/dev/null || true; \
	  for i in $$(seq 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  rm -f $(DATA)/mon.a/pid; echo "monitor a stopped"; \
	fi

fmt:
	$(CARGO) fmt --all --check

lint: deps
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

unit: deps
	$(CARGO) test --release --workspace

test: deps fmt lint unit
