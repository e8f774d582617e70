#!/usr/bin/env bash
# The whole test suite, as README.md gives it: build the workspace, run
# every Rust test (unit, integration, privileged end-to-end in network
# namespaces), the benchmark's smoke mode, and the package tests. Needs the
# packages scripts/install-test-deps.sh installs; the privileged parts need
# root (outside CI they skip with a message; under CI=true they fail).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --locked
cargo test --workspace --locked
# The benchmark's smoke mode: a few seconds of flows and drops at a low
# rate through flowlogd (and ulogd2 beside it); fails unless flowlogd's
# records equal the generator's ground truth.
bash bench/run.sh --smoke
# The .deb and .rpm: built, checked, installed into a clean Debian root
# (debootstrap) and purged; prints "packages: N passed, M failed".
bash packaging/test-packages.sh
