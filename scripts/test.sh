#!/usr/bin/env bash
# The whole test suite, from a fresh machine with Rust, Python 3 and a Debian
# base: installs what the tests need (pip and venv for the model fetch and the
# OpenAI-client test, Chromium and chromedriver for the browser tests, the
# contracts' pinned npm toolchain with forge and anvil), runs the forge tests,
# then every Rust test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, installed only when missing (as root, or through sudo).
need=()
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if ((${#need[@]})); then
    sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    echo "== apt-get install ${need[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "${need[@]}"
fi

# Solidity contracts: npm ci of the pinned solc-js/forge/anvil into
# contracts/node_modules if needed (the anvil tests use it too), check the
# checked-in ABI/bytecode artifact, run the forge tests offline.
echo "== contracts"
bash contracts/test.sh

echo "== cargo test --workspace"
cargo test --workspace --locked "$@"
