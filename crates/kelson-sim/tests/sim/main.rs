//! Simulated nodes against a real API server, in one test binary rather
//! than one per file; every test starts its own `TestCluster`.

mod scale;
mod sim;
