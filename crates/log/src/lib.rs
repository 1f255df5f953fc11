//! verinfer transparency log.
