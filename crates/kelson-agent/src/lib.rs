//! Kelson's node agent.

pub mod agent;
pub mod images;
pub mod join;
pub mod network;
