//! A test HiK8s intake server.
