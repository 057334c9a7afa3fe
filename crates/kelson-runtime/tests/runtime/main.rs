//! The runtime against a real API server, in one test binary rather than
//! one per file; every test starts its own `TestCluster`.

mod events;
mod leader_election;
mod trim;
