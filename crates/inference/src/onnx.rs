//! ONNX engine for classic ML models (in progress).
