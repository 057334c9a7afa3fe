//! Lists: from the watch cache when possible, from the store for pages and
//! exact revisions; selectors; continue tokens; rendering.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use kelson_apimachinery::{fields, labels};
use serde_json::{json, Value};

use crate::cache::CachedObject;
use crate::convert;
use crate::handler::{parse_rv, partial_metadata_of, Api, Query};
use crate::negotiate::{self, Output};
use crate::resources::Resource;
use crate::status::ApiError;

/// Store pages read while filling a filtered page.
const SCAN_PAGE: usize = 500;

/// Label and field selectors of a request.
pub struct Filter {
    label: Option<labels::Selector>,
    field: Option<fields::FieldSelector>,
}

impl Filter {
    pub fn from_query(res: &Resource, q: &Query) -> Result<Filter, ApiError> {
        let label = match q.get("labelSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(labels::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?),
            None => None,
        };
        let field = match q.get("fieldSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                let sel = fields::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let sel = if res.custom {
                    for r in sel.requirements() {
                        if r.field != "metadata.name" && r.field != "metadata.namespace" {
                            return Err(ApiError::bad_request(
                                fields::custom_resource_unsupported(&r.field).to_string(),
                            ));
                        }
                    }
                    sel
                } else {
                    sel.convert(&res.group, &res.version, &res.plural)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?
                };
                Some(sel)
            }
            None => None,
        };
        Ok(Filter { label, field })
    }

    pub fn is_empty(&self) -> bool {
        self.label.is_none() && self.field.is_none()
    }

    pub fn matches(&self, o: &CachedObject) -> bool {
        if let Some(l) = &self.label {
            if !l.matches(&o.labels) {
                return false;
            }
        }
        if let Some(f) = &self.field {
            if !f.matches(|name| o.field(name).map(String::from)) {
                return false;
            }
        }
        true
    }
}

/// "default/" for a namespaced list in "default", "" for all.
pub fn ns_prefix(res: &Resource, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if res.namespaced => format!("{ns}/"),
        _ => String::new(),
    }
}

pub struct Page {
    pub items: Vec<Arc<CachedObject>>,
    pub rev: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

fn encode_continue(rev: u64, start: &str) -> String {
    let v = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v
        .get("rv")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rev, start.to_string()))
}

pub async fn list(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    q: &Query,
) -> Result<Page, ApiError> {
    let filter = Filter::from_query(res, q)?;
    let limit = q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let rv = q.get("resourceVersion").filter(|s| !s.is_empty());
    let rvm = q.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let cont = q.get("continue").filter(|s| !s.is_empty());
    if rvm.is_some() && rv.is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if cont.is_some() && rv.is_some() && rv != Some("0") {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    if let Some(m) = rvm {
        if !matches!(m, "Exact" | "NotOlderThan") {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
        if m == "Exact" && rv == Some("0") {
            return Err(ApiError::bad_request(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    let sub = ns_prefix(res, ns);
    if let Some(token) = cont {
        let (rev, start) = decode_continue(token)?;
        let after = format!("{}{start}", res.key_prefix());
        return store_page(api, res, ns, &filter, Some(Bytes::from(after)), limit, Some(rev)).await.map_err(|e| {
            if e.code == 410 {
                ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue value from the 410 response.")
            } else {
                e
            }
        });
    }
    match (rv, rvm) {
        (Some(rv), Some("Exact")) => {
            let rev = parse_rv(rv)?;
            store_page(api, res, ns, &filter, None, limit, Some(rev)).await
        }
        (None, _) if limit.is_some() => store_page(api, res, ns, &filter, None, limit, None).await,
        (rv, _) => {
            let cache = match rv {
                None => api.registry.synced_cache(res).await?,
                Some("0") => api.registry.cache(res).await?,
                Some(rv) => api.registry.wait_cache(res, parse_rv(rv)?).await?,
            };
            let (items, rev) = cache.list(&sub);
            let items: Vec<_> = items.into_iter().filter(|o| filter.matches(o)).collect();
            Ok(Page {
                items,
                rev,
                continue_token: None,
                remaining: None,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn store_page(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    filter: &Filter,
    mut after: Option<Bytes>,
    limit: Option<usize>,
    revision: Option<u64>,
) -> Result<Page, ApiError> {
    let want = limit.unwrap_or(0);
    let mut items = Vec::new();
    let mut rev = revision;
    let prefix_len = res.key_prefix().len();
    loop {
        let chunk = if filter.is_empty() {
            want
        } else {
            SCAN_PAGE.max(want)
        };
        let (page, at, more, remaining) = api
            .registry
            .list_from_store(res, ns, after.clone(), chunk, rev)
            .await?;
        rev = Some(at);
        let n = page.len();
        let mut unexamined = false;
        for (i, o) in page.into_iter().enumerate() {
            after = Some(o.key.clone());
            if filter.matches(&o) {
                items.push(o);
                if want > 0 && items.len() == want {
                    unexamined = i + 1 < n;
                    break;
                }
            }
        }
        let full = want > 0 && items.len() == want;
        if full || !more {
            let left = full && (more || unexamined);
            let continue_token = (full && left).then(|| {
                let last = after
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(&k[prefix_len..]).into_owned())
                    .unwrap_or_default();
                encode_continue(at, &last)
            });
            let remaining = (continue_token.is_some() && filter.is_empty()).then_some(remaining);
            return Ok(Page {
                items,
                rev: at,
                continue_token,
                remaining,
            });
        }
    }
}

/// The list body in the representation asked for.
pub fn render(res: &Resource, page: Page, out: Output, q: &Query) -> Result<Vec<u8>, ApiError> {
    let mut meta = json!({"resourceVersion": page.rev.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let convert_needed = convert::needs_conversion(res);
    match out {
        Output::Json | Output::Aggregated(_) if !convert_needed => {
            // Items are stored JSON already: splice them in.
            let head =
                json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": meta});
            let mut body = serde_json::to_vec(&head).unwrap_or_default();
            body.pop(); // the closing brace
            body.extend_from_slice(b",\"items\":[");
            for (i, o) in page.items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&o.json);
            }
            body.extend_from_slice(b"]}");
            Ok(body)
        }
        Output::Metadata => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|o| partial_metadata_of(o.metadata()))
                .collect();
            let v = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items,
            });
            Ok(serde_json::to_vec(&v).unwrap_or_default())
        }
        _ => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|o| convert::from_storage(res, o.value()))
                .collect();
            let v = match out {
                Output::Table => crate::table::table(
                    res,
                    &items,
                    Some(meta),
                    q.get("includeObject").unwrap_or("Metadata"),
                    true,
                ),
                _ => {
                    json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": meta, "items": items})
                }
            };
            Ok(if out == Output::Yaml {
                negotiate::to_yaml(&v)
            } else {
                serde_json::to_vec(&v).unwrap_or_default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "default/web-1");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web-1".to_string())
        );
        assert_eq!(decode_continue("nonsense!").unwrap_err().code, 400);
        let evil =
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"rv":5,"start":"../../x"}"#);
        assert_eq!(decode_continue(&evil).unwrap_err().code, 400);
    }
}
