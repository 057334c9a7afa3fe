//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! This follows the API server's field manager (k8s.io/apimachinery
//! `pkg/util/managedfields/internal`, Kubernetes 1.33) over
//! structured-merge-diff v4 semantics:
//!
//! * [`update`] records what a create, update or patch changed: the fields it
//!   added or modified now belong to the caller's `Update` entry, and every
//!   other manager loses what was changed or removed. Objects that exist but
//!   carry no managedFields stay untracked, like upstream.
//! * [`apply`] merges an applied configuration into the live object, removes
//!   what the manager applied before but no longer applies (unless someone
//!   else owns it), and fails with conflicts when it would change a field
//!   another manager owns, unless forced (then ownership moves).
//!
//! Entries are one per manager, operation (Apply/Update), subresource and,
//! for updates, API version; the FieldsV1 encoding, the `.` markers, key
//! ordering, entry ordering, the 10-updater cap (`ancient-changes`), the
//! `before-first-apply` entry, the stripped metadata fields and the
//! kubectl client-side-apply upgrade path (`last-applied-configuration`) all
//! match upstream. Objects are assumed to be at the request's API version;
//! version conversion of other managers' sets is not done.

use std::sync::Arc;

use serde_json::{Map, Value};

mod set;
mod shapes;
mod table;
#[cfg(test)]
mod tests;
mod types;
mod walk;

pub use set::{PathElement, Set};
pub use types::{
    BuiltinTypes, FieldType, Implicit, ListKind, NoTypes, SchemaTypes, Shape, TypeInfo, TypeRef,
};

use set::{path_string, write_go_json, write_json_string};
use walk::{compare, drop_nulls, ensure_named_fields_are_members, merge, remove_items};

/// The annotation kubectl's client-side apply keeps.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
const BEFORE_FIRST_APPLY: &str = "before-first-apply";
const ANCIENT_CHANGES: &str = "ancient-changes";
const MAX_UPDATE_MANAGERS: usize = 10;

/// Who is writing, and how the endpoint treats the object.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// Type information of the object's kind.
    pub types: &'a dyn TypeInfo,
    /// `fieldManager` (upstream falls back to the user agent's prefix; an
    /// empty name is recorded as "unknown").
    pub manager: &'a str,
    /// The request's group/version, e.g. "apps/v1" or "v1".
    pub api_version: &'a str,
    /// "status", "scale", ... for subresource requests.
    pub subresource: Option<&'a str>,
    /// Dot-separated field paths the endpoint's strategy resets and therefore
    /// never records (upstream `GetResetFields`), e.g. `["status"]` for the
    /// main resource of a type with a status subresource, `["spec",
    /// "metadata.labels", ...]` for its status endpoint.
    pub reset_fields: &'a [&'a str],
    /// The request time, RFC 3339 in UTC (e.g. "2025-01-02T03:04:05Z").
    pub now: &'a str,
}

/// Result of [`apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyOutcome {
    /// The merged object, without `metadata.managedFields` (defaulting and
    /// validation are the caller's).
    pub object: Value,
    /// The new `metadata.managedFields`.
    pub managed_fields: Vec<Value>,
    /// False when applying changed nothing (upstream then keeps the stored
    /// object untouched, apart from managedFields).
    pub changed: bool,
}

/// A field another manager owns that the apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    /// "Apply" or "Update".
    pub operation: String,
    pub api_version: String,
    pub subresource: String,
    /// The field as upstream prints it, e.g. `.spec.replicas` or
    /// `.spec.containers[name="nginx"].image`.
    pub path: String,
}

impl Conflict {
    /// `"mgr"`, `"mgr" with subresource "status"`, `... using apps/v1` for
    /// Update entries (upstream `printManager`).
    pub fn manager_display(&self) -> String {
        let mut s = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(
                " with subresource {}",
                go_quote(&self.subresource)
            ));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The status cause's message (type `FieldManagerConflict`, field =
    /// [`Conflict::path`]).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_display())
    }
}

/// Why an apply or ownership update failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedError {
    /// 409 Conflict; the message is upstream's.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// 400 Bad Request: the applied configuration is not acceptable (wrong
    /// version, managedFields set, ...).
    #[error("{0}")]
    BadRequest(String),
    /// 500: the configuration or the stored managedFields cannot be processed
    /// (duplicate keys in an associative list, missing key fields, undecodable
    /// managedFields).
    #[error("{0}")]
    Invalid(String),
}

