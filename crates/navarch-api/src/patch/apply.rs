//! Server-side apply (placeholder: being written; see helper brief).
