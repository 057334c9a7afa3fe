//! The embedded store's integration tests, one module per concern. They
//! share one test binary rather than linking one per file; each test uses
//! its own temporary directory (the crash test its own child process), so
//! they can run in parallel threads.

mod compaction;
mod conformance;
mod crash;
mod decode;
mod snapshot;