impl ManagedError {
    /// The HTTP status upstream answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ManagedError::Conflicts(_) => 409,
            ManagedError::BadRequest(_) => 400,
            ManagedError::Invalid(_) => 500,
        }
    }
}

fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager_display(),
            c.path
        );
    }
    let mut groups: Vec<(String, String, Vec<&str>)> = Vec::new();
    for c in conflicts {
        let id = identifier(&c.manager, &c.operation, &c.api_version, &c.subresource);
        match groups.iter_mut().find(|g| g.0 == id) {
            Some(g) => g.2.push(&c.path),
            None => groups.push((id, c.manager_display(), vec![&c.path])),
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let mut lines = Vec::new();
    for (_, display, paths) in groups {
        lines.push(format!("conflicts with {display}:"));
        lines.extend(paths.into_iter().map(|p| format!("- {p}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

fn go_quote(s: &str) -> String {
    // Go's %q; the manager names here are plain text.
    let mut out = String::new();
    write_json_string(s, &mut out);
    out.replace("\\u003c", "<")
        .replace("\\u003e", ">")
        .replace("\\u0026", "&")
}

/// One managedFields entry being worked on.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    applied: bool,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: Set,
    /// `fieldsV1` as decoded, kept while `set` is unchanged so that the
    /// entries a write does not touch are not re-serialized (every site
    /// that changes `set` clears it).
    fields_v1: Option<Value>,
}

impl Entry {
    fn operation(&self) -> &'static str {
        if self.applied {
            "Apply"
        } else {
            "Update"
        }
    }

    /// Upstream's manager identifier (the JSON of the entry without fields
    /// and time; apply entries without API version).
    fn id(&self) -> String {
        let version = if self.applied { "" } else { &self.api_version };
        identifier(&self.manager, self.operation(), version, &self.subresource)
    }

    fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.applied == other.applied
            && self.subresource == other.subresource
            && (self.applied || self.api_version == other.api_version)
    }

    fn encode_fields(&self) -> Value {
        serde_json::from_str(&self.set.to_fields_v1()).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    fn encode(&self) -> Value {
        let fields = match &self.fields_v1 {
            Some(f) => f.clone(),
            None => self.encode_fields(),
        };
        self.encode_with(fields)
    }

    /// The entry with `fields` as its `fieldsV1`.
    fn encode_with(&self, fields: Value) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation().into()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), fields);
        if !self.subresource.is_empty() {
            m.insert(
                "subresource".into(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(m)
    }
}

fn identifier(manager: &str, operation: &str, api_version: &str, subresource: &str) -> String {
    let mut s = String::from("{\"manager\":");
    write_json_string(manager, &mut s);
    s.push_str(",\"operation\":");
    write_json_string(operation, &mut s);
    if !api_version.is_empty() {
        s.push_str(",\"apiVersion\":");
        write_json_string(api_version, &mut s);
    }
    if !subresource.is_empty() {
        s.push_str(",\"subresource\":");
        write_json_string(subresource, &mut s);
    }
    s.push('}');
    s
}

/// The entries of `metadata.managedFields`, checked like upstream's decoder.
fn decode_managed_fields(obj: Option<&Value>) -> Result<Vec<Entry>, String> {
    let Some(list) = obj.and_then(|o| o.pointer("/metadata/managedFields")) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = list else {
        return Err("managedFields must be a list".into());
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
        let applied = match s("operation") {
            "Apply" => true,
            "Update" => false,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        if s("apiVersion").is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match s("fieldsType") {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
            other => {
                return Err(format!(
                    "invalid fieldsType {other:?} in managed fields entry {i}"
                ))
            }
        }
        let set = match item.get("fieldsV1") {
            None | Some(Value::Null) => Set::new(),
            Some(v) => Set::from_fields_v1(v).map_err(|e| format!("error decoding set: {e}"))?,
        };
        let entry = Entry {
            manager: s("manager").to_owned(),
            applied,
            api_version: s("apiVersion").to_owned(),
            subresource: s("subresource").to_owned(),
            time: item.get("time").and_then(Value::as_str).map(str::to_owned),
            set,
            fields_v1: item.get("fieldsV1").filter(|v| !v.is_null()).cloned(),
        };
        // A repeated identifier replaces the earlier entry (a map upstream).
        entries.retain(|e| !e.same_manager(&entry));
        entries.push(entry);
    }
    Ok(entries)
}

fn seconds(time: Option<&str>) -> i64 {
    time.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_second())
}

/// Upstream's order: Apply before Update, then by time (seconds), manager,
/// API version, subresource.
fn encode_entries(entries: &[Entry]) -> Vec<Value> {
    let mut sorted: Vec<&Entry> = entries.iter().filter(|e| !e.set.is_empty()).collect();
    sorted.sort_by(|p, q| {
        p.operation()
            .cmp(q.operation())
            .then_with(|| seconds(p.time.as_deref()).cmp(&seconds(q.time.as_deref())))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    sorted.into_iter().map(Entry::encode).collect()
}

/// Fields never recorded for the writing manager (upstream's strip set).
fn strip_set() -> Set {
    let mut s = Set::new();
    for p in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        let path: Vec<PathElement> = p.iter().map(|f| PathElement::Field((*f).into())).collect();
        s.insert(&path);
    }
    s
}

fn reset_set(reset: &[&str]) -> Set {
    let mut s = Set::new();
    for r in reset {
        let path: Vec<PathElement> = r
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|f| PathElement::Field(f.into()))
            .collect();
        s.insert(&path);
    }
    s
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    obj
}

fn manager_name(name: &str) -> String {
    if name.is_empty() {
        "unknown".into()
    } else {
        name.into()
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// The state of one request through the manager chain.
struct Ctx<'a> {
    req: &'a Request<'a>,
    reset: Set,
    strip: Set,
}

impl Ctx<'_> {
    fn new<'a>(req: &'a Request<'a>) -> Ctx<'a> {
        Ctx {
            req,
            reset: reset_set(req.reset_fields),
            strip: strip_set(),
        }
    }

    fn types(&self) -> &dyn TypeInfo {
        self.req.types
    }

    /// structured-merge-diff `Updater.update`: drops what changed from other
    /// managers' sets; returns conflicts when not forced.
    fn update_others(
        &self,
        live: &Value,
        new: &Value,
        entries: &mut Vec<Entry>,
        skip: Option<&Entry>,
        force: bool,
    ) -> Result<walk::Comparison, Vec<Conflict>> {
        let types = self.types();
        let mut cmp = walk::compare_objects(types, types.root(), live, new);
        cmp.removed = std::mem::take(&mut cmp.removed).without_recursive(&self.reset);
        cmp.modified = std::mem::take(&mut cmp.modified).without_recursive(&self.reset);
        cmp.added = std::mem::take(&mut cmp.added).without_recursive(&self.reset);
        let changed = cmp.modified.union(&cmp.added);
        let mut conflicts = Vec::new();
        for e in entries.iter_mut() {
            if skip.is_some_and(|s| e.same_manager(s)) {
                continue;
            }
            let conflict = e.set.intersection(&changed);
            if !conflict.is_empty() {
                if force {
                    e.set = std::mem::take(&mut e.set).without(&conflict);
                    e.fields_v1 = None;
                } else {
                    for p in conflict.paths() {
                        conflicts.push(Conflict {
                            manager: e.manager.clone(),
                            operation: e.operation().into(),
                            api_version: e.api_version.clone(),
                            subresource: e.subresource.clone(),
                            path: path_string(&p),
                        });
                    }
                }
            }
            if !cmp.removed.is_empty() {
                e.set = std::mem::take(&mut e.set).without(&cmp.removed);
                e.fields_v1 = None;
            }
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
        entries.retain(|e| !e.set.is_empty());
        Ok(cmp)
    }

    /// The Update chain below `skipNonApplied`: records `manager`'s change
    /// from `live` to `new` (their managedFields are not compared).
    fn record_update(&self, live: &Value, new: &Value, entries: &mut Vec<Entry>, manager: &str) {
        let me = Entry {
            manager: manager_name(manager),
            applied: false,
            api_version: self.req.api_version.into(),
            subresource: self.req.subresource.unwrap_or("").into(),
            time: Some(self.req.now.into()),
            set: Set::new(),
            fields_v1: None,
        };
        // Forced: an update never conflicts. The writer's own previous entry
        // loses what was removed, like everyone else's.
        let Ok(cmp) = self.update_others(live, new, entries, None, true) else {
            return;
        };
        // Already filtered by the reset fields in update_others.
        let set = if cmp.modified.is_empty() {
            cmp.added
        } else {
            cmp.modified.union(&cmp.added)
        }
        .without(&self.strip);
        if set.is_empty() {
            return;
        }
        match entries.iter_mut().find(|e| e.same_manager(&me)) {
            Some(prev) => {
                prev.set = set.union(&prev.set);
                prev.fields_v1 = None;
                prev.time = me.time.clone();
            }
            None => entries.push(Entry { set, ..me }),
        }
        self.cap_updaters(entries);
    }

    /// Folds the oldest Update entries beyond ten into `ancient-changes`.
    fn cap_updaters(&self, entries: &mut Vec<Entry>) {
        let mut updaters: Vec<usize> = (0..entries.len())
            .filter(|&i| !entries[i].applied)
            .collect();
        if updaters.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        updaters.sort_by(|&a, &b| {
            let (p, q) = (&entries[a], &entries[b]);
            seconds(p.time.as_deref())
                .cmp(&seconds(q.time.as_deref()))
                .then_with(|| p.id().cmp(&q.id()))
        });
        let mut length = updaters.len();
        let mut first_by_version: Vec<(String, usize)> = Vec::new();
        let mut remove = Vec::new();
        for &i in &updaters {
            if length <= MAX_UPDATE_MANAGERS {
                break;
            }
            let version = entries[i].api_version.clone();
            match first_by_version.iter().find(|(v, _)| *v == version) {
                Some(&(_, first)) => {
                    let set = entries[i].set.clone();
                    let time = entries[i].time.clone();
                    let bucket = &mut entries[first];
                    bucket.manager = ANCIENT_CHANGES.into();
                    bucket.subresource.clear();
                    bucket.set = set.union(&bucket.set);
                    bucket.fields_v1 = None;
                    bucket.time = time;
                    remove.push(i);
                    length -= 1;
                }
                None => first_by_version.push((version, i)),
            }
        }
        remove.sort_unstable();
        for i in remove.into_iter().rev() {
            entries.remove(i);
        }
    }
}

/// Records ownership after a create (`old` = None), update or patch of `new`
/// (operation "Update"); returns the new `metadata.managedFields` (empty: the
/// object is not tracked, drop the field).
///
/// Like upstream, a valid non-empty `metadata.managedFields` in `new` (main
/// resource only) replaces the stored one, and an empty list (or a single
/// empty entry) resets tracking.
pub fn update(old: Option<&Value>, new: &Value, req: &Request<'_>) -> Vec<Value> {
    let client_entries = new.pointer("/metadata/managedFields").is_some();
    if let (None, false, Some(type_id)) = (old, client_entries, req.types.stable_id()) {
        return record_create(type_id, new, req);
    }
    let ctx = Ctx::new(req);
    let old_entries = || decode_managed_fields(old).unwrap_or_default();
    let mut entries = if req.subresource.is_some() {
        old_entries()
    } else {
        match new.pointer("/metadata/managedFields") {
            Some(Value::Array(items))
                if items.is_empty()
                    || (items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty)) =>
            {
                Vec::new()
            }
            // Sent back as they were read (a patch, or an update of a
            // fetched object): the stored entries, with their encodings.
            Some(sent) if old.and_then(|o| o.pointer("/metadata/managedFields")) == Some(sent) => {
                old_entries()
            }
            Some(_) => match decode_managed_fields(Some(new)) {
                // A client's sets are re-encoded, so what is stored is
                // always in our canonical form.
                Ok(e) if !e.is_empty() => e
                    .into_iter()
                    .map(|e| Entry {
                        fields_v1: None,
                        ..e
                    })
                    .collect(),
                _ => old_entries(),
            },
            None => old_entries(),
        }
    };
    // An existing object without managedFields stays untracked.
    let has_uid = old
        .and_then(|o| o.pointer("/metadata/uid"))
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    if entries.is_empty() && has_uid {
        return Vec::new();
    }
    // The comparison skips managedFields on both sides.
    let empty = empty_object();
    ctx.record_update(old.unwrap_or(&empty), new, &mut entries, req.manager);
    encode_entries(&entries)
}

/// [`update`] for a create without client-given managedFields: one entry
/// for the writer holding every field, its set remembered by the object's
/// shape ([`shapes`]).
fn record_create(type_id: &str, new: &Value, req: &Request<'_>) -> Vec<Value> {
    let fields = shapes::created(type_id, req.reset_fields, new, || {
        let mut entries = Vec::new();
        Ctx::new(req).record_update(&empty_object(), new, &mut entries, req.manager);
        entries.pop().map(|e| Arc::new(e.encode_fields()))
    });
    let Some(fields) = fields else {
        return Vec::new();
    };
    let me = Entry {
        manager: manager_name(req.manager),
        applied: false,
        api_version: req.api_version.into(),
        subresource: req.subresource.unwrap_or("").into(),
        time: Some(req.now.into()),
        set: Set::new(),
        fields_v1: None,
    };
    vec![me.encode_with(Value::clone(&fields))]
}

/// Server-side apply of `config` by `req.manager` onto `live` (None: the
/// object does not exist yet).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    req: &Request<'_>,
    force: bool,
) -> Result<ApplyOutcome, ManagedError> {
    let ctx = Ctx::new(req);
    let config_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if config_version != req.api_version {
        let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
        let gv = if config_version.contains('/') {
            config_version.to_owned()
        } else {
            format!("/{config_version}")
        };
        return Err(ManagedError::BadRequest(format!(
            "invalid object type: {gv}, Kind={kind}"
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ManagedError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let mut entries = decode_managed_fields(live)
        .map_err(|e| ManagedError::Invalid(format!("failed to decode managed fields: {e}")))?;
    let live_obj = live.map_or_else(empty_object, without_managed_fields);
    if entries.is_empty() {
        // Whatever the object holds so far belongs to "before-first-apply".
        ctx.record_update(&empty_object(), &live_obj, &mut entries, BEFORE_FIRST_APPLY);
    }
    let manager = manager_name(req.manager);
    let result = ctx.apply_once(&live_obj, config, &entries, &manager, force);
    let (object, entries) = match result {
        Err(ManagedError::Conflicts(conflicts)) if manager == "kubectl" => {
            // Upgrading from client-side apply: conflicts on fields the
            // last-applied annotation already sets to the live value are
            // forced through.
            let allowed = ctx.allowed_from_last_applied(&live_obj);
            let remaining: Vec<Conflict> = conflicts
                .iter()
                .filter(|c| !allowed.contains(&c.path))
                .cloned()
                .collect();
            if !remaining.is_empty() || allowed.is_empty() {
                return Err(ManagedError::Conflicts(if allowed.is_empty() {
                    conflicts
                } else {
                    remaining
                }));
            }
            ctx.apply_once(&live_obj, config, &entries, &manager, true)?
        }
        other => other?,
    };
    let mut object = object;
    let changed = !set::values_equal(&object, &live_obj);
    let mut entries = entries;
    if changed {
        if let Some(e) = entries.iter_mut().find(|e| {
            e.applied && e.manager == manager && e.subresource == req.subresource.unwrap_or("")
        }) {
            e.time = Some(req.now.into());
        }
    } else {
        object = live_obj.clone();
    }
    if manager == "kubectl" && has_last_applied(&object) {
        set_last_applied(&mut object, config);
    }
    Ok(ApplyOutcome {
        object,
        managed_fields: encode_entries(&entries),
        changed,
    })
}

impl Ctx<'_> {
    /// structured-merge-diff `Updater.Apply` plus the strip of metadata.
    fn apply_once(
        &self,
        live: &Value,
        config: &Value,
        entries: &[Entry],
        manager: &str,
        force: bool,
    ) -> Result<(Value, Vec<Entry>), ManagedError> {
        let types = self.types();
        let root = types.root();
        let mut entries = entries.to_vec();
        let merged = merge(types, root, Some(live), Some(config)).map_err(|e| {
            ManagedError::Invalid(format!("failed to create typed patch object: {e}"))
        })?;
        let mut merged = merged.unwrap_or_else(empty_object);
        if !types.keeps_nulls() {
            drop_nulls(&mut merged);
        }
        let set = walk::to_field_set(types, root, config, true)
            .map_err(|e| {
                ManagedError::Invalid(format!("failed to create typed patch object: {e}"))
            })?
            .recursive_difference(&self.reset);
        let me = Entry {
            manager: manager.into(),
            applied: true,
            api_version: self.req.api_version.into(),
            subresource: self.req.subresource.unwrap_or("").into(),
            time: None,
            set,
            fields_v1: None,
        };
        let last = entries
            .iter()
            .position(|e| e.same_manager(&me))
            .map(|i| entries.remove(i));
        let time = last.as_ref().and_then(|e| e.time.clone());
        entries.push(Entry { time, ..me.clone() });
        let new = match &last {
            Some(last) if !last.set.is_empty() => self.prune(&merged, &entries, &last.set),
            _ => merged,
        };
        self.update_others(live, &new, &mut entries, Some(&me), force)
            .map_err(ManagedError::Conflicts)?;
        // The applier's own set, minus the metadata upstream never records.
        if let Some(e) = entries.iter_mut().find(|e| e.same_manager(&me)) {
            e.set = e.set.difference(&self.strip);
            e.fields_v1 = None;
        }
        entries.retain(|e| !e.set.is_empty());
        Ok((new, entries))
    }

    /// Removes what `last` (the manager's previous apply) owned and nobody
    /// owns any more (upstream `Updater.prune`).
    fn prune(&self, merged: &Value, entries: &[Entry], last: &Set) -> Value {
        let types = self.types();
        let root = types.root();
        let enfam = |s: &Set| ensure_named_fields_are_members(types, Some(root), s);
        let remove =
            |v: &Value, s: &Set| remove_items(types, root, v, s).unwrap_or_else(empty_object);
        let field_set = |v: &Value| walk::to_field_set(types, root, v, false).unwrap_or_default();

        let last = enfam(last);
        let pruned = remove(merged, &last);
        // Add back what someone still owns.
        let managed = entries.iter().fold(Set::new(), |acc, e| acc.union(&e.set));
        let merged_set = enfam(&field_set(merged));
        let pruned_set = enfam(&field_set(&pruned));
        let pruned = remove(
            merged,
            &merged_set.difference(&pruned_set.union(&enfam(&managed))),
        );
        // Add back what was dropped but not applied last time.
        let pruned_set = enfam(&field_set(&pruned));
        remove(
            merged,
            &merged_set.difference(&pruned_set).intersection(&last),
        )
    }

    /// Fields whose live value still equals kubectl's last-applied
    /// annotation, as printed paths.
    fn allowed_from_last_applied(&self, live: &Value) -> Vec<String> {
        let types = self.types();
        let Some(text) = live
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return Vec::new();
        };
        let Ok(last) = serde_json::from_str::<Value>(text) else {
            return Vec::new();
        };
        if last.get("apiVersion").and_then(Value::as_str) != Some(self.req.api_version) {
            return Vec::new();
        }
        let Ok(set) = walk::to_field_set(types, types.root(), &last, true) else {
            return Vec::new();
        };
        let cmp = compare(types, types.root(), &last, live);
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed)
            .paths()
            .iter()
            .map(|p| path_string(p))
            .collect()
    }
}

fn has_last_applied(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// Writes the applied configuration (without the annotation itself) into the
/// last-applied annotation, encoded as Go's JSON encoder does.
fn set_last_applied(obj: &mut Value, config: &Value) {
    let mut config = config.clone();
    if let Some(ann) = config
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        ann.remove(LAST_APPLIED_ANNOTATION);
    }
    let mut text = String::new();
    write_go_json(&config, &mut text);
    text.push('\n');
    if let Some(ann) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        ann.insert(LAST_APPLIED_ANNOTATION.into(), Value::String(text));
    }
}

/// The FieldsV1 text of a managedFields entry exactly as upstream writes it
/// (serde_json re-sorts object keys, which can reorder `k:` entries with
/// numeric keys; use this where the bytes matter).
pub fn fields_v1_text(entry: &Value) -> Option<String> {
    let set = Set::from_fields_v1(entry.get("fieldsV1")?).ok()?;
    Some(set.to_fields_v1())
}

/// The field set an object would give its writer (no stripping), mainly for
/// diagnostics and tests.
pub fn field_set(obj: &Value, types: &dyn TypeInfo) -> Result<Set, ManagedError> {
    walk::to_field_set(types, types.root(), obj, true).map_err(ManagedError::Invalid)
}
