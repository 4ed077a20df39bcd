//! OpenAPI v3 documents (placeholder: being written; see helper brief).
