//! verinfer inference layer.
//!
//! (Crate docs to be written: engine choice, determinism guarantees.)

pub mod onnx;
