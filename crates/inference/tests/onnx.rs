//! ONNX engine tests on tiny models the tests build themselves (protobuf
//! written with tract's generated ONNX types), plus tensor records, digests
//! and bad input. The fetched real model is tested in `onnx_romanizer.rs`.

use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use verinfer_inference::onnx::{
    engine_info, output_digest, tensors_digest, DType, Dim, OnnxError, OnnxModel, Tensor,
    TensorError,
};

// ---------------------------------------------------------------- builders

fn dim(d: &str) -> pb::tensor_shape_proto::Dimension {
    use pb::tensor_shape_proto::dimension::Value;
    let value = match d.parse::<i64>() {
        Ok(n) => Value::DimValue(n),
        Err(_) => Value::DimParam(d.to_string()),
    };
    pb::tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(value),
    }
}

fn value_info(name: &str, elem: DataType, dims: &[&str]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims.iter().map(|d| dim(d)).collect(),
                }),
            })),
        }),
        doc_string: String::new(),
    }
}

fn f32_init(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        name: format!("{op}_{}", outputs.join("_")),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn model(graph: pb::GraphProto) -> Vec<u8> {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "verinfer-tests".into(),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

const W: [f32; 6] = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5];
const B: [f32; 2] = [0.1, -0.2];

/// A linear classifier: x [batch, 3] f32 → logits = Gemm(x, W, B) [batch, 2],
/// probs = Softmax(logits), label = ArgMax(logits) (i64), positive =
/// logits > 0 (bool).
fn linear_classifier() -> Vec<u8> {
    model(pb::GraphProto {
        name: "linear".into(),
        node: vec![
            node("Gemm", &["x", "W", "B"], &["logits"], vec![]),
            node(
                "Softmax",
                &["logits"],
                &["probs"],
                vec![int_attr("axis", 1)],
            ),
            node(
                "ArgMax",
                &["logits"],
                &["label"],
                vec![int_attr("axis", 1), int_attr("keepdims", 0)],
            ),
            node("Greater", &["logits", "zero"], &["positive"], vec![]),
        ],
        initializer: vec![
            f32_init("W", &[3, 2], &W),
            f32_init("B", &[2], &B),
            f32_init("zero", &[], &[0.0]),
        ],
        input: vec![value_info("x", DataType::Float, &["batch", "3"])],
        output: vec![
            value_info("probs", DataType::Float, &["batch", "2"]),
            value_info("label", DataType::Int64, &["batch"]),
            value_info("positive", DataType::Bool, &["batch", "2"]),
        ],
        ..Default::default()
    })
}

/// Integer model: a, b: i64 [n] → sum = a + b (i64), same = a == b (bool).
fn int_model() -> Vec<u8> {
    model(pb::GraphProto {
        name: "ints".into(),
        node: vec![
            node("Add", &["a", "b"], &["sum"], vec![]),
            node("Equal", &["a", "b"], &["same"], vec![]),
        ],
        input: vec![
            value_info("a", DataType::Int64, &["n"]),
            value_info("b", DataType::Int64, &["n"]),
        ],
        output: vec![
            value_info("sum", DataType::Int64, &["n"]),
            value_info("same", DataType::Bool, &["n"]),
        ],
        ..Default::default()
    })
}

fn ints_attr(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn floats_attr(name: &str, v: &[f32]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Floats as i32,
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn strings_attr(name: &str, v: &[&str]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Strings as i32,
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

/// A classic-ML model: an `ai.onnx.ml` TreeEnsembleClassifier with two
/// trees over x [batch, 2] and classes labelled 10, 20, 30.
///
/// Tree 0: x0 <= 0.5 ? class 0 (1.0) : class 1 (0.6) + class 2 (0.4).
/// Tree 1: x1 <= 0.0 ? class 2 (0.5) : class 1 (0.5).
fn tree_ensemble() -> Vec<u8> {
    let mut tree = node(
        "TreeEnsembleClassifier",
        &["x"],
        &["label", "scores"],
        vec![
            ints_attr("nodes_treeids", &[0, 0, 0, 1, 1, 1]),
            ints_attr("nodes_nodeids", &[0, 1, 2, 0, 1, 2]),
            ints_attr("nodes_featureids", &[0, 0, 0, 1, 0, 0]),
            floats_attr("nodes_values", &[0.5, 0.0, 0.0, 0.0, 0.0, 0.0]),
            strings_attr(
                "nodes_modes",
                &["BRANCH_LEQ", "LEAF", "LEAF", "BRANCH_LEQ", "LEAF", "LEAF"],
            ),
            ints_attr("nodes_truenodeids", &[1, 0, 0, 1, 0, 0]),
            ints_attr("nodes_falsenodeids", &[2, 0, 0, 2, 0, 0]),
            ints_attr("class_treeids", &[0, 0, 0, 1, 1]),
            ints_attr("class_nodeids", &[1, 2, 2, 1, 2]),
            ints_attr("class_ids", &[0, 1, 2, 2, 1]),
            floats_attr("class_weights", &[1.0, 0.6, 0.4, 0.5, 0.5]),
            ints_attr("classlabels_int64s", &[10, 20, 30]),
        ],
    );
    tree.domain = "ai.onnx.ml".into();
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            pb::OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 3,
            },
        ],
        producer_name: "verinfer-tests".into(),
        graph: Some(pb::GraphProto {
            name: "trees".into(),
            node: vec![tree],
            input: vec![value_info("x", DataType::Float, &["batch", "2"])],
            output: vec![
                value_info("label", DataType::Int64, &["batch"]),
                value_info("scores", DataType::Float, &["batch", "3"]),
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn write_model(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test model");
    path
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn classifier() -> OnnxModel {
    OnnxModel::from_bytes(&linear_classifier()).expect("linear classifier loads")
}

fn sample_x() -> Tensor {
    Tensor::from_f32(
        &[4, 3],
        &[1.0, 2.0, 3.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 3.0, -2.0, 1.0],
    )
    .expect("tensor")
}

// ---------------------------------------------------------------- loading

#[test]
fn model_id_is_sha256_of_file_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = linear_classifier();
    let path = write_model(dir.path(), "linear.onnx", &bytes);
    let m = OnnxModel::load(&path).expect("load");
    assert_eq!(m.model_id(), sha256_hex(&bytes));
    assert_eq!(m.model_id().len(), 64);
    assert!(m
        .model_id()
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(m.size(), bytes.len() as u64);
    // Same bytes from memory: same id.
    assert_eq!(
        OnnxModel::from_bytes(&bytes)
            .expect("from bytes")
            .model_id(),
        m.model_id()
    );
}

#[test]
fn facts_report_names_dtypes_and_shapes() {
    let m = classifier();
    let ins = m.inputs();
    assert_eq!(ins.len(), 1);
    assert_eq!(ins[0].name, "x");
    assert_eq!(ins[0].dtype, DType::F32);
    assert_eq!(
        ins[0].shape,
        vec![Dim::Symbolic("batch".into()), Dim::Fixed(3)]
    );
    let outs = m.outputs();
    let names: Vec<&str> = outs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["probs", "label", "positive"]);
    let dtypes: Vec<DType> = outs.iter().map(|f| f.dtype).collect();
    assert_eq!(dtypes, [DType::F32, DType::I64, DType::Bool]);
    assert_eq!(outs[1].shape, vec![Dim::Symbolic("batch".into())]);
    // Facts serialise for records: fixed dims as numbers, symbols as strings.
    let json = serde_json::to_string(&ins[0]).expect("json");
    assert_eq!(json, r#"{"name":"x","dtype":"f32","shape":["batch",3]}"#);
}

#[test]
fn model_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<OnnxModel>();
}

// ---------------------------------------------------------------- running

#[test]
fn linear_classifier_computes_expected_values() {
    let m = classifier();
    let x = sample_x();
    let out = m.run(std::slice::from_ref(&x)).expect("run");
    assert_eq!(out.len(), 3);
    let xs = x.to_f32_vec().expect("f32");
    let probs = out[0].to_f32_vec().expect("probs f32");
    let labels = out[1].to_i64_vec().expect("label i64");
    let positive = out[2].to_bool_vec().expect("bool");
    assert_eq!(out[0].shape(), [4, 2]);
    assert_eq!(out[1].shape(), [4]);
    assert_eq!(out[2].shape(), [4, 2]);
    for row in 0..4 {
        let r = &xs[row * 3..row * 3 + 3];
        let logits: Vec<f64> = (0..2)
            .map(|c| {
                (0..3)
                    .map(|k| f64::from(r[k]) * f64::from(W[k * 2 + c]))
                    .sum::<f64>()
                    + f64::from(B[c])
            })
            .collect();
        let max = logits[0].max(logits[1]);
        let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        for c in 0..2 {
            let want = (logits[c] - max).exp() / z;
            let got = f64::from(probs[row * 2 + c]);
            assert!(
                (got - want).abs() < 1e-5,
                "row {row} class {c}: {got} vs {want}"
            );
            assert_eq!(
                positive[row * 2 + c],
                logits[c] > 0.0,
                "row {row} class {c}"
            );
        }
        let want_label = if logits[1] > logits[0] { 1 } else { 0 };
        assert_eq!(labels[row], want_label, "row {row}");
    }
}

#[test]
fn integer_model_is_exact() {
    let m = OnnxModel::from_bytes(&int_model()).expect("int model loads");
    let a = Tensor::from_i64(&[4], &[1, -5, i64::MAX - 1, 7]).expect("a");
    let b = Tensor::from_i64(&[4], &[2, -5, 1, 8]).expect("b");
    let out = m.run(&[a, b]).expect("run");
    assert_eq!(out[0].to_i64_vec().expect("sum"), [3, -10, i64::MAX, 15]);
    assert_eq!(
        out[1].to_bool_vec().expect("same"),
        [false, true, false, false]
    );
    // The raw bytes are little-endian.
    assert_eq!(&out[0].data()[..8], &3i64.to_le_bytes());
    assert_eq!(out[1].data(), [0, 1, 0, 0]);
}

#[test]
fn tree_ensemble_classifier_is_exact() {
    let m = OnnxModel::from_bytes(&tree_ensemble()).expect("tree ensemble loads");
    let dtypes: Vec<DType> = m.outputs().iter().map(|f| f.dtype).collect();
    assert_eq!(dtypes, [DType::I64, DType::F32]);
    let x = Tensor::from_f32(&[4, 2], &[0.2, -1.0, 0.9, 1.0, 0.9, -1.0, 0.5, 0.0]).expect("x");
    let out = m.run(std::slice::from_ref(&x)).expect("run");
    assert_eq!(out[0].to_i64_vec().expect("labels"), [10, 20, 30, 10]);
    let scores = out[1].to_f32_vec().expect("scores");
    let want: [f32; 12] = [
        1.0,
        0.0,
        0.5,
        0.0,
        0.6 + 0.5,
        0.4,
        0.0,
        0.6,
        0.4 + 0.5,
        1.0,
        0.0,
        0.5,
    ];
    for (i, (&got, &w)) in scores.iter().zip(&want).enumerate() {
        assert!((got - w).abs() < 1e-6, "score {i}: {got} vs {w}");
    }
    // Repeated runs: identical bytes.
    for _ in 0..5 {
        assert_eq!(m.run(std::slice::from_ref(&x)).expect("run"), out);
    }
}

#[test]
fn batch_of_one_and_empty_batch() {
    let m = classifier();
    let one = Tensor::from_f32(&[1, 3], &[1.0, 2.0, 3.0]).expect("tensor");
    let out = m.run(&[one]).expect("batch of one");
    assert_eq!(out[0].shape(), [1, 2]);
    // Rows are independent: the first row of a batch equals the batch of one.
    let batch = m.run(&[sample_x()]).expect("batch");
    assert_eq!(&batch[0].data()[..8], out[0].data());
}

// ---------------------------------------------------------------- determinism

#[test]
fn repeated_runs_give_identical_bytes() {
    let m = classifier();
    let x = sample_x();
    let first = m.run(std::slice::from_ref(&x)).expect("run");
    let digest = output_digest(&first);
    for _ in 0..20 {
        let again = m.run(std::slice::from_ref(&x)).expect("run");
        assert_eq!(again, first);
        assert_eq!(output_digest(&again), digest);
    }
    // A second load of the same bytes gives the same outputs too.
    let other = classifier();
    assert_eq!(other.run(std::slice::from_ref(&x)).expect("run"), first);
}

#[test]
fn concurrent_runs_give_identical_bytes() {
    let m = classifier();
    let x = sample_x();
    let reference = output_digest(&m.run(std::slice::from_ref(&x)).expect("run"));
    let digests: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..25)
                        .map(|_| output_digest(&m.run(std::slice::from_ref(&x)).expect("run")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for per_thread in digests {
        assert!(per_thread.iter().all(|d| *d == reference));
    }
}

// ---------------------------------------------------------------- tensors and digests

#[test]
fn tensor_json_uses_lowercase_hex_bytes() {
    let t = Tensor::from_f32(&[2], &[1.0, -2.5]).expect("tensor");
    let json = serde_json::to_string(&t).expect("json");
    assert_eq!(
        json,
        r#"{"dtype":"f32","shape":[2],"data":"0000803f000020c0"}"#
    );
    let back: Tensor = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, t);
    let b = Tensor::from_bool(&[3], &[true, false, true]).expect("bool");
    assert_eq!(
        serde_json::to_string(&b).expect("json"),
        r#"{"dtype":"bool","shape":[3],"data":"010001"}"#
    );
}

#[test]
fn tensor_json_is_validated() {
    let bad = [
        // Wrong byte length for the shape.
        r#"{"dtype":"f32","shape":[2],"data":"0000803f"}"#,
        // Uppercase hex.
        r#"{"dtype":"u8","shape":[1],"data":"AB"}"#,
        // Not hex.
        r#"{"dtype":"u8","shape":[1],"data":"zz"}"#,
        // Bool other than 0/1.
        r#"{"dtype":"bool","shape":[1],"data":"02"}"#,
        // Unknown dtype.
        r#"{"dtype":"f8","shape":[1],"data":"00"}"#,
        // Unknown field.
        r#"{"dtype":"u8","shape":[1],"data":"00","x":1}"#,
        // Shape whose element count overflows.
        r#"{"dtype":"u8","shape":[18446744073709551615,18446744073709551615,18446744073709551615],"data":""}"#,
    ];
    for json in bad {
        assert!(
            serde_json::from_str::<Tensor>(json).is_err(),
            "accepted {json}"
        );
    }
}

#[test]
fn tensor_constructors_check_sizes() {
    assert!(matches!(
        Tensor::from_f32(&[2, 2], &[1.0, 2.0, 3.0]),
        Err(TensorError::ElementCount {
            expected: 4,
            got: 3,
            ..
        })
    ));
    assert!(matches!(
        Tensor::new(DType::I32, vec![2], vec![0; 7]),
        Err(TensorError::ByteLength {
            expected: 8,
            got: 7,
            ..
        })
    ));
    assert!(matches!(
        Tensor::new(DType::Bool, vec![2], vec![1, 9]),
        Err(TensorError::InvalidBool { index: 1, byte: 9 })
    ));
    let t = Tensor::from_i32(&[], &[42]).expect("scalar");
    assert_eq!(t.len(), 1);
    assert!(matches!(
        t.to_f32_vec(),
        Err(TensorError::WrongDType {
            requested: DType::F32,
            actual: DType::I32
        })
    ));
    for dt in DType::ALL {
        let t = Tensor::new(dt, vec![3], vec![0; 3 * dt.size()]).expect("zeros");
        let json = serde_json::to_string(&t).expect("json");
        assert!(
            json.contains(&format!("\"dtype\":\"{}\"", dt.name())),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Tensor>(&json).expect("parse"), t);
    }
}

#[test]
fn digest_is_canonical_and_pinned() {
    let a = Tensor::from_f32(&[2], &[1.0, -2.5]).expect("a");
    let b = Tensor::from_i64(&[], &[7]).expect("b");
    // The canonical encoding, written out by hand.
    let mut enc = b"verinfer.onnx.tensors.v1\0".to_vec();
    enc.extend_from_slice(&2u64.to_le_bytes());
    enc.push(1); // f32
    enc.extend_from_slice(&1u64.to_le_bytes());
    enc.extend_from_slice(&2u64.to_le_bytes());
    enc.extend_from_slice(&8u64.to_le_bytes());
    enc.extend_from_slice(&[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0]);
    enc.push(7); // i64
    enc.extend_from_slice(&0u64.to_le_bytes());
    enc.extend_from_slice(&8u64.to_le_bytes());
    enc.extend_from_slice(&7i64.to_le_bytes());
    let want = sha256_hex(&enc);
    assert_eq!(output_digest(&[a.clone(), b.clone()]), want);
    assert_eq!(hex::encode(tensors_digest(&[a.clone(), b.clone()])), want);
    // Pinned: a change of the encoding breaks every stored record.
    assert_eq!(
        want,
        "cee767283a199c78549c9b16ebfec4263b2b44e688576e495ca0ebba119edbfc"
    );

    // Same bytes, different dtype or shape: different digest.
    let as_u32 = Tensor::new(DType::U32, vec![2], a.data().to_vec()).expect("u32");
    let as_2d = Tensor::new(DType::F32, vec![1, 2], a.data().to_vec()).expect("2d");
    let d = output_digest(std::slice::from_ref(&a));
    assert_ne!(output_digest(&[as_u32]), d);
    assert_ne!(output_digest(&[as_2d]), d);
    // Order matters.
    assert_ne!(output_digest(&[b, a]), want);
}

#[test]
fn engine_info_names_tract_and_the_instruction_sets() {
    let info = engine_info();
    assert_eq!(info.engine, "tract-onnx");
    assert_eq!(info.tract_version, "0.23.9");
    assert!(!info.isa.is_empty());
    if cfg!(target_arch = "x86_64") {
        assert!(info.isa.starts_with("x86_64"), "{}", info.isa);
    }
    assert_eq!(
        info.version_string(),
        format!("tract-onnx/0.23.9+v1 isa={}", info.isa)
    );
    println!(
        "engine: {} (level {})",
        info.version_string(),
        info.isa_level
    );
}

// ---------------------------------------------------------------- bad input

#[test]
fn missing_file_is_a_clear_error() {
    let err = OnnxModel::load("/nonexistent/dir/model.onnx").expect_err("must fail");
    match &err {
        OnnxError::Io { path, source } => {
            assert_eq!(path, Path::new("/nonexistent/dir/model.onnx"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        err.to_string().contains("/nonexistent/dir/model.onnx"),
        "{err}"
    );
}

#[test]
fn corrupt_and_truncated_bytes_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = write_model(dir.path(), "garbage.onnx", &garbage);
    let err = OnnxModel::load(&path).expect_err("garbage must fail");
    assert!(matches!(err, OnnxError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.onnx"), "{err}");

    let empty = write_model(dir.path(), "empty.onnx", &[]);
    let err = OnnxModel::load(&empty).expect_err("empty must fail");
    assert!(matches!(err, OnnxError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("no graph"), "{err}");

    // Every truncation of a valid model fails cleanly or loads; none panics.
    let bytes = linear_classifier();
    for cut in 1..bytes.len() {
        match OnnxModel::from_bytes(&bytes[..cut]) {
            Ok(_) => {}
            Err(OnnxError::Decode { .. } | OnnxError::Prepare { .. }) => {}
            Err(other) => panic!("truncation at {cut}: unexpected error {other:?}"),
        }
    }
}

#[test]
fn wrong_inputs_are_clear_errors() {
    let m = classifier();
    // Wrong count.
    let err = m.run(&[]).expect_err("no inputs");
    assert!(
        matches!(
            err,
            OnnxError::InputCount {
                expected: 1,
                got: 0,
                ..
            }
        ),
        "{err:?}"
    );
    // Wrong dtype.
    let ints = Tensor::from_i64(&[1, 3], &[1, 2, 3]).expect("t");
    let err = m.run(&[ints]).expect_err("dtype");
    assert!(
        matches!(
            err,
            OnnxError::InputDType {
                expected: DType::F32,
                got: DType::I64,
                ..
            }
        ),
        "{err:?}"
    );
    // Wrong fixed dimension.
    let wide = Tensor::from_f32(&[2, 4], &[0.0; 8]).expect("t");
    let err = m.run(&[wide]).expect_err("shape");
    assert!(matches!(err, OnnxError::InputShape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("[batch, 3]") && msg.contains("axis 1 must be 3"),
        "{msg}"
    );
    // Wrong rank.
    let flat = Tensor::from_f32(&[3], &[0.0; 3]).expect("t");
    let err = m.run(&[flat]).expect_err("rank");
    assert!(err.to_string().contains("rank 1 instead of 2"), "{err}");

    // A symbolic dimension shared by two inputs must agree.
    let ints = OnnxModel::from_bytes(&int_model()).expect("int model");
    let a = Tensor::from_i64(&[2], &[1, 2]).expect("a");
    let b = Tensor::from_i64(&[3], &[1, 2, 3]).expect("b");
    let err = ints.run(&[a, b]).expect_err("mismatch");
    assert!(err.to_string().contains("dimension n"), "{err}");
}

#[test]
fn malformed_classic_ml_attributes_never_panic() {
    // Decode the valid tree model, break one attribute at a time, re-encode:
    // every variant must load and run to a result or fail with an error.
    let base = pb::ModelProto::decode(tree_ensemble().as_slice()).expect("decode");
    let x = Tensor::from_f32(&[2, 2], &[0.2, -1.0, 0.9, 1.0]).expect("x");
    let n_attrs = base
        .graph
        .as_ref()
        .map(|g| g.node[0].attribute.len())
        .expect("graph");
    for ix in 0..n_attrs {
        for mutation in 0..3 {
            let mut m = base.clone();
            let attr = &mut m.graph.as_mut().expect("graph").node[0].attribute[ix];
            match mutation {
                0 => {
                    attr.ints.truncate(1);
                    attr.floats.truncate(1);
                    attr.strings.truncate(1);
                }
                1 => {
                    attr.ints.iter_mut().for_each(|v| *v = 99);
                    attr.floats.iter_mut().for_each(|v| *v = f32::NAN);
                    attr.strings.iter_mut().for_each(|v| *v = b"BOGUS".to_vec());
                }
                _ => {
                    attr.ints.clear();
                    attr.floats.clear();
                    attr.strings.clear();
                }
            }
            let name = attr.name.clone();
            // A broken attribute is refused by validation or by tract's
            // preparation, or runs to a result or a run error; never a
            // panic (which `guard` would turn into `EnginePanic`).
            match OnnxModel::from_bytes(&m.encode_to_vec()) {
                Ok(model) => match model.run(std::slice::from_ref(&x)) {
                    Ok(out) => assert!(!out.is_empty(), "{name} mutation {mutation}"),
                    Err(e) => assert!(
                        matches!(e, OnnxError::Run { .. }),
                        "{name} mutation {mutation}: {e:?}"
                    ),
                },
                Err(e) => assert!(
                    matches!(e, OnnxError::Refused { .. } | OnnxError::Prepare { .. }),
                    "{name} mutation {mutation}: {e:?}"
                ),
            }
        }
    }
}

/// The tree model with one attribute replaced.
fn tree_with(name: &str, replace: impl FnOnce(&mut pb::AttributeProto)) -> Vec<u8> {
    let mut m = pb::ModelProto::decode(tree_ensemble().as_slice()).expect("decode");
    let node = &mut m.graph.as_mut().expect("graph").node[0];
    let attr = node
        .attribute
        .iter_mut()
        .find(|a| a.name == name)
        .expect("attribute");
    replace(attr);
    m.encode_to_vec()
}

#[test]
fn unsafe_tree_ensembles_are_refused() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Node 1 of tree 0 made a branch (its children default to 0): a cycle.
        (
            tree_with("nodes_modes", |a| a.strings[1] = b"BRANCH_LEQ".to_vec()),
            "cycle",
        ),
        (tree_with("class_nodeids", |a| a.ints[0] = 0), "not a leaf"),
        (tree_with("nodes_truenodeids", |a| a.ints[0] = 0), "cycle"),
        (
            tree_with("nodes_falsenodeids", |a| a.ints[3] = 7),
            "outside the tree",
        ),
        (tree_with("class_ids", |a| a.ints[4] = 3), "there are 3"),
        (
            tree_with("nodes_nodeids", |a| a.ints[2] = 5),
            "not exactly 0..3",
        ),
        (
            tree_with("nodes_modes", |a| a.strings[0] = b"BRANCH_GTE".to_vec()),
            "BRANCH_GTE",
        ),
        (
            tree_with("nodes_featureids", |a| a.ints[0] = -1),
            "out-of-range",
        ),
        (
            tree_with("class_weights", |a| a.floats.truncate(2)),
            "class_weights has 2",
        ),
    ];
    for (i, (bytes, needle)) in cases.iter().enumerate() {
        let err = OnnxModel::from_bytes(bytes).expect_err("must be refused");
        assert!(
            matches!(err, OnnxError::Refused { .. }),
            "case {i}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "case {i}: {err}");
    }
}

#[test]
fn random_operators_are_refused() {
    for op in ["RandomUniform", "RandomNormal"] {
        let bytes = model(pb::GraphProto {
            name: "random".into(),
            node: vec![pb::NodeProto {
                attribute: vec![pb::AttributeProto {
                    name: "shape".into(),
                    r#type: pb::attribute_proto::AttributeType::Ints as i32,
                    ints: vec![2],
                    ..Default::default()
                }],
                ..node(op, &[], &["r"], vec![])
            }],
            output: vec![value_info("r", DataType::Float, &["2"])],
            ..Default::default()
        });
        let err = OnnxModel::from_bytes(&bytes).expect_err("random op must be refused");
        assert!(
            matches!(&err, OnnxError::NonDeterministicOp { op: o, .. } if o == op),
            "{err:?}"
        );
    }
}

#[test]
fn external_data_is_refused() {
    let mut w = f32_init("W", &[3, 2], &[]);
    w.data_location = Some(1);
    w.external_data = vec![pb::StringStringEntryProto {
        key: "location".into(),
        value: "weights.bin".into(),
    }];
    let bytes = model(pb::GraphProto {
        name: "external".into(),
        node: vec![node("MatMul", &["x", "W"], &["y"], vec![])],
        initializer: vec![w],
        input: vec![value_info("x", DataType::Float, &["1", "3"])],
        output: vec![value_info("y", DataType::Float, &["1", "2"])],
        ..Default::default()
    });
    let err = OnnxModel::from_bytes(&bytes).expect_err("external data must be refused");
    assert!(
        matches!(&err, OnnxError::ExternalData { tensor, .. } if tensor == "W"),
        "{err:?}"
    );
}

#[test]
fn unknown_operator_is_a_prepare_error() {
    let bytes = model(pb::GraphProto {
        name: "unknown".into(),
        node: vec![node("NoSuchOperator", &["x"], &["y"], vec![])],
        input: vec![value_info("x", DataType::Float, &["2"])],
        output: vec![value_info("y", DataType::Float, &["2"])],
        ..Default::default()
    });
    let err = OnnxModel::from_bytes(&bytes).expect_err("unknown op");
    assert!(matches!(err, OnnxError::Prepare { .. }), "{err:?}");
    assert!(err.to_string().contains("NoSuchOperator"), "{err}");
}

// ---------------------------------------------------------------- one interface

/// Both engines behind `ModelEngine`: the same model-id scheme, a run, and a
/// recomputation that confirms an honest claim and exposes a false one,
/// driven by code that does not know which engine it holds.
#[test]
fn both_engines_serve_the_verifier_through_one_interface() {
    use verinfer_inference::interface::{
        Claim, EngineError, Evidence, LanguageModel, ModelEngine, Output, Work,
    };
    use verinfer_inference::testing::{tiny_model, TinySpec};
    use verinfer_inference::{EngineOptions, GenerateParams, SamplingParams};

    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = tiny_model(&TinySpec::default());
    let gguf_path = write_model(dir.path(), "tiny.gguf", &gguf);
    let onnx_bytes = linear_classifier();
    let onnx_path = write_model(dir.path(), "linear.onnx", &onnx_bytes);
    let mut engines: Vec<(Box<dyn ModelEngine>, String)> = vec![
        (
            Box::new(
                LanguageModel::load(&gguf_path, EngineOptions::default()).expect("tiny gguf loads"),
            ),
            sha256_hex(&gguf),
        ),
        (
            Box::new(OnnxModel::load(&onnx_path).expect("onnx loads")),
            sha256_hex(&onnx_bytes),
        ),
    ];
    let prompt = [1u32, 40, 41, 42];
    let params = GenerateParams {
        max_tokens: 6,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        ..Default::default()
    };
    let x = [sample_x()];
    for (engine, file_hash) in engines.iter_mut() {
        assert_eq!(engine.model_id(), file_hash.as_str());
        assert!(!engine.engine_version().is_empty());
        let work = match engine.modality() {
            verinfer_inference::interface::Modality::Text => Work::Generate {
                prompt: &prompt,
                params: &params,
            },
            verinfer_inference::interface::Modality::Tensors => Work::Tensors(&x),
        };
        match engine.run(work).expect("run") {
            Output::Text(g) => {
                let honest = engine
                    .recompute(Claim::Text {
                        prompt: &prompt,
                        output: &g.tokens,
                        sampling: &params.sampling,
                        top_n: 2,
                    })
                    .expect("score");
                let Evidence::Scores(scores) = honest else {
                    panic!("text evidence is scores")
                };
                assert_eq!(scores.len(), g.tokens.len());
                assert!(scores.iter().all(|s| s.argmax == s.claimed));
                let mut edited = g.tokens.clone();
                edited[0] = if edited[0] == 50 { 51 } else { 50 };
                let Ok(Evidence::Scores(scores)) = engine.recompute(Claim::Text {
                    prompt: &prompt,
                    output: &edited,
                    sampling: &params.sampling,
                    top_n: 2,
                }) else {
                    panic!("text evidence is scores")
                };
                assert_ne!(scores[0].argmax, scores[0].claimed);
            }
            Output::Tensors { outputs, digest } => {
                assert_eq!(digest, output_digest(&outputs));
                let honest = engine
                    .recompute(Claim::Tensors {
                        inputs: &x,
                        digest: &digest,
                    })
                    .expect("rerun");
                assert_eq!(
                    honest,
                    Evidence::Tensors {
                        digest: digest.clone(),
                        matches: true
                    }
                );
                let forged = "0".repeat(64);
                let Ok(Evidence::Tensors { matches, .. }) = engine.recompute(Claim::Tensors {
                    inputs: &x,
                    digest: &forged,
                }) else {
                    panic!("tensor evidence")
                };
                assert!(!matches);
            }
        }
        // Work of the other kind is a clear error, not a panic.
        let wrong = match engine.modality() {
            verinfer_inference::interface::Modality::Text => Work::Tensors(&x),
            verinfer_inference::interface::Modality::Tensors => Work::Generate {
                prompt: &prompt,
                params: &params,
            },
        };
        assert!(matches!(
            engine.run(wrong),
            Err(EngineError::Modality { .. })
        ));
    }
}
