//! meta.k8s.io/v1 Table responses (what `kubectl get` prints).

use kelson_apimachinery::tables;
use serde_json::{json, Value};

use crate::handler::partial_metadata;
use crate::resources::Resource;

fn column_json(name: &str, type_: &str, format: &str, description: &str, priority: i32) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

/// A Table of `items` (already in the served version). `include_object` is
/// the includeObject parameter (None, Metadata or Object).
pub fn table(
    res: &Resource,
    items: &[Value],
    list_meta: Option<Value>,
    include_object: &str,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let (columns, rows): (Vec<Value>, Vec<Vec<Value>>) = if res.custom {
        let cols = tables::custom_columns(&res.printer_columns);
        (
            cols.iter()
                .map(|c| column_json(&c.name, &c.type_, &c.format, &c.description, c.priority))
                .collect(),
            items
                .iter()
                .map(|o| tables::custom_cells(&cols, o, now))
                .collect(),
        )
    } else {
        let (group, resource) = (res.group.as_str(), res.plural.as_str());
        let cols = tables::columns(group, resource).unwrap_or_else(tables::default_columns);
        (
            cols.iter()
                .map(|c| column_json(c.name, c.type_, c.format, c.description, c.priority))
                .collect(),
            items
                .iter()
                .map(|o| tables::cells(group, resource, o, now))
                .collect(),
        )
    };
    let rows: Vec<Value> = items
        .iter()
        .zip(rows)
        .map(|(o, cells)| {
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => row["object"] = partial_metadata(o),
            }
            row
        })
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta.unwrap_or_else(|| json!({})),
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = Value::Array(columns);
    } else {
        t["columnDefinitions"] = Value::Null;
    }
    t
}
