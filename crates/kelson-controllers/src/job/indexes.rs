//! Completion indexes of Indexed Jobs (upstream indexed_job_utils.go): the
//! compressed interval form of `status.completedIndexes` /
//! `status.failedIndexes` ("1,3-5,7"), the per-pod index annotation, and
//! which indexes still need a pod.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec};

/// Annotation (and, since PodIndexLabel, label) holding a pod's index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// Failures counted within the index, carried to the replacement pod.
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";
/// Failures ignored by the pod failure policy within the index.
pub const INDEX_IGNORED_FAILURE_COUNT_ANNOTATION: &str =
    "batch.kubernetes.io/job-index-ignored-failure-count";
/// The environment variable every container of an Indexed Job's pod gets.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// What the API server allows a generateName prefix to be (63 minus the
/// five random characters).
const MAX_GENERATED_NAME_LENGTH: usize = 58;

/// An inclusive range of indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub first: i32,
    pub last: i32,
}

/// Sorted, disjoint, non-adjacent intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(pub Vec<Interval>);

impl Intervals {
    /// Parses "1,3-5" keeping only indexes below `completions`; malformed
    /// parts are skipped, as upstream does.
    pub fn parse(s: &str, completions: i32) -> Intervals {
        let mut out: Vec<Interval> = Vec::new();
        if s.is_empty() {
            return Intervals(out);
        }
        for part in s.split(',') {
            let mut limits = part.splitn(2, '-');
            let Some(first) = limits.next().and_then(|v| v.parse::<i32>().ok()) else {
                continue;
            };
            if first >= completions {
                break;
            }
            let last = match limits.next() {
                Some(l) => match l.parse::<i32>() {
                    Ok(l) => l.min(completions - 1),
                    Err(_) => continue,
                },
                None => first,
            };
            match out.last_mut() {
                Some(prev) if prev.last == first - 1 => prev.last = last,
                _ => out.push(Interval { first, last }),
            }
        }
        Intervals(out)
    }

    /// These intervals plus `indexes` (sorted ascending).
    pub fn with_indexes(&self, indexes: impl IntoIterator<Item = i32>) -> Intervals {
        let other = Intervals(
            indexes
                .into_iter()
                .map(|i| Interval { first: i, last: i })
                .collect(),
        );
        self.merge(&other)
    }

    /// The union of two interval lists.
    pub fn merge(&self, other: &Intervals) -> Intervals {
        let mut all: Vec<Interval> = self.0.iter().chain(other.0.iter()).copied().collect();
        all.sort_by_key(|i| i.first);
        let mut out: Vec<Interval> = Vec::with_capacity(all.len());
        for iv in all {
            match out.last_mut() {
                Some(prev) if iv.first <= prev.last.saturating_add(1) => {
                    prev.last = prev.last.max(iv.last);
                }
                _ => out.push(iv),
            }
        }
        Intervals(out)
    }

    /// How many indexes the intervals hold.
    pub fn total(&self) -> i32 {
        self.0.iter().map(|i| i.last - i.first + 1).sum()
    }

    pub fn has(&self, ix: i32) -> bool {
        let pos = self.0.partition_point(|i| i.last < ix);
        self.0.get(pos).is_some_and(|i| i.first <= ix)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Intervals {
    /// Upstream's form: two adjacent indexes are written "3,4", longer
    /// runs "3-5".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, iv) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", iv.first)?;
            if iv.last == iv.first + 1 {
                write!(f, ",{}", iv.last)?;
            } else if iv.last > iv.first {
                write!(f, "-{}", iv.last)?;
            }
        }
        Ok(())
    }
}

/// The pod's completion index, if it has a valid one.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX_ANNOTATION)?
        .parse::<i32>()
        .ok()
        .filter(|i| *i >= 0)
}

/// Sort key putting pods without an index first, as upstream's
/// byCompletionIndex (-1 for unknown).
pub fn index_sort_key(pod: &Pod) -> i32 {
    completion_index(pod).unwrap_or(-1)
}

/// The indexes of `pods`.
pub fn indexes_of<'a>(pods: impl IntoIterator<Item = &'a Arc<Pod>>) -> BTreeSet<i32> {
    pods.into_iter()
        .filter_map(|p| completion_index(p))
        .collect()
}

