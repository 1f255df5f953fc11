#!/usr/bin/env python3
"""Plants deliberate bugs, one at a time, and records which tests catch each.

    python3 scripts/mutation_check.py [NAME ...]    (default: every mutant)

Each mutant replaces one exact piece of source (found exactly once), runs the
tests that guard that code, and restores the file whatever happens. A mutant
is caught when a test fails; the script prints a Markdown table (mutant, what
failed) for docs/benchmarks.md and exits 1 if any mutant survived. It refuses
to touch a file with uncommitted changes, so a restore never loses work.

Run from the repository root with the usual build settings (CARGO_INCREMENTAL=1,
the worktree's own target/): each mutant rebuilds one crate and its tests.
"""

import os
import re
import subprocess
import sys
import time

MUTANTS = [
    {
        "name": "merkle-leaf-prefix",
        "what": "RFC 6962 leaf prefix 0x00 -> 0x01 (leaves hash like nodes)",
        "file": "crates/tlog/src/merkle.rs",
        "old": "    let mut h = Sha256::new();\n    h.update([0u8]);\n    h.update(entry);",
        "new": "    let mut h = Sha256::new();\n    h.update([1u8]);\n    h.update(entry);",
        "tests": [["-p", "verinfer-tlog", "--lib", "--test", "rfc6962", "--test", "vectors"]],
    },
    {
        "name": "inclusion-off-by-one",
        "what": "inclusion proof: leaf m = k taken as left of the split (`m < k` -> `m <= k`)",
        "file": "crates/tlog/src/merkle.rs",
        "old": "            if m < k {\n                proof.push(self.range_hash(start + k, n - k));",
        "new": "            if m <= k {\n                proof.push(self.range_hash(start + k, n - k));",
        "tests": [["-p", "verinfer-tlog", "--lib", "--test", "rfc6962", "--test", "vectors"]],
    },
    {
        "name": "fee-split-loses-a-unit",
        "what": "fee split: the treasury's share is one unit short",
        "file": "crates/ledger/src/state.rs",
        "old": "    let treasury = fee - node - per * verifiers as u128;",
        "new": "    let treasury = (fee - node - per * verifiers as u128).saturating_sub(1);",
        "tests": [["-p", "verinfer-ledger", "--lib", "--test", "state"]],
    },
    {
        "name": "verdict-skips-last-token",
        "what": "token check: the last claimed token is never compared",
        "file": "crates/verify/src/rules.rs",
        "old": "    for (i, &c) in claimed.iter().enumerate() {",
        "new": "    for (i, &c) in claimed.iter().enumerate().take(claimed.len().saturating_sub(1)) {",
        "tests": [["-p", "verinfer-verify", "--lib", "--test", "checker_tiny"]],
    },
    {
        "name": "witness-quorum-of-one",
        "what": "receipt check: one cosignature makes a checkpoint final",
        "file": "crates/receipt/src/lib.rs",
        "old": "    if cosigners.len() < trust.witness_quorum {",
        "new": "    if cosigners.len() < 1 {",
        "tests": [["-p", "verinfer-verify", "--test", "receipt"]],
    },
]


def run_tests(args):
    """Runs `cargo test ARGS`; returns (failed test names, seconds, passed?)."""
    t = time.time()
    p = subprocess.run(
        ["cargo", "test", "--locked", "--no-fail-fast", *args, "--", "--test-threads=2"],
        capture_output=True,
        text=True,
    )
    out = p.stdout + p.stderr
    failed = sorted(set(re.findall(r"^test (\S+) \.\.\. FAILED$", out, re.M)))
    if p.returncode != 0 and not failed:
        # A compile error or a crash outside a test: report it as such.
        failed = ["(build failed)" if "error[E" in out or "could not compile" in out else "(cargo failed)"]
    return failed, time.time() - t, p.returncode == 0


def dirty(path):
    return subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path]).returncode != 0


def main():
    names = sys.argv[1:]
    chosen = [m for m in MUTANTS if not names or m["name"] in names]
    rows, survived = [], []
    for m in chosen:
        if dirty(m["file"]):
            sys.exit(f"{m['file']} has uncommitted changes: commit or stash them first")
        original = open(m["file"]).read()
        if original.count(m["old"]) != 1:
            sys.exit(f"{m['name']}: the text to mutate is not found exactly once in {m['file']}")
        try:
            with open(m["file"], "w") as f:
                f.write(original.replace(m["old"], m["new"]))
            failed, seconds = [], 0.0
            for args in m["tests"]:
                f_, s_, _ = run_tests(args)
                failed += f_
                seconds += s_
        finally:
            with open(m["file"], "w") as f:
                f.write(original)
        if not failed:
            survived.append(m["name"])
        caught = ", ".join(f"`{t}`" for t in failed) if failed else "**none: survived**"
        cmd = "; ".join("cargo test " + " ".join(a) for a in m["tests"])
        rows.append(f"| {m['name']} | {m['what']} | `{cmd}` | {caught} | {seconds:.0f} s |")
        print(rows[-1], flush=True)
    print()
    print("| mutant | planted bug | tests run | failing tests | time |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if survived:
        print(f"\nsurvived: {', '.join(survived)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
