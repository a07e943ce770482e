//! Kubernetes-quantity rate parsing (placeholder, being written).
