//! API machinery shared by the API server and its clients inside Kelson.
//!
//! Everything here is a pure function over JSON (`serde_json::Value`): no I/O,
//! no clocks except where a caller passes `now`. The API server keeps objects
//! as JSON, so these modules never go through typed structs except to read
//! k8s-openapi's schemas and merge strategies.

pub mod defaults;
pub mod fields;
pub mod labels;
pub mod managed;
pub mod openapi;
pub mod quantity;
pub mod quota;
pub mod sparse;
pub mod strategic;
pub mod structural;
pub mod tables;
pub mod validation;
