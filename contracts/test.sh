#!/usr/bin/env bash
# Contracts CI: install the pinned toolchain (npm ci), check that the
# checked-in ABI/bytecode (artifacts/verinfer.json) matches a fresh solc-js
# compile, then run the forge tests offline. Exits non-zero on any failure.
#
# It also checks that test/MerkleVectors.t.sol is what its generator writes
# from testdata/rfc6962.
#
# Toolchain (pinned in package.json / package-lock.json): solc-js 0.8.37,
# @foundry-rs/forge and @foundry-rs/anvil 1.7.1, whose native binaries come
# inside the npm packages. forge compiles through tools/solc, a shim over
# solc-js: it never downloads a compiler (see foundry.toml).
set -euo pipefail
cd "$(dirname "$0")"

fail() {
    echo "contracts/test.sh: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || fail "node is not installed (Node.js 20 and npm are needed)"
command -v npm >/dev/null 2>&1 || fail "npm is not installed"

# npm ci when node_modules is missing or was installed from another lockfile
# (or by another Node.js); the stamp is written only after a complete install.
stamp=node_modules/.verinfer-lock-stamp
want="$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write(c.createHash("sha256").update(f.readFileSync("package-lock.json")).digest("hex")+" "+process.version)')"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "== npm ci (contracts/node_modules missing or stale)"
    # --ignore-scripts: the packages' postinstall only downloads a binary when
    # the platform package is missing; the binaries come in the platform packages.
    npm ci --no-audit --no-fund --ignore-scripts || fail "npm ci failed (is the npm registry reachable?)"
    printf '%s' "$want" >"$stamp"
fi

chmod +x tools/solc # forge runs it as the compiler
forge=node_modules/.bin/forge
[[ -x "$forge" ]] || fail "$forge is missing after npm ci"
unset TARGET_TOOL # the npm wrapper would pick the tool from it
forge_version="$("$forge" --version)" || fail "forge does not run on this platform"
echo "${forge_version%%$'\n'*}"

echo "== contracts: node build.js --check"
node build.js --check || fail "artifacts/verinfer.json does not match the sources: run 'node build.js' in contracts/"

echo "== contracts: node tools/gen-merkle-vectors.js --check"
node tools/gen-merkle-vectors.js --check || fail "test/MerkleVectors.t.sol is not what tools/gen-merkle-vectors.js generates"

echo "== contracts: forge test"
"$forge" test --offline -vv || fail "forge test failed"

# forge compiled src/ with the same settings: the bytecode it tested must be
# the bytecode in the artifact the Rust code embeds.
node -e '
const a = require("./artifacts/verinfer.json");
for (const n of Object.keys(a)) {
  const f = require("./out/" + n + ".sol/" + n + ".json");
  if (f.bytecode.object !== a[n].bytecode || f.deployedBytecode.object !== a[n].deployedBytecode) {
    console.error("forge bytecode of " + n + " differs from artifacts/verinfer.json (settings out of step?)");
    process.exit(1);
  }
}
console.log("forge tested the bytecode of artifacts/verinfer.json (" + Object.keys(a).join(", ") + ")");
' || fail "forge and build.js compiled different bytecode"
