//! Kubernetes protobuf decoding (placeholder: being written; see helper brief).
