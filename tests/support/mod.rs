//! Fixtures shared by the integration tests: a fake Kubernetes API server,
//! loop devices, the provisioner binary run as a process, and the one test
//! world built from them that every scenario uses.

// Every integration test file compiles this module on its own and uses only
// part of it, so items unused by one particular test file are expected.
#![allow(dead_code)]

pub mod fake_api;
pub mod loop_device;
pub mod promql;
pub mod provisioner;
pub mod world;
