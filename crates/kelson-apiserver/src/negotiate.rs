//! Content negotiation: which representation a client asked for, and how a
//! request body is decoded.

use serde_json::Value;

use crate::status::ApiError;

/// Largest request body accepted (upstream's 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// meta.k8s.io/v1 Table (v1beta1 is answered the same way, as v1).
    Table,
    /// Metadata only (PartialObjectMetadata / PartialObjectMetadataList).
    Metadata,
    /// apidiscovery.k8s.io aggregated discovery, v2 or v2beta1.
    Aggregated(&'static str),
}

struct MediaType<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

fn parse_media(s: &str) -> MediaType<'_> {
    let mut parts = s.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("");
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect();
    MediaType { essence, params }
}

/// Picks the first representation in `Accept` that the server can produce.
pub fn output(accept: Option<&str>) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for item in accept.split(',') {
        let m = parse_media(item);
        let param = |k: &str| m.params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        let json_like = matches!(
            m.essence,
            "application/json" | "*/*" | "application/*" | "*"
        );
        match param("as") {
            Some("Table") if json_like && param("g") == Some("meta.k8s.io") => {
                return Ok(Output::Table)
            }
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList")
                if json_like && param("g") == Some("meta.k8s.io") =>
            {
                return Ok(Output::Metadata)
            }
            Some("APIGroupDiscoveryList")
                if json_like && param("g") == Some("apidiscovery.k8s.io") =>
            {
                match param("v") {
                    Some("v2") => return Ok(Output::Aggregated("v2")),
                    Some("v2beta1") => return Ok(Output::Aggregated("v2beta1")),
                    _ => continue,
                }
            }
            Some(_) => continue,
            None => {}
        }
        if json_like {
            return Ok(Output::Json);
        }
        if matches!(
            m.essence,
            "application/yaml" | "application/x-yaml" | "text/yaml"
        ) {
            return Ok(Output::Yaml);
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml",
    ))
}

/// Patch flavours, from the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
    let essence = content_type.map(|c| parse_media(c).essence).unwrap_or("");
    match essence {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
        ))),
    }
}

/// Decodes a JSON, YAML or Kubernetes protobuf body. serde_json refuses
/// nesting deeper than 128 levels, the YAML parser has a budget on aliases,
/// nodes and depth and the protobuf decoder bounds its depth, so no bomb gets
/// far.
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let essence = content_type
        .map(|c| parse_media(c).essence)
        .unwrap_or("application/json");
    if essence == kelson_protobuf::k8s::CONTENT_TYPE {
        // Typed clients (kubectl 1.31+ `create deployment` and friends) send
        // protobuf; the object is kept as the JSON upstream would have seen.
        return kelson_protobuf::k8s::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized or invalid protobuf: {e}"
            ))
        });
    }
    let yaml = matches!(
        essence,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "application/apply-patch+yaml"
    );
    if !yaml
        && !matches!(
            essence,
            "application/json"
                | "application/json-patch+json"
                | "application/merge-patch+json"
                | "application/strategic-merge-patch+json"
                | ""
                | "*/*"
        )
    {
        return Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {essence:?})"
        )));
    }
    if yaml {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
        // JSON is YAML; parse it as JSON first for exact numbers.
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            return Ok(v);
        }
        return serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or invalid JSON: {e}"
        ))
    })
}

/// Serializes a value as YAML (for clients that ask for it).
pub fn to_yaml(v: &Value) -> Vec<u8> {
    serde_saphyr::to_string(v).unwrap_or_default().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_headers() {
        let get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(output(Some(get)).unwrap(), Output::Table);
        let disc = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(output(Some(disc)).unwrap(), Output::Aggregated("v2"));
        assert_eq!(
            output(Some("application/vnd.kubernetes.protobuf, */*")).unwrap(),
            Output::Json
        );
        assert!(output(Some("application/vnd.kubernetes.protobuf")).is_err());
        assert_eq!(output(None).unwrap(), Output::Json);
    }

    #[test]
    fn deep_json_is_refused() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(decode_body(None, deep.as_bytes()).unwrap_err().code, 400);
    }

    #[test]
    fn yaml_alias_bomb_is_refused() {
        let mut y = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            y.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = c;
        }
        let r = decode_body(Some("application/yaml"), y.as_bytes());
        assert!(r.is_err(), "a billion-laughs document must be refused");
    }
}
