//! The OpenAI-compatible surface: the wire format (request parsing with
//! errors that name the field, response shapes, errors) is
//! `verinfer-openai`'s; the gateway adds the engines' check of JSON schemas.

use verinfer_inference::constraint::{validate, ConstraintError};
pub use verinfer_openai::*;
use verinfer_types::records::Constraint;

/// [`verinfer_openai::parse`] with the engines' schema check.
pub fn parse(body: &[u8], chat: bool) -> Result<Parsed, ApiError> {
    verinfer_openai::parse(body, chat, &schemas)
}

/// Whether the engines can compile a decoding constraint (a byte-level
/// vocabulary decides the same schema errors as a model's).
fn schemas(c: &Constraint) -> Result<(), SchemaRefusal> {
    validate(c).map_err(|e| match e {
        ConstraintError::Unsupported(k) => SchemaRefusal::Unsupported(k),
        ConstraintError::Invalid(m) => SchemaRefusal::Invalid(m),
    })
}
