//! Arbitrary input for every parser of untrusted input, in the normal
//! suite: the checks of `verinfer_fuzzing` (the fuzz targets' own)
//! run on random bytes and on random edits of the fuzz seeds
//! (`fuzz/seeds/<target>`, taken from the test vectors). The coverage-guided
//! run of the same checks is `fuzz/run.sh`; its figures are in
//! docs/benchmarks.md.

use proptest::prelude::*;
use proptest::sample::Index;
use std::path::{Path, PathBuf};
use verinfer_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The seed corpus of `target`, in name order.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("seed entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("seed"))
        .collect()
}

fn check(target: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no target {target}"))
}

/// One edit of a seed, at a position taken modulo its length.
#[derive(Clone, Debug)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, Index),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<Index>(),
            prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    prop::sample::select(b"{}[]\":,\\0123456789-e.\n ".to_vec())
                ],
                1..16
            )
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: &Index| i.index(data.len() + 1);
        match e {
            Edit::Flip(i, b) if !data.is_empty() => {
                let i = i.index(data.len());
                data[i] ^= b | 1;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, bytes) => {
                let i = at(i);
                data.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(i);
                let n = n.index(data.len() - i + 1).min(64);
                data.drain(i..i + n);
            }
            Edit::Truncate(i) => {
                let i = at(i);
                data.truncate(i);
            }
        }
    }
    data
}

macro_rules! arbitrary_input {
    ($($target:ident),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig {
                // Longer runs: PROPTEST_CASES=N.
                cases: std::env::var("PROPTEST_CASES")
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1024),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            $(
                #[test]
                fn $target(
                    bytes in prop::collection::vec(any::<u8>(), 0..1024),
                    seed in any::<Index>(),
                    edits in prop::collection::vec(edit(), 1..8),
                ) {
                    let target = stringify!($target);
                    let f = check(target);
                    f(&bytes);
                    let seeds = seeds(target);
                    f(&apply(seeds[seed.index(seeds.len())].clone(), &edits));
                }
            )*
        }
    };
}

arbitrary_input!(
    openai_request,
    records,
    signed_note,
    tile_path,
    receipt_bundle,
    node_auth,
    gguf_header,
);

/// The fuzz crate builds one target per check, each with seeds that pass.
#[test]
fn every_check_is_a_fuzz_target_with_passing_seeds() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz manifest");
    for (name, f) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is not a fuzz target"
        );
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        for s in &seeds {
            f(s);
        }
    }
}

/// Writes `fuzz/seeds/records` from the ledger's test world: a genesis,
/// transactions, and a receipt and each of its parts, canonically encoded.
/// Run by hand (`-- --ignored`) after a record format changes.
#[test]
#[ignore = "writes fuzz/seeds/records"]
fn write_record_seeds() {
    use verinfer_ledger::testing::World;
    use verinfer_ledger::{State, TxBody};
    use verinfer_types::records::Decision;
    use verinfer_types::Record;
    let mut w = World::new();
    let genesis = w.genesis();
    let state = State::genesis(&genesis).expect("genesis");
    let request = w.request(&w.users[0].clone(), 1, 2);
    let result = w.result(&request, 0);
    let receipt = w.receipt(&state, &request, 2);
    let mut seeds = vec![
        ("genesis", genesis.to_canonical()),
        ("request", request.to_canonical()),
        ("result", result.to_canonical()),
        (
            "verdict-accept",
            w.verdict(&result, 0, Decision::Accept).to_canonical(),
        ),
        (
            "verdict-reject",
            w.verdict(&result, 1, Decision::Reject).to_canonical(),
        ),
        ("certificate", receipt.certificate.to_canonical()),
        ("receipt", receipt.to_canonical()),
    ];
    // The setup: transfers to every user and node, then each node's stake
    // and registration.
    let setup = w.setup();
    let user = w.users[0].clone();
    let reserve = w.tx(
        &user,
        TxBody::Reserve {
            request: request.hash().expect("hash"),
            amount: w.max_fee(),
            ttl_secs: 60,
        },
    );
    for (name, tx) in [
        ("tx-transfer", &setup[0]),
        (
            "tx-stake",
            &setup[w.users.len() + w.nodes.len() + w.verifiers.len()],
        ),
        (
            "tx-register",
            &setup[w.users.len() + w.nodes.len() + w.verifiers.len() + 1],
        ),
        ("tx-reserve", &reserve),
    ] {
        seeds.push((name, tx.to_canonical()));
    }
    let dir = fuzz_dir().join("seeds/records");
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.json")), bytes.expect("encodes"))
            .expect("write seed");
    }
}
