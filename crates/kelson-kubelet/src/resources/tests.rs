use super::*;
use k8s_openapi::api::core::v1::{PodSpec, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn list(v: &[(&str, &str)]) -> Option<List> {
    if v.is_empty() {
        return None;
    }
    Some(
        v.iter()
            .map(|(k, q)| (k.to_string(), Q(q.to_string())))
            .collect(),
    )
}

fn ctr(name: &str, req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
    Container {
        name: name.into(),
        resources: Some(ResourceRequirements {
            requests: list(req),
            limits: list(lim),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sidecar(name: &str, req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
    Container {
        restart_policy: Some("Always".into()),
        ..ctr(name, req, lim)
    }
}

fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some("11-22".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            init_containers: (!init.is_empty()).then_some(init),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const GI: i64 = 1 << 30;

#[test]
fn qos_classes() {
    let full = [("cpu", "1"), ("memory", "1Gi")];
    assert_eq!(
        compute_pod_qos(&pod(vec![ctr("a", &[], &[])], vec![])),
        QosClass::BestEffort
    );
    // Zero requests do not count.
    assert_eq!(
        compute_pod_qos(&pod(vec![ctr("a", &[("cpu", "0")], &[])], vec![])),
        QosClass::BestEffort
    );
    assert_eq!(
        compute_pod_qos(&pod(vec![ctr("a", &full, &full)], vec![])),
        QosClass::Guaranteed
    );
    // Limits only, before the API server defaulted requests from them:
    // upstream's counts differ, so Burstable.
    assert_eq!(
        compute_pod_qos(&pod(vec![ctr("a", &[], &full)], vec![])),
        QosClass::Burstable
    );
    assert_eq!(
        compute_pod_qos(&pod(
            vec![ctr("a", &[("cpu", "500m"), ("memory", "1Gi")], &full)],
            vec![]
        )),
        QosClass::Burstable
    );
    assert_eq!(
        compute_pod_qos(&pod(vec![ctr("a", &[], &[("cpu", "1")])], vec![])),
        QosClass::Burstable
    );
    // An init container without limits breaks Guaranteed.
    assert_eq!(
        compute_pod_qos(&pod(vec![ctr("a", &full, &full)], vec![ctr("i", &[], &[])])),
        QosClass::Burstable
    );
    // Extended resources are ignored.
    assert_eq!(
        compute_pod_qos(&pod(
            vec![ctr("a", &[("example.com/gpu", "1")], &[])],
            vec![]
        )),
        QosClass::BestEffort
    );
    // status.qosClass wins.
    let mut p = pod(vec![ctr("a", &full, &full)], vec![]);
    p.status = Some(PodStatus {
        qos_class: Some("Burstable".into()),
        ..Default::default()
    });
    assert_eq!(pod_qos(&p), QosClass::Burstable);
}

#[test]
fn shares_and_quota_conversions() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(500_000), 262_144);
    assert_eq!(milli_cpu_to_quota(0, QUOTA_PERIOD), 0);
    assert_eq!(milli_cpu_to_quota(5, QUOTA_PERIOD), 1000);
    assert_eq!(milli_cpu_to_quota(250, QUOTA_PERIOD), 25_000);
    assert_eq!(milli_cpu_to_quota(2000, QUOTA_PERIOD), 200_000);
}

#[test]
fn container_resources_for_each_class() {
    let lim = [("cpu", "500m"), ("memory", "256Mi")];
    let g = pod(vec![ctr("a", &lim, &lim)], vec![]);
    let c = &g.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container_linux_resources(&g, c, 8 * GI).unwrap(),
        LinuxResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 256 << 20,
            oom_score_adj: -997,
        }
    );

    let be = pod(vec![ctr("a", &[], &[])], vec![]);
    let c = &be.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container_linux_resources(&be, c, 8 * GI).unwrap(),
        LinuxResources {
            cpu_shares: 2,
            cpu_quota: 0,
            cpu_period: 100_000,
            memory_limit_in_bytes: 0,
            oom_score_adj: 1000,
        }
    );

    let b = pod(
        vec![ctr("a", &[("cpu", "100m"), ("memory", "1Gi")], &[])],
        vec![],
    );
    let c = &b.spec.as_ref().unwrap().containers[0];
    let r = container_linux_resources(&b, c, 8 * GI).unwrap();
    assert_eq!((r.cpu_shares, r.cpu_quota, r.oom_score_adj), (102, 0, 875));

    // No cpu request (not yet defaulted): shares follow the limit.
    let b = pod(vec![ctr("a", &[], &[("cpu", "1500m")])], vec![]);
    let c = &b.spec.as_ref().unwrap().containers[0];
    let r = container_linux_resources(&b, c, 8 * GI).unwrap();
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.oom_score_adj),
        (1536, 150_000, 999)
    );
}

