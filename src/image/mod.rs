//! Image formats and references.
