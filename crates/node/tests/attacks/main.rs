//! Attacks on a live in-process devnet, made as an outsider would, each with the defense that stops it.

mod gateway;
