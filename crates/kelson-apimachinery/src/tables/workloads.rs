//! Printers for apps, batch, autoscaling and policy kinds.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::util::{
    age_cell, as_int, container_cells, elapsed_ns, format_label_selector, format_labels, get,
    human_duration, int, int_or_string, list, map, name, opt_int, quantity, s, selector_string,
    since, text, time_at,
};
use super::{Column, AGE, CONTAINERS_DESC, IMAGES_DESC, NAME};

const CONTAINERS: Column = Column::wide("Containers", "string", CONTAINERS_DESC);
const IMAGES: Column = Column::wide("Images", "string", IMAGES_DESC);
const SELECTOR: Column = Column::wide(
    "Selector",
    "string",
    "Label selector for the pods it manages.",
);

/// spec.replicas, defaulted to 1 as upstream does on write.
fn desired_replicas(obj: &Value) -> i64 {
    opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn template_containers(obj: &Value) -> (Value, Value) {
    container_cells(list(obj, &["spec", "template", "spec", "containers"]))
}

// ---------------------------------------------------------------- deployments

pub(crate) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Ready", "string", "Ready replicas out of desired replicas."),
    Column::new(
        "Up-to-date",
        "string",
        "Replicas updated to the latest pod template.",
    ),
    Column::new(
        "Available",
        "string",
        "Replicas available to serve (ready for minReadySeconds).",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(crate) fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = template_containers(d);
    // Unlike other printers, an empty selector prints as "" here.
    let selector =
        selector_string(get(d, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".into());
    vec![
        name(d),
        s(format!(
            "{}/{}",
            int(d, &["status", "readyReplicas"]),
            desired_replicas(d)
        )),
        Value::from(int(d, &["status", "updatedReplicas"])),
        Value::from(int(d, &["status", "availableReplicas"])),
        age_cell(d, now),
        names,
        images,
        s(selector),
    ]
}

// ---------------------------------------------------------------- replicasets

pub(crate) const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Desired", "integer", "How many replicas are wanted."),
    Column::new("Current", "integer", "How many replicas exist."),
    Column::new("Ready", "integer", "How many replicas are ready."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(crate) fn replicaset_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = template_containers(rs);
    vec![
        name(rs),
        Value::from(desired_replicas(rs)),
        Value::from(int(rs, &["status", "replicas"])),
        Value::from(int(rs, &["status", "readyReplicas"])),
        age_cell(rs, now),
        names,
        images,
        s(format_label_selector(get(rs, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------- statefulsets

pub(crate) const STATEFULSET_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Ready", "string", "Ready replicas out of desired replicas."),
    AGE,
    CONTAINERS,
    IMAGES,
];

pub(crate) fn statefulset_cells(ss: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = template_containers(ss);
    vec![
        name(ss),
        s(format!(
            "{}/{}",
            int(ss, &["status", "readyReplicas"]),
            desired_replicas(ss)
        )),
        age_cell(ss, now),
        names,
        images,
    ]
}

// ---------------------------------------------------------------- daemonsets

pub(crate) const DAEMONSET_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Desired",
        "integer",
        "Nodes that should run the daemon pod.",
    ),
    Column::new(
        "Current",
        "integer",
        "Nodes running at least one daemon pod.",
    ),
    Column::new("Ready", "integer", "Nodes whose daemon pod is ready."),
    Column::new(
        "Up-to-date",
        "integer",
        "Nodes running the latest daemon pod template.",
    ),
    Column::new(
        "Available",
        "integer",
        "Nodes whose daemon pod is available.",
    ),
    Column::new(
        "Node Selector",
        "string",
        "Node labels the daemon pods are restricted to.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(crate) fn daemonset_cells(ds: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = template_containers(ds);
    let st = |k: &str| Value::from(int(ds, &["status", k]));
    vec![
        name(ds),
        st("desiredNumberScheduled"),
        st("currentNumberScheduled"),
        st("numberReady"),
        st("updatedNumberScheduled"),
        st("numberAvailable"),
        s(format_labels(map(
            ds,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age_cell(ds, now),
        names,
        images,
        s(format_label_selector(get(ds, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------- controllerrevisions

pub(crate) const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Controller",
        "string",
        "The object that owns the revision, as kind.group/name.",
    ),
    Column::new("Revision", "string", "The revision number."),
    AGE,
];

pub(crate) fn controller_revision_cells(cr: &Value, now: Timestamp) -> Vec<Value> {
    let owner = list(cr, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    let controller = match owner {
        None => "<none>".to_owned(),
        Some(r) => {
            // apiVersion "group/version" or just "version" for core.
            let api_version = text(r, &["apiVersion"]);
            let group = api_version.split_once('/').map_or("", |(g, _)| g);
            let kind = text(r, &["kind"]);
            let group_kind = if group.is_empty() {
                kind.to_owned()
            } else {
                format!("{kind}.{group}")
            };
            let owner_name = text(r, &["name"]);
            if group_kind.is_empty() {
                owner_name.to_owned()
            } else {
                format!("{}/{owner_name}", group_kind.to_lowercase())
            }
        }
    };
    vec![
        name(cr),
        s(controller),
        Value::from(int(cr, &["revision"])),
        age_cell(cr, now),
    ]
}

// ---------------------------------------------------------------- jobs

pub(crate) const JOB_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Status",
        "string",
        "The job's status (Running, Complete, Failed, Suspended, ...).",
    ),
    Column::new(
        "Completions",
        "string",
        "Succeeded pods out of the completions wanted.",
    ),
    Column::new(
        "Duration",
        "string",
        "How long the job ran, or has been running.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn has_condition(obj: &Value, type_: &str) -> bool {
    // Upstream looks at the first condition of the type only.
    list(obj, &["status", "conditions"])
        .iter()
        .find(|c| text(c, &["type"]) == type_)
        .is_some_and(|c| text(c, &["status"]) == "True")
}

pub(crate) fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int(job, &["status", "succeeded"]);
    let completions = match opt_int(job, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match opt_int(job, &["spec", "parallelism"]).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(job, &["status", "startTime"]),
        time_at(job, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(elapsed_ns(start, now)),
        (Some(start), Some(end)) => human_duration(elapsed_ns(start, end)),
    };
    let status = if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if get(job, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null()) {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = template_containers(job);
    vec![
        name(job),
        s(status),
        s(completions),
        s(duration),
        age_cell(job, now),
        names,
        images,
        s(format_label_selector(get(job, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------- cronjobs

pub(crate) const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Schedule", "string", "The cron schedule."),
    Column::new(
        "Timezone",
        "string",
        "The time zone the schedule is read in.",
    ),
    Column::new("Suspend", "boolean", "Whether new runs are suspended."),
    Column::new("Active", "integer", "How many jobs are running."),
    Column::new(
        "Last Schedule",
        "string",
        "Time since a job was last scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(crate) fn cronjob_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last = match time_at(cj, &["status", "lastScheduleTime"]) {
        Some(_) => since(cj, &["status", "lastScheduleTime"], now),
        None => "<none>".to_owned(),
    };
    let tz = get(cj, &["spec", "timeZone"])
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    // Upstream renders the *bool as text even though the column says boolean.
    let suspend = match get(cj, &["spec", "suspend"]).and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = get(cj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let (names, images) = container_cells(list(job_spec, &["template", "spec", "containers"]));
    vec![
        name(cj),
        s(text(cj, &["spec", "schedule"])),
        s(tz),
        s(suspend),
        Value::from(list(cj, &["status", "active"]).len()),
        s(last),
        age_cell(cj, now),
        names,
        images,
        s(format_label_selector(get(job_spec, &["selector"]))),
    ]
}

// ---------------------------------------------------------------- horizontalpodautoscalers

pub(crate) const HPA_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Reference", "string", "The scaled object, as Kind/name."),
    Column::new(
        "Targets",
        "string",
        "Current and target values of the scaling metrics.",
    ),
    Column::new("MinPods", "string", "The lower replica limit."),
    Column::new("MaxPods", "string", "The upper replica limit."),
    Column::new("Replicas", "string", "The current number of replicas."),
    AGE,
];

/// Quantity text of an optional (pointer) value: Go prints a nil
/// `*resource.Quantity` as "<nil>".
fn qty(v: &Value, path: &[&str]) -> String {
    quantity(get(v, path).filter(|x| !x.is_null()), "<nil>")
}

fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let status = |i: usize, key: &str| {
        statuses
            .get(i)
            .and_then(|st| st.get(key))
            .filter(|x| x.is_object())
    };
    let mut out: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let entry = match text(spec, &["type"]) {
            kind @ ("External" | "Object") => {
                let key = if kind == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = get(spec, &[key, "target"]).unwrap_or(&Value::Null);
                if get(target, &["averageValue"]).is_some_and(|v| !v.is_null()) {
                    let current = status(i, key)
                        .filter(|st| {
                            get(st, &["current", "averageValue"]).is_some_and(|v| !v.is_null())
                        })
                        .map_or_else(
                            || "<unknown>".to_owned(),
                            |st| qty(st, &["current", "averageValue"]),
                        );
                    format!("{current}/{} (avg)", qty(target, &["averageValue"]))
                } else {
                    let current = status(i, key).map_or_else(
                        || "<unknown>".to_owned(),
                        |st| qty(st, &["current", "value"]),
                    );
                    format!("{current}/{}", qty(target, &["value"]))
                }
            }
            "Pods" => {
                let current = status(i, "pods").map_or_else(
                    || "<unknown>".to_owned(),
                    |st| qty(st, &["current", "averageValue"]),
                );
                format!(
                    "{current}/{}",
                    qty(spec, &["pods", "target", "averageValue"])
                )
            }
            kind @ ("Resource" | "ContainerResource") => {
                let key = if kind == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let src = get(spec, &[key]).unwrap_or(&Value::Null);
                let resource = text(src, &["name"]);
                if get(src, &["target", "averageValue"]).is_some_and(|v| !v.is_null()) {
                    let current = status(i, key).map_or_else(
                        || "<unknown>".to_owned(),
                        |st| qty(st, &["current", "averageValue"]),
                    );
                    format!(
                        "{resource}: {current}/{}",
                        qty(src, &["target", "averageValue"])
                    )
                } else {
                    let current = status(i, key)
                        .and_then(|st| opt_int(st, &["current", "averageUtilization"]))
                        .map_or_else(|| "<unknown>".to_owned(), |u| format!("{u}%"));
                    let target = opt_int(src, &["target", "averageUtilization"])
                        .map_or_else(|| "<auto>".to_owned(), |u| format!("{u}%"));
                    format!("{resource}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_owned(),
        };
        out.push(entry);
    }
    const MAX: usize = 2;
    if out.len() > MAX {
        let more = out.len() - MAX;
        format!("{} + {more} more...", out[..MAX].join(", "))
    } else {
        out.join(", ")
    }
}

pub(crate) fn hpa_cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let spec = get(hpa, &["spec"]).unwrap_or(&Value::Null);
    let status = get(hpa, &["status"]).unwrap_or(&Value::Null);
    // autoscaling/v1 objects carry a single CPU target; view them as v2 does.
    let (specs, statuses) = match (
        get(spec, &["metrics"]),
        opt_int(spec, &["targetCPUUtilizationPercentage"]),
    ) {
        (None, Some(target)) => {
            let specs = vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target}}})];
            let statuses = opt_int(status, &["currentCPUUtilizationPercentage"])
                .map(|c| {
                    vec![json!({"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": c}}})]
                })
                .unwrap_or_default();
            (specs, statuses)
        }
        _ => (
            list(spec, &["metrics"]).to_vec(),
            list(status, &["currentMetrics"]).to_vec(),
        ),
    };
    let min =
        opt_int(spec, &["minReplicas"]).map_or_else(|| "<unset>".to_owned(), |m| m.to_string());
    vec![
        name(hpa),
        s(format!(
            "{}/{}",
            text(spec, &["scaleTargetRef", "kind"]),
            text(spec, &["scaleTargetRef", "name"])
        )),
        s(format_hpa_metrics(&specs, &statuses)),
        s(min),
        Value::from(int(spec, &["maxReplicas"])),
        Value::from(int(status, &["currentReplicas"])),
        age_cell(hpa, now),
    ]
}

// ---------------------------------------------------------------- poddisruptionbudgets

pub(crate) const PDB_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Min Available",
        "string",
        "The minimum number of pods that must stay available.",
    ),
    Column::new(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    Column::new(
        "Allowed Disruptions",
        "integer",
        "How many pods may be disrupted right now.",
    ),
    AGE,
];

pub(crate) fn pdb_cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    let bound = |k: &str| {
        get(pdb, &["spec", k])
            .filter(|v| !v.is_null())
            .map_or_else(|| "N/A".to_owned(), int_or_string)
    };
    vec![
        name(pdb),
        s(bound("minAvailable")),
        s(bound("maxUnavailable")),
        Value::from(get(pdb, &["status", "disruptionsAllowed"]).map_or(0, as_int)),
        age_cell(pdb, now),
    ]
}