#[test]
fn burstable_oom_score_bounds_and_sidecars() {
    let one = |req: &str| {
        let p = pod(
            vec![ctr("a", &[("memory", req)], &[("memory", "100Gi")])],
            vec![],
        );
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        oom_score_adj(&p, &c, 8 * GI).unwrap()
    };
    assert_eq!(one("4Gi"), 500);
    // Requests beyond capacity floor at 3.
    assert_eq!(one("16Gi"), 3);
    // A tiny request would give 1000: kept below BestEffort.
    assert_eq!(one("1"), 999);

    // The sidecar requests less than the app, but scores no higher.
    let p = pod(
        vec![
            ctr("app", &[("memory", "4Gi")], &[]),
            ctr("app2", &[("memory", "6Gi")], &[]),
        ],
        vec![
            sidecar("proxy", &[("memory", "1Gi")], &[]),
            ctr("init", &[("memory", "1Gi")], &[]),
        ],
    );
    let spec = p.spec.as_ref().unwrap();
    let init = spec.init_containers.as_ref().unwrap();
    assert_eq!(oom_score_adj(&p, &init[0], 8 * GI).unwrap(), 500);
    assert_eq!(oom_score_adj(&p, &init[1], 8 * GI).unwrap(), 875);
    assert_eq!(oom_score_adj(&p, &spec.containers[1], 8 * GI).unwrap(), 250);

    // Node-critical pods are protected whatever their class.
    let mut crit = pod(vec![ctr("a", &[], &[])], vec![]);
    let spec = crit.spec.as_mut().unwrap();
    spec.priority_class_name = Some("system-node-critical".into());
    spec.priority = Some(2_000_001_000);
    let c = crit.spec.as_ref().unwrap().containers[0].clone();
    assert_eq!(oom_score_adj(&crit, &c, 8 * GI).unwrap(), -997);
}

#[test]
fn pod_cgroup_names() {
    let full = [("cpu", "1"), ("memory", "1Gi")];
    let g = pod(vec![ctr("a", &full, &full)], vec![]);
    let b = pod(vec![ctr("a", &[("cpu", "1")], &[])], vec![]);
    let be = pod(vec![ctr("a", &[], &[])], vec![]);
    for (p, driver, want) in [
        (&g, CgroupDriver::Cgroupfs, "/kubepods/pod11-22"),
        (&b, CgroupDriver::Cgroupfs, "/kubepods/burstable/pod11-22"),
        (&be, CgroupDriver::Cgroupfs, "/kubepods/besteffort/pod11-22"),
        (
            &b,
            CgroupDriver::Systemd,
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11_22.slice",
        ),
        (
            &g,
            CgroupDriver::Systemd,
            "/kubepods.slice/kubepods-pod11_22.slice",
        ),
    ] {
        assert_eq!(pod_cgroup_parent(p, driver), want, "{driver:?}");
    }
    assert_eq!(cgroup_name_literal(&[], CgroupDriver::Systemd), "/");
}

#[test]
fn pod_level_limits() {
    let full = [("cpu", "500m"), ("memory", "128Mi")];
    // Guaranteed: two containers summed, plus overhead.
    let mut g = pod(vec![ctr("a", &full, &full), ctr("b", &full, &full)], vec![]);
    g.spec.as_mut().unwrap().overhead = list(&[("cpu", "100m"), ("memory", "10Mi")]);
    assert_eq!(
        pod_resource_config(&g, true, QUOTA_PERIOD).unwrap(),
        PodResourceConfig {
            cpu_shares: Some(1126),
            cpu_quota: Some(110_000),
            cpu_period: Some(100_000),
            memory_limit_in_bytes: Some(266 << 20),
        }
    );
    // Burstable: memory limit missing on one container, so only cpu is capped.
    let b = pod(
        vec![
            ctr("a", &[("cpu", "250m")], &[("cpu", "1")]),
            ctr("b", &[], &[("cpu", "1"), ("memory", "1Gi")]),
        ],
        vec![],
    );
    assert_eq!(
        pod_resource_config(&b, true, QUOTA_PERIOD).unwrap(),
        PodResourceConfig {
            // Only container a requests cpu.
            cpu_shares: Some(256),
            cpu_quota: Some(200_000),
            cpu_period: Some(100_000),
            memory_limit_in_bytes: None,
        }
    );
    assert_eq!(
        pod_resource_config(&b, false, QUOTA_PERIOD)
            .unwrap()
            .cpu_quota,
        Some(-1)
    );
    let be = pod(vec![ctr("a", &[], &[])], vec![]);
    assert_eq!(
        pod_resource_config(&be, true, QUOTA_PERIOD).unwrap(),
        PodResourceConfig {
            cpu_shares: Some(2),
            ..Default::default()
        }
    );
}

#[test]
fn init_containers_floor_and_sidecars_add() {
    let p = pod(
        vec![ctr("app", &[("cpu", "1")], &[])],
        vec![
            sidecar("proxy", &[("cpu", "500m")], &[]),
            // Runs alongside the sidecar: 2 + 0.5 = 2.5 > 1.5.
            ctr("migrate", &[("cpu", "2")], &[]),
        ],
    );
    let reqs = pod_requests(&p).unwrap();
    assert_eq!(reqs["cpu"].milli_value(), 2500);
    let p = pod(
        vec![ctr("app", &[("cpu", "1")], &[])],
        vec![
            ctr("small", &[("cpu", "200m")], &[]),
            sidecar("proxy", &[("cpu", "500m")], &[]),
        ],
    );
    assert_eq!(pod_requests(&p).unwrap()["cpu"].milli_value(), 1500);
}

#[test]
fn bad_quantities_are_errors() {
    let p = pod(vec![ctr("a", &[("cpu", "lots")], &[])], vec![]);
    let c = p.spec.as_ref().unwrap().containers[0].clone();
    assert!(matches!(
        container_linux_resources(&p, &c, GI),
        Err(ResourcesError::InvalidQuantity { .. })
    ));
}
