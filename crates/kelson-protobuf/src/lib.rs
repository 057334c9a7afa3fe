//! Kubernetes' protobuf wire formats, translated to and from the JSON the
//! API server keeps.
//!
//! - [`k8s`]: request bodies sent as `application/vnd.kubernetes.protobuf`
//!   (kubectl 1.31+ sends them for `kubectl create deployment|configmap|…`),
//!   decoded into the JSON object upstream's JSON encoding would produce.
//! - [`gnostic`]: the OpenAPI v2 document as gnostic's protobuf message, which
//!   kubectl 1.27–1.29 ask `/openapi/v2` for.
//! - [`wire`]: the protobuf wire format itself (varints, tags, length-delimited
//!   fields), shared by both.

pub mod gnostic;
pub mod k8s;
pub mod wire;