/// The first `count` indexes below `completions` not in `non_pending`.
pub fn first_pending_indexes(non_pending: &Intervals, count: usize, completions: i32) -> Vec<i32> {
    let mut out = Vec::with_capacity(count);
    let mut candidate = 0;
    for iv in &non_pending.0 {
        while candidate < completions && out.len() < count && candidate < iv.first {
            out.push(candidate);
            candidate += 1;
        }
        if candidate <= iv.last {
            candidate = iv.last + 1;
        }
    }
    while candidate < completions && out.len() < count {
        out.push(candidate);
        candidate += 1;
    }
    out
}

/// `<job>-<index>-`, cutting the job name so that the prefix stays within
/// what a generated name may be.
pub fn generate_name_with_index(job_name: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    let prefix = format!("{job_name}{suffix}");
    if prefix.len() <= MAX_GENERATED_NAME_LENGTH {
        return prefix;
    }
    let keep = MAX_GENERATED_NAME_LENGTH.saturating_sub(suffix.len());
    let mut cut = keep.min(job_name.len());
    while !job_name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &job_name[..cut])
}

/// Adds JOB_COMPLETION_INDEX (from the index label) to every container and
/// init container that doesn't define it yet.
pub fn add_completion_index_env(spec: &mut PodSpec) {
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in containers {
        let env = c.env.get_or_insert_with(Vec::new);
        if env.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
            continue;
        }
        env.push(EnvVar {
            name: COMPLETION_INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.labels['{COMPLETION_INDEX_ANNOTATION}']"),
                }),
                ..Default::default()
            }),
        });
    }
}

/// A non-negative int32 annotation, 0 when absent or malformed.
pub fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| (0..=i64::from(i32::MAX)).contains(v))
        .map(|v| v as i32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_trip_in_upstream_format() {
        let iv = Intervals::parse("0-2,4,5,7-9", 100);
        assert_eq!(iv.to_string(), "0-2,4,5,7-9");
        assert_eq!(iv.total(), 8);
        assert!(iv.has(4) && iv.has(8) && !iv.has(3) && !iv.has(6) && !iv.has(10));
        // Adjacent parts join; indexes past completions are dropped.
        assert_eq!(Intervals::parse("1,2,3,8-12", 10).to_string(), "1-3,8,9");
        assert_eq!(Intervals::parse("x,1", 10).to_string(), "1");
        assert_eq!(Intervals::parse("", 10).total(), 0);
    }

    #[test]
    fn adding_indexes_merges_neighbours() {
        let iv = Intervals::parse("1,5", 10).with_indexes([0, 2, 3, 7]);
        assert_eq!(iv.to_string(), "0-3,5,7");
        let merged = iv.merge(&Intervals::parse("4,6", 10));
        assert_eq!(merged.to_string(), "0-7");
    }

    #[test]
    fn pending_indexes_skip_non_pending() {
        let np = Intervals::parse("0,2-3,6", 10);
        assert_eq!(first_pending_indexes(&np, 3, 10), vec![1, 4, 5]);
        assert_eq!(first_pending_indexes(&np, 10, 8), vec![1, 4, 5, 7]);
        assert_eq!(
            first_pending_indexes(&Intervals::default(), 2, 5),
            vec![0, 1]
        );
    }

    #[test]
    fn generate_names_keep_the_index() {
        assert_eq!(generate_name_with_index("pi", 3), "pi-3-");
        let long = "a".repeat(70);
        let g = generate_name_with_index(&long, 12);
        assert_eq!(g.len(), 58);
        assert!(g.ends_with("a-12-"));
    }

    #[test]
    fn env_is_added_once_per_container() {
        let mut spec: PodSpec = serde_json::from_value(serde_json::json!({
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "env": [{"name": "JOB_COMPLETION_INDEX", "value": "x"}]}]
        }))
        .unwrap();
        add_completion_index_env(&mut spec);
        add_completion_index_env(&mut spec);
        let a = spec.containers[0].env.as_ref().unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(
            spec.containers[1].env.as_ref().unwrap()[0].value.as_deref(),
            Some("x")
        );
        assert_eq!(
            spec.init_containers.unwrap()[0].env.as_ref().unwrap().len(),
            1
        );
    }
}
