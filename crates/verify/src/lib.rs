//! verinfer verification layer.
