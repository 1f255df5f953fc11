#!/usr/bin/env node
// Compiles every contract under src/ with solc-js (the npm package `solc`,
// pinned in package.json) into artifacts/verinfer.json:
//   { "<contract name>": { "abi": [...], "bytecode": "0x...", "deployedBytecode": "0x..." } }
// for every contract that has bytecode (interfaces, libraries inlined into
// others and abstract contracts are left out). The Rust crates embed it.
//
//   node build.js           write artifacts/verinfer.json
//   node build.js --check   recompile; exit 1 if the checked-in file differs
//
// Settings must stay in step with foundry.toml (optimizer, runs, evmVersion,
// metadata) so that forge tests the same bytecode.
"use strict";
const fs = require("fs");
const path = require("path");

const ROOT = __dirname;
const SOLC_VERSION = "0.8.37";
const EVM_VERSION = "cancun";
const OPTIMIZER_RUNS = 200;
const MAX_CODE_SIZE = 24576; // EIP-170
const OUT = path.join(ROOT, "artifacts", "verinfer.json");

function die(msg) {
  process.stderr.write("build.js: " + msg + "\n");
  process.exit(1);
}

let solc;
try {
  solc = require(path.join(ROOT, "node_modules", "solc"));
} catch (e) {
  die("solc-js is not installed: run `npm ci` in contracts/ (" + e.message + ")");
}
if (!solc.version().startsWith(SOLC_VERSION + "+")) {
  die("expected solc " + SOLC_VERSION + ", found " + solc.version());
}

const srcDir = path.join(ROOT, "src");
const files = fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort();
const sources = {};
for (const f of files) sources["src/" + f] = { content: fs.readFileSync(path.join(srcDir, f), "utf8") };

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
    evmVersion: EVM_VERSION,
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) die(errors.length + " compile error(s)");

const artifacts = {};
for (const file of Object.keys(output.contracts).sort()) {
  for (const name of Object.keys(output.contracts[file]).sort()) {
    const c = output.contracts[file][name];
    const bytecode = c.evm.bytecode.object;
    if (!bytecode) continue; // interface or abstract
    if (artifacts[name]) die("two contracts named " + name);
    const deployed = c.evm.deployedBytecode.object;
    // Libraries with internal functions only are inlined into their users:
    // their own (empty-ABI) bytecode is not something to deploy.
    if (c.abi.length === 0) continue;
    const size = deployed.length / 2;
    if (size > MAX_CODE_SIZE) die(name + ": deployed code is " + size + " bytes, over the EIP-170 limit of " + MAX_CODE_SIZE);
    artifacts[name] = { abi: c.abi, bytecode: "0x" + bytecode, deployedBytecode: "0x" + deployed };
    process.stderr.write(`  ${name}: ${size} bytes deployed\n`);
  }
}
const text = JSON.stringify(artifacts, null, 2) + "\n";

if (process.argv.includes("--check")) {
  let old = null;
  try {
    old = fs.readFileSync(OUT, "utf8");
  } catch (e) {
    die("artifacts/verinfer.json is missing: run `node build.js` and commit it");
  }
  if (old !== text) die("artifacts/verinfer.json is stale: run `node build.js` in contracts/ and commit the result");
  process.stderr.write("artifacts/verinfer.json matches a fresh compile (solc " + solc.version() + ")\n");
} else {
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, text);
  process.stderr.write("wrote artifacts/verinfer.json (solc " + solc.version() + ")\n");
}
