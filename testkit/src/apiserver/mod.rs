//! A test Kubernetes API server.
