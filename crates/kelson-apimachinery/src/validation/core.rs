//! Core (legacy group) kinds: pods and pod templates, services, config maps,
//! secrets, namespaces, nodes, persistent volume claims, service accounts,
//! replication controllers.

use super::format as f;
use super::*;
use crate::quantity::{parse_json, Quantity};
use serde_json::Value;

pub(super) fn validate(kind: &str, o: &Value, old: Option<&Value>, out: &mut Vec<Cause>) {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    match kind {
        "Pod" => {
            pod_spec(out, spec, "spec", true);
            pod_annotations(out, o);
            match old {
                None => {
                    if !arr(spec, "ephemeralContainers").is_empty() {
                        out.push(forbidden(
                            "spec.ephemeralContainers",
                            "cannot be set on create",
                        ));
                    }
                    if !st(spec, "nodeName").is_empty() && !arr(spec, "schedulingGates").is_empty()
                    {
                        out.push(forbidden(
                            "spec.nodeName",
                            "cannot be set until all schedulingGates have been cleared",
                        ));
                    }
                }
                Some(old) => pod_update(out, spec, old.get("spec").unwrap_or(&Value::Null)),
            }
        }
        "PodTemplate" => pod_template(out, o.get("template").unwrap_or(&Value::Null), "template"),
        "ReplicationController" => replication_controller(out, spec),
        "Service" => service(out, o, old),
        "ConfigMap" => config_map(out, o, old),
        "Secret" => secret(out, o, old),
        "Namespace" => {
            for (i, fin) in arr(spec, "finalizers").iter().enumerate() {
                let fin = fin.as_str().unwrap_or_default();
                for msg in f::qualified_name(fin) {
                    out.push(invalid("spec.finalizers", s(fin), &msg));
                }
                if !fin.contains('/') && fin != "kubernetes" {
                    out.push(invalid(
                        &index("spec.finalizers", i),
                        s(fin),
                        "name is neither a standard finalizer name nor is it fully qualified",
                    ));
                }
            }
        }
        "Node" => node(out, o, old),
        "PersistentVolumeClaim" => pvc(out, o, old),
        "ServiceAccount" | "Endpoints" | "Event" | "LimitRange" | "ResourceQuota" => {}
        _ => {}
    }
}

// ---------------------------------------------------------------- pod spec

/// Volume source fields, in the order upstream checks them (the second one
/// present is reported as "may not specify more than 1 volume type").
const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
];

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

fn file_mode(out: &mut Vec<Cause>, v: &Value, k: &str, path: &str) {
    if let Some(m) = int(v, k) {
        if !(0..=0o777).contains(&m) {
            out.push(invalid(&child(path, k), Bad::Int(m), FILE_MODE_MSG));
        }
    }
}

fn key_to_paths(out: &mut Vec<Cause>, src: &Value, path: &str) {
    for (i, kp) in arr(src, "items").iter().enumerate() {
        let ip = index(&child(path, "items"), i);
        if st(kp, "key").is_empty() {
            out.push(required(&child(&ip, "key"), ""));
        }
        let p = st(kp, "path");
        if p.is_empty() {
            out.push(required(&child(&ip, "path"), ""));
        }
        local_path(out, p, &child(&ip, "path"));
        file_mode(out, kp, "mode", &ip);
    }
}

/// Upstream `ValidateLocalNonReservedPath` (relative, no '..', no "..x").
fn local_path(out: &mut Vec<Cause>, p: &str, path: &str) {
    if p.starts_with('/') {
        out.push(invalid(path, s(p), "must be a relative path"));
    }
    if p.split('/').any(|seg| seg == "..") {
        out.push(invalid(path, s(p), "must not contain '..'"));
    }
    if p.starts_with("..") && !p.starts_with("../") && p != ".." {
        out.push(invalid(path, s(p), "must not start with '..'"));
    }
}

/// Returns the names of the valid volumes, for volumeMount checks.
fn volumes(out: &mut Vec<Cause>, spec: &Value, path: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, vol) in arr(spec, "volumes").iter().enumerate() {
        let ip = index(path, i);
        let mut el = Vec::new();
        let mut kinds = 0;
        for src in VOLUME_SOURCES {
            if !present(vol, src) {
                continue;
            }
            if kinds > 0 {
                el.push(forbidden(
                    &child(&ip, src),
                    "may not specify more than 1 volume type",
                ));
                continue;
            }
            kinds += 1;
            let sv = vol.get(*src).unwrap_or(&Value::Null);
            let sp = child(&ip, src);
            match *src {
                "secret" => {
                    if st(sv, "secretName").is_empty() {
                        el.push(required(&child(&sp, "secretName"), ""));
                    }
                    file_mode(&mut el, sv, "defaultMode", &sp);
                    key_to_paths(&mut el, sv, &sp);
                }
                "configMap" => {
                    if st(sv, "name").is_empty() {
                        el.push(required(&child(&sp, "name"), ""));
                    }
                    file_mode(&mut el, sv, "defaultMode", &sp);
                    key_to_paths(&mut el, sv, &sp);
                }
                "persistentVolumeClaim" if st(sv, "claimName").is_empty() => {
                    el.push(required(&child(&sp, "claimName"), ""));
                }
                "hostPath" => {
                    let p = st(sv, "path");
                    if p.is_empty() {
                        el.push(required(&child(&sp, "path"), ""));
                    } else if p.split('/').any(|seg| seg == "..") {
                        el.push(invalid(&child(&sp, "path"), s(p), "must not contain '..'"));
                    }
                    let t = st(sv, "type");
                    const TYPES: &[&str] = &[
                        "",
                        "BlockDevice",
                        "CharDevice",
                        "Directory",
                        "DirectoryOrCreate",
                        "File",
                        "FileOrCreate",
                        "Socket",
                    ];
                    if present(sv, "type") && !TYPES.contains(&t) {
                        el.push(not_supported(&child(&sp, "type"), s(t), TYPES));
                    }
                }
                "nfs" => {
                    if st(sv, "server").is_empty() {
                        el.push(required(&child(&sp, "server"), ""));
                    }
                    let p = st(sv, "path");
                    if p.is_empty() {
                        el.push(required(&child(&sp, "path"), ""));
                    }
                    if !p.starts_with('/') {
                        el.push(invalid(
                            &child(&sp, "path"),
                            s(p),
                            "must be an absolute path",
                        ));
                    }
                }
                "emptyDir" => {
                    if let Some(Ok(q)) = sv.get("sizeLimit").map(parse_json) {
                        if q.is_negative() {
                            el.push(forbidden(
                                &child(&sp, "sizeLimit"),
                                "SizeLimit field must be a valid resource quantity",
                            ));
                        }
                    }
                }
                "downwardAPI" | "projected" => file_mode(&mut el, sv, "defaultMode", &sp),
                _ => {}
            }
        }
        if kinds == 0 {
            el.push(required(&ip, "must specify a volume type"));
        }
        let name = st(vol, "name");
        let np = child(&ip, "name");
        if name.is_empty() {
            el.push(required(&np, ""));
        } else {
            for msg in f::dns1123_label(name) {
                el.push(invalid(&np, s(name), &msg));
            }
        }
        if names.iter().any(|n| n == name) {
            el.push(duplicate(&np, s(name)));
        }
        if el.is_empty() {
            names.push(name.to_string());
        } else {
            out.extend(el);
        }
    }
    names
}

const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Upstream `ValidatePodSpec` (+ the pod-only extras when `is_pod`).
pub(super) fn pod_spec(out: &mut Vec<Cause>, spec: &Value, path: &str, is_pod: bool) {
    if !present(spec, "terminationGracePeriodSeconds") {
        out.push(required(&child(path, "terminationGracePeriodSeconds"), ""));
    }
    let grace = int(spec, "terminationGracePeriodSeconds");
    let vols = volumes(out, spec, &child(path, "volumes"));
    let restart = st(spec, "restartPolicy");
    let containers = arr(spec, "containers");
    let cpath = child(path, "containers");
    if containers.is_empty() {
        out.push(required(&cpath, ""));
    } else {
        let mut names: Vec<&str> = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            let ip = index(&cpath, i);
            container_common(out, c, &vols, &ip, restart);
            let name = st(c, "name");
            if names.contains(&name) {
                out.push(duplicate(&child(&ip, "name"), s(name)));
            } else {
                names.push(name);
            }
            if let Some(l) = c.get("lifecycle") {
                lifecycle(out, l, grace, &child(&ip, "lifecycle"));
            }
            probes(out, c, grace, &ip);
            if present(c, "restartPolicy") {
                out.push(forbidden(
                    &child(&ip, "restartPolicy"),
                    "may not be set for non-init containers",
                ));
            }
        }
        host_port_conflicts(out, containers, &cpath);
    }
    let ipath = child(path, "initContainers");
    let mut all_names: Vec<&str> = containers.iter().map(|c| st(c, "name")).collect();
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        let ip = index(&ipath, i);
        container_common(out, c, &vols, &ip, restart);
        let mut always = false;
        if present(c, "restartPolicy") {
            let rp = st(c, "restartPolicy");
            if rp == "Always" {
                always = true;
            } else {
                out.push(not_supported(
                    &child(&ip, "restartPolicy"),
                    s(rp),
                    &["Always"],
                ));
            }
        }
        let name = st(c, "name");
        if all_names.contains(&name) {
            out.push(duplicate(&child(&ip, "name"), s(name)));
        } else if !name.is_empty() {
            all_names.push(name);
        }
        host_port_conflicts(out, std::slice::from_ref(c), &ipath);
        if always {
            if let Some(l) = c.get("lifecycle") {
                lifecycle(out, l, grace, &child(&ip, "lifecycle"));
            }
            probes(out, c, grace, &ip);
        } else {
            for k in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if present(c, k) {
                    out.push(forbidden(
                        &child(&ip, k),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    // hostNetwork pods: hostPort must equal containerPort.
    let host_network = truthy(spec, "hostNetwork");
    if host_network {
        for (i, c) in containers.iter().enumerate() {
            for (j, p) in arr(c, "ports").iter().enumerate() {
                let hp = int(p, "hostPort").unwrap_or(0);
                let cp = int(p, "containerPort").unwrap_or(0);
                if (is_pod || hp != 0) && hp != cp {
                    out.push(invalid(
                        &child(&index(&child(&index(&cpath, i), "ports"), j), "hostPort"),
                        Bad::Int(hp),
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    let rp_path = child(path, "restartPolicy");
    match restart {
        "Always" | "OnFailure" | "Never" => {}
        "" => out.push(required(&rp_path, "")),
        other => out.push(not_supported(
            &rp_path,
            s(other),
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns = st(spec, "dnsPolicy");
    let dp = child(path, "dnsPolicy");
    match dns {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => out.push(required(&dp, "")),
        other => out.push(not_supported(
            &dp,
            s(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    validate_labels(out, spec.get("nodeSelector"), &child(path, "nodeSelector"));
    if let Some(sc) = spec.get("securityContext") {
        let sp = child(path, "securityContext");
        for k in ["fsGroup", "runAsUser", "runAsGroup"] {
            id_range(out, sc, k, &sp);
        }
        for (g, gid) in arr(sc, "supplementalGroups").iter().enumerate() {
            if let Some(n) = gid.as_i64() {
                if !(0..=0xffff_ffff).contains(&n) {
                    out.push(invalid(
                        &index(&child(&sp, "supplementalGroups"), g),
                        Bad::Int(n),
                        &f::inclusive_range_error(0, 0xffff_ffff),
                    ));
                }
            }
        }
        if truthy(spec, "hostPID") && truthy(spec, "shareProcessNamespace") {
            out.push(invalid(
                &child(&sp, "shareProcessNamespace"),
                Bad::Bool(true),
                "ShareProcessNamespace and HostPID cannot both be enabled",
            ));
        }
    }
    for (i, ps) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if ps
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k != "name"))
        {
            out.push(invalid(
                &index(&child(path, "imagePullSecrets"), i),
                Bad::Raw(ps.to_string()),
                "only name may be set",
            ));
        }
    }
    if dns == "None" {
        match spec.get("dnsConfig") {
            None | Some(Value::Null) => out.push(required(
                &child(path, "dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            )),
            Some(dc) if arr(dc, "nameservers").is_empty() => out.push(required(
                &child(&child(path, "dnsConfig"), "nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )),
            _ => {}
        }
    }
    if let Some(dc) = spec.get("dnsConfig").filter(|v| v.is_object()) {
        let dp = child(path, "dnsConfig");
        for (i, ns) in arr(dc, "nameservers").iter().enumerate() {
            let ns = ns.as_str().unwrap_or_default();
            if let Some(msg) = f::ip_error(ns) {
                out.push(invalid(&index(&child(&dp, "nameservers"), i), s(ns), msg));
            }
        }
    }
    let sa = st(spec, "serviceAccountName");
    if !sa.is_empty() {
        for msg in f::dns1123_subdomain(sa) {
            out.push(invalid(&child(path, "serviceAccountName"), s(sa), &msg));
        }
    }
    let node = st(spec, "nodeName");
    if !node.is_empty() {
        for msg in f::dns1123_subdomain(node) {
            out.push(invalid(&child(path, "nodeName"), s(node), &msg));
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            out.push(invalid(
                &child(path, "activeDeadlineSeconds"),
                Bad::Int(ads),
                &f::inclusive_range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    for k in ["hostname", "subdomain"] {
        let v = st(spec, k);
        if !v.is_empty() {
            for msg in f::dns1123_label(v) {
                out.push(invalid(&child(path, k), s(v), &msg));
            }
        }
    }
    tolerations(out, arr(spec, "tolerations"), &child(path, "tolerations"));
    let pc = st(spec, "priorityClassName");
    if !pc.is_empty() {
        for msg in f::dns1123_subdomain(pc) {
            out.push(invalid(&child(path, "priorityClassName"), s(pc), &msg));
        }
    }
    if present(spec, "preemptionPolicy") {
        let pp = st(spec, "preemptionPolicy");
        let fp = child(path, "preemptionPolicy");
        match pp {
            "PreemptLowerPriority" | "Never" => {}
            "" => out.push(required(&fp, "")),
            other => out.push(not_supported(
                &fp,
                s(other),
                &["PreemptLowerPriority", "Never"],
            )),
        }
    }
    if let Some(os) = spec.get("os").filter(|v| v.is_object()) {
        let name = st(os, "name");
        if name.is_empty() {
            out.push(required(
                &child(&child(path, "os"), "name"),
                "cannot be empty",
            ));
        } else if name != "linux" && name != "windows" {
            out.push(not_supported(
                &child(path, "os"),
                s(name),
                &["linux", "windows"],
            ));
        }
    }
    if is_pod {
        for (k, list) in [
            ("containers", containers),
            ("initContainers", arr(spec, "initContainers")),
        ] {
            for (i, c) in list.iter().enumerate() {
                let img = st(c, "image");
                if img.len() != img.trim().len() {
                    out.push(invalid(
                        &child(&index(&child(path, k), i), "image"),
                        s(img),
                        "must not have leading or trailing whitespace",
                    ));
                }
            }
        }
    }
}

fn id_range(out: &mut Vec<Cause>, v: &Value, k: &str, path: &str) {
    if let Some(n) = int(v, k) {
        if !(0..=0xffff_ffff).contains(&n) {
            out.push(invalid(
                &child(path, k),
                Bad::Int(n),
                &f::inclusive_range_error(0, 0xffff_ffff),
            ));
        }
    }
}

fn host_port_conflicts(out: &mut Vec<Cause>, containers: &[Value], path: &str) {
    let mut seen: Vec<String> = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, p) in arr(c, "ports").iter().enumerate() {
            let hp = int(p, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!("{}/{}/{}", st(p, "protocol"), st(p, "hostIP"), hp);
            if seen.contains(&key) {
                out.push(duplicate(
                    &child(&index(&child(&index(path, ci), "ports"), pi), "hostPort"),
                    s(key),
                ));
            } else {
                seen.push(key);
            }
        }
    }
}

fn container_common(out: &mut Vec<Cause>, c: &Value, vols: &[String], path: &str, restart: &str) {
    let name = st(c, "name");
    let np = child(path, "name");
    if name.is_empty() {
        out.push(required(&np, ""));
    } else {
        for msg in f::dns1123_label(name) {
            out.push(invalid(&np, s(name), &msg));
        }
    }
    if st(c, "image").is_empty() {
        out.push(required(&child(path, "image"), ""));
    }
    let tmp = st(c, "terminationMessagePolicy");
    let tp = child(path, "terminationMessagePolicy");
    match tmp {
        "File" | "FallbackToLogsOnError" => {}
        "" => out.push(required(&tp, "")),
        other => out.push(not_supported(
            &tp,
            s(other),
            &["File", "FallbackToLogsOnError"],
        )),
    }
    container_ports(out, c, &child(path, "ports"));
    env(out, c, &child(path, "env"));
    env_from(out, c, &child(path, "envFrom"));
    volume_mounts(out, c, vols, &child(path, "volumeMounts"));
    let pp = st(c, "imagePullPolicy");
    let ppp = child(path, "imagePullPolicy");
    match pp {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => out.push(required(&ppp, "")),
        other => out.push(not_supported(
            &ppp,
            s(other),
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    if let Some(r) = c.get("resources") {
        resources(out, r, &child(path, "resources"));
    }
    for (i, rp) in arr(c, "resizePolicy").iter().enumerate() {
        let _ = i;
        let fp = child(path, "resizePolicy");
        match st(rp, "resourceName") {
            "cpu" | "memory" => {}
            "" => out.push(required(&fp, "")),
            other => out.push(not_supported(&fp, s(other), &["cpu", "memory"])),
        }
        match st(rp, "restartPolicy") {
            "NotRequired" | "RestartContainer" => {}
            "" => out.push(required(&fp, "")),
            other => out.push(not_supported(
                &fp,
                s(other),
                &["NotRequired", "RestartContainer"],
            )),
        }
        if restart == "Never" && st(rp, "restartPolicy") != "NotRequired" {
            out.push(invalid(
                &fp,
                s(st(rp, "restartPolicy")),
                "must be 'NotRequired' when `restartPolicy` is 'Never'",
            ));
        }
    }
    if let Some(sc) = c.get("securityContext").filter(|v| v.is_object()) {
        let sp = child(path, "securityContext");
        id_range(out, sc, "runAsUser", &sp);
        id_range(out, sc, "runAsGroup", &sp);
        if present(sc, "procMount") {
            let pm = st(sc, "procMount");
            if pm != "Default" && pm != "Unmasked" {
                out.push(not_supported(
                    &child(&sp, "procMount"),
                    s(pm),
                    &["Default", "Unmasked"],
                ));
            }
        }
        if sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false))
            && truthy(sc, "privileged")
        {
            out.push(invalid(
                &sp,
                Bad::Raw(sc.to_string()),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
    }
}

fn container_ports(out: &mut Vec<Cause>, c: &Value, path: &str) {
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in arr(c, "ports").iter().enumerate() {
        let ip = index(path, i);
        let name = st(p, "name");
        if !name.is_empty() {
            let msgs = f::port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    out.push(invalid(&child(&ip, "name"), s(name), &m));
                }
            } else if names.contains(&name) {
                out.push(duplicate(&child(&ip, "name"), s(name)));
            } else {
                names.push(name);
            }
        }
        let cp = int(p, "containerPort").unwrap_or(0);
        if cp == 0 {
            out.push(required(&child(&ip, "containerPort"), ""));
        } else {
            for m in f::port_num(cp) {
                out.push(invalid(&child(&ip, "containerPort"), Bad::Int(cp), &m));
            }
        }
        let hp = int(p, "hostPort").unwrap_or(0);
        if hp != 0 {
            for m in f::port_num(hp) {
                out.push(invalid(&child(&ip, "hostPort"), Bad::Int(hp), &m));
            }
        }
        protocol(out, p, &ip);
    }
}

fn protocol(out: &mut Vec<Cause>, p: &Value, path: &str) {
    let proto = st(p, "protocol");
    let pp = child(path, "protocol");
    match proto {
        "TCP" | "UDP" | "SCTP" => {}
        "" => out.push(required(&pp, "")),
        other => out.push(not_supported(&pp, s(other), &["SCTP", "TCP", "UDP"])),
    }
}

fn env(out: &mut Vec<Cause>, c: &Value, path: &str) {
    for (i, e) in arr(c, "env").iter().enumerate() {
        let ip = index(path, i);
        let name = st(e, "name");
        if name.is_empty() {
            out.push(required(&child(&ip, "name"), ""));
        } else {
            for m in f::relaxed_env_var_name(name) {
                out.push(invalid(&child(&ip, "name"), s(name), &m));
            }
        }
        let Some(vf) = e.get("valueFrom").filter(|v| v.is_object()) else {
            continue;
        };
        let vp = child(&ip, "valueFrom");
        let mut n = 0;
        if let Some(fr) = vf.get("fieldRef") {
            n += 1;
            let fp = child(&vp, "fieldRef");
            if st(fr, "apiVersion").is_empty() {
                out.push(required(&child(&fp, "apiVersion"), ""));
            } else if st(fr, "fieldPath").is_empty() {
                out.push(required(&child(&fp, "fieldPath"), ""));
            } else {
                let fpath = st(fr, "fieldPath");
                const OK: &[&str] = &[
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "spec.nodeName",
                    "spec.serviceAccountName",
                    "status.hostIP",
                    "status.hostIPs",
                    "status.podIP",
                    "status.podIPs",
                ];
                let subscripted = fpath.starts_with("metadata.labels[")
                    || fpath.starts_with("metadata.annotations[");
                if !subscripted
                    && !OK.contains(&fpath)
                    && fpath != "metadata.labels"
                    && fpath != "metadata.annotations"
                {
                    let mut sorted = OK.to_vec();
                    sorted.sort();
                    out.push(not_supported(&child(&fp, "fieldPath"), s(fpath), &sorted));
                }
            }
        }
        if let Some(rf) = vf.get("resourceFieldRef") {
            n += 1;
            if st(rf, "resource").is_empty() {
                out.push(required(
                    &child(&child(&vp, "resourceFieldRef"), "resource"),
                    "",
                ));
            }
        }
        for k in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = vf.get(k) {
                n += 1;
                let rp = child(&vp, k);
                for m in f::dns1123_subdomain(st(r, "name")) {
                    out.push(invalid(&child(&rp, "name"), s(st(r, "name")), &m));
                }
                let key = st(r, "key");
                if key.is_empty() {
                    out.push(required(&child(&rp, "key"), ""));
                } else {
                    for m in f::config_map_key(key) {
                        out.push(invalid(&child(&rp, "key"), s(key), &m));
                    }
                }
            }
        }
        if n == 0 {
            out.push(invalid(&vp, s(""), "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
        } else if !st(e, "value").is_empty() {
            out.push(invalid(
                &vp,
                s(""),
                "may not be specified when `value` is not empty",
            ));
        } else if n > 1 {
            out.push(invalid(
                &vp,
                s(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn env_from(out: &mut Vec<Cause>, c: &Value, path: &str) {
    for (i, e) in arr(c, "envFrom").iter().enumerate() {
        let ip = index(path, i);
        let prefix = st(e, "prefix");
        if !prefix.is_empty() {
            for m in f::relaxed_env_var_name(prefix) {
                out.push(invalid(&child(&ip, "prefix"), s(prefix), &m));
            }
        }
        let mut n = 0;
        for k in ["configMapRef", "secretRef"] {
            if let Some(r) = e.get(k).filter(|v| v.is_object()) {
                n += 1;
                let name = st(r, "name");
                let np = child(&child(&ip, k), "name");
                if name.is_empty() {
                    out.push(required(&np, ""));
                } else {
                    for m in super::name_errors(NameRule::Subdomain, name, true) {
                        out.push(invalid(&np, s(name), &m));
                    }
                }
            }
        }
        if n == 0 {
            out.push(invalid(
                path,
                s(""),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            out.push(invalid(
                path,
                s(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn volume_mounts(out: &mut Vec<Cause>, c: &Value, vols: &[String], path: &str) {
    let mut points: Vec<&str> = Vec::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let ip = index(path, i);
        let name = st(m, "name");
        if name.is_empty() {
            out.push(required(&child(&ip, "name"), ""));
        }
        if !vols.iter().any(|v| v == name) {
            out.push(not_found(&child(&ip, "name"), s(name)));
        }
        let mp = st(m, "mountPath");
        if mp.is_empty() {
            out.push(required(&child(&ip, "mountPath"), ""));
        }
        if points.contains(&mp) {
            out.push(invalid(&child(&ip, "mountPath"), s(mp), "must be unique"));
        }
        points.push(mp);
        let sub = st(m, "subPath");
        if !sub.is_empty() {
            descending_path(out, sub, &child(path, "subPath"));
        }
        let expr = st(m, "subPathExpr");
        if !expr.is_empty() {
            if !sub.is_empty() {
                out.push(invalid(
                    &child(&ip, "subPathExpr"),
                    s(expr),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            descending_path(out, expr, &child(path, "subPathExpr"));
        }
    }
}

/// Upstream `validateLocalDescendingPath`.
fn descending_path(out: &mut Vec<Cause>, p: &str, path: &str) {
    if p.starts_with('/') {
        out.push(invalid(path, s(p), "must be a relative path"));
    }
    if p.split('/').any(|seg| seg == "..") {
        out.push(invalid(path, s(p), "must not contain '..'"));
    }
}

fn lifecycle(out: &mut Vec<Cause>, l: &Value, grace: Option<i64>, path: &str) {
    for k in ["postStart", "preStop"] {
        if let Some(h) = l.get(k).filter(|v| v.is_object()) {
            handler(out, h, grace, &child(path, k), true);
        }
    }
}

fn probes(out: &mut Vec<Cause>, c: &Value, grace: Option<i64>, path: &str) {
    for k in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = c.get(k).filter(|v| v.is_object()) else {
            continue;
        };
        let pp = child(path, k);
        handler(out, p, grace, &pp, false);
        for n in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            nonneg(out, p, n, &pp);
        }
        if let Some(t) = int(p, "terminationGracePeriodSeconds") {
            if t <= 0 {
                out.push(invalid(
                    &child(&pp, "terminationGracePeriodSeconds"),
                    Bad::Int(t),
                    "must be greater than 0",
                ));
            }
        }
        let st_ = int(p, "successThreshold").unwrap_or(1);
        if k != "readinessProbe" && st_ != 1 {
            out.push(invalid(
                &child(&pp, "successThreshold"),
                Bad::Int(st_),
                "must be 1",
            ));
        }
        if k == "readinessProbe" {
            if let Some(t) = int(p, "terminationGracePeriodSeconds") {
                out.push(invalid(
                    &child(&pp, "terminationGracePeriodSeconds"),
                    Bad::Int(t),
                    "must not be set for readinessProbes",
                ));
            }
        }
    }
}

fn port_num_or_name(out: &mut Vec<Cause>, port: Option<&Value>, path: &str) {
    match port {
        Some(Value::String(name)) => {
            for m in f::port_name(name) {
                out.push(invalid(path, s(name.as_str()), &m));
            }
        }
        Some(v) => {
            let n = v.as_i64().unwrap_or(0);
            for m in f::port_num(n) {
                out.push(invalid(path, Bad::Int(n), &m));
            }
        }
        None => {
            for m in f::port_num(0) {
                out.push(invalid(path, Bad::Int(0), &m));
            }
        }
    }
}

fn handler(out: &mut Vec<Cause>, h: &Value, grace: Option<i64>, path: &str, lifecycle: bool) {
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let mut n = 0;
    for k in kinds {
        let Some(a) = h.get(*k).filter(|v| v.is_object()) else {
            continue;
        };
        let ap = child(path, k);
        if n > 0 {
            out.push(forbidden(&ap, "may not specify more than 1 handler type"));
            continue;
        }
        n += 1;
        match *k {
            "exec" if arr(a, "command").is_empty() => {
                out.push(required(&child(&ap, "command"), ""));
            }
            "httpGet" => {
                if st(a, "path").is_empty() {
                    out.push(required(&child(&ap, "path"), ""));
                }
                port_num_or_name(out, a.get("port"), &child(&ap, "port"));
                let scheme = st(a, "scheme");
                if scheme != "HTTP" && scheme != "HTTPS" {
                    out.push(not_supported(
                        &child(&ap, "scheme"),
                        s(scheme),
                        &["HTTP", "HTTPS"],
                    ));
                }
                for hd in arr(a, "httpHeaders") {
                    for m in f::http_header_name(st(hd, "name")) {
                        out.push(invalid(&child(&ap, "httpHeaders"), s(st(hd, "name")), &m));
                    }
                }
            }
            "tcpSocket" => port_num_or_name(out, a.get("port"), &child(&ap, "port")),
            "grpc" => {
                let p = int(a, "port").unwrap_or(0);
                for m in f::port_num(p) {
                    out.push(invalid(&child(&ap, "port"), Bad::Int(p), &m));
                }
            }
            "sleep" => {
                let secs = int(a, "seconds").unwrap_or(0);
                if let Some(g) = grace {
                    if secs < 0 || secs > g {
                        out.push(invalid(&ap, Bad::Int(secs), &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})")));
                    }
                }
            }
            _ => {}
        }
    }
    if n == 0 {
        out.push(required(path, "must specify a handler type"));
    }
}

pub(super) fn tolerations(out: &mut Vec<Cause>, list: &[Value], path: &str) {
    for (i, t) in list.iter().enumerate() {
        let ip = index(path, i);
        let k = st(t, "key");
        let op = st(t, "operator");
        if !k.is_empty() {
            for m in f::qualified_name(k) {
                out.push(invalid(&child(&ip, "key"), s(k), &m));
            }
        }
        if k.is_empty() && op != "Exists" {
            out.push(invalid(&child(&ip, "operator"), s(op), "operator must be Exists when `key` is empty, which means \"match all values and all keys\""));
        }
        let effect = st(t, "effect");
        if present(t, "tolerationSeconds") && effect != "NoExecute" {
            out.push(invalid(
                &child(&ip, "effect"),
                s(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let val = st(t, "value");
        match op {
            "Equal" | "" => {
                let errs = f::label_value(val);
                if !errs.is_empty() {
                    out.push(invalid(&child(&ip, "operator"), s(val), &errs.join(";")));
                }
            }
            "Exists" => {
                if !val.is_empty() {
                    out.push(invalid(
                        &child(&ip, "operator"),
                        s(val),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => out.push(not_supported(
                &child(&ip, "operator"),
                s(other),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            out.push(not_supported(
                &child(&ip, "effect"),
                s(effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
}

// --------------------------------------------------------------- resources

const STANDARD_CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];
const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "quota",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "persistentvolumeclaims",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
    "storage",
    "configmaps",
];

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}
/// Native resources other than huge pages may be overcommitted.
fn overcommit_allowed(name: &str) -> bool {
    is_native(name) && !is_hugepages(name)
}

fn container_resource_name(out: &mut Vec<Cause>, name: &str, path: &str) {
    let msgs = f::qualified_name(name);
    if !msgs.is_empty() {
        for m in msgs {
            out.push(invalid(path, s(name), &m));
        }
    } else if !name.contains('/')
        && !STANDARD_RESOURCES.contains(&name)
        && !is_hugepages(name)
        && !name.starts_with("requests.hugepages-")
    {
        out.push(invalid(
            path,
            s(name),
            "must be a standard resource type or fully qualified",
        ));
    }
    if !name.contains('/') {
        if !STANDARD_CONTAINER_RESOURCES.contains(&name) && !is_hugepages(name) {
            out.push(invalid(
                path,
                s(name),
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native(name) && !f::qualified_name(&format!("requests.{name}")).is_empty() {
        out.push(invalid(
            path,
            s(name),
            "doesn't follow extended resource name standard",
        ));
    }
}

/// Parses a quantity from JSON; malformed ones become an Invalid cause
/// (upstream rejects them while decoding, with the same wording).
fn quantity(out: &mut Vec<Cause>, v: &Value, path: &str) -> Option<Quantity> {
    match parse_json(v) {
        Ok(q) => Some(q),
        Err(e) => {
            out.push(invalid(path, bad_json(v), &e.to_string()));
            None
        }
    }
}

fn quantity_value(out: &mut Vec<Cause>, name: &str, q: &Quantity, path: &str) {
    if q.is_negative() {
        out.push(invalid(path, s(q.to_upstream_string()), NEGATIVE));
    }
    // Extended resources must be whole numbers.
    if !is_native(name) && q.milli_value() % 1000 != 0 {
        out.push(invalid(
            path,
            s(q.to_upstream_string()),
            "must be an integer",
        ));
    }
}

/// Upstream `ValidateContainerResourceRequirements`.
pub(super) fn resources(out: &mut Vec<Cause>, r: &Value, path: &str) {
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    let mut limits: Vec<(String, Quantity)> = Vec::new();
    let mut has_cpu_mem = false;
    let mut has_huge = false;
    if let Some(m) = obj(r, "limits") {
        for (name, v) in m {
            let fp = key(&lim_path, name);
            container_resource_name(out, name, &fp);
            if let Some(q) = quantity(out, v, &fp) {
                quantity_value(out, name, &q, &fp);
                limits.push((name.clone(), q));
            }
            has_cpu_mem |= name == "cpu" || name == "memory";
            has_huge |= is_hugepages(name);
        }
    }
    if let Some(m) = obj(r, "requests") {
        for (name, v) in m {
            let fp = key(&req_path, name);
            container_resource_name(out, name, &fp);
            let Some(q) = quantity(out, v, &fp) else {
                continue;
            };
            quantity_value(out, name, &q, &fp);
            match limits.iter().find(|(n, _)| n == name) {
                Some((_, lim)) => {
                    if q != *lim && !overcommit_allowed(name) {
                        out.push(invalid(
                            &req_path,
                            s(q.to_upstream_string()),
                            &format!(
                                "must be equal to {name} limit of {}",
                                lim.to_upstream_string()
                            ),
                        ));
                    } else if q > *lim {
                        out.push(invalid(
                            &req_path,
                            s(q.to_upstream_string()),
                            &format!(
                                "must be less than or equal to {name} limit of {}",
                                lim.to_upstream_string()
                            ),
                        ));
                    }
                }
                None if !overcommit_allowed(name) => {
                    out.push(required(
                        &lim_path,
                        "Limit must be set for non overcommitable resources",
                    ));
                }
                None => {}
            }
            has_cpu_mem |= name == "cpu" || name == "memory";
            has_huge |= is_hugepages(name);
        }
    }
    if has_huge && !has_cpu_mem {
        out.push(forbidden(path, "HugePages require cpu or memory"));
    }
}

// ------------------------------------------------------- pod-level checks

fn pod_annotations(out: &mut Vec<Cause>, o: &Value) {
    let meta = o.get("metadata").unwrap_or(&Value::Null);
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let ann = meta.get("annotations");
    if let Some(v) = ann
        .and_then(|a| a.get("kubernetes.io/config.mirror"))
        .and_then(Value::as_str)
    {
        if st(spec, "nodeName").is_empty() {
            out.push(invalid(
                "metadata.annotations[kubernetes.io/config.mirror]",
                s(v),
                "must set spec.nodeName if mirror pod annotation is set",
            ));
        }
    }
    if let Some(v) = ann
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(Value::as_str)
    {
        if v.parse::<i32>().is_err() {
            out.push(invalid(
                "metadata.annotations[controller.kubernetes.io/pod-deletion-cost]",
                s(v),
                "must be a 32bit integer",
            ));
        }
    }
}

/// Upstream `ValidatePodUpdate`'s spec rules: only images, activeDeadlineSeconds
/// (decrease), tolerations (additions) and scheduling gate removals may change.
fn pod_update(out: &mut Vec<Cause>, new: &Value, old: &Value) {
    for k in ["containers", "initContainers"] {
        let (n, o) = (arr(new, k), arr(old, k));
        if n.len() != o.len() {
            out.push(forbidden(
                &child("spec", k),
                "pod updates may not add or remove containers",
            ));
            return;
        }
        for (i, c) in n.iter().enumerate() {
            if st(c, "image").is_empty() {
                out.push(required(&child(&index(&child("spec", k), i), "image"), ""));
            }
        }
    }
    match (
        int(new, "activeDeadlineSeconds"),
        int(old, "activeDeadlineSeconds"),
    ) {
        (Some(n), o) => {
            if !(0..=i64::from(i32::MAX)).contains(&n) {
                out.push(invalid(
                    "spec.activeDeadlineSeconds",
                    Bad::Int(n),
                    &f::inclusive_range_error(0, i64::from(i32::MAX)),
                ));
                return;
            }
            if o.is_some_and(|o| o < n) {
                out.push(invalid(
                    "spec.activeDeadlineSeconds",
                    Bad::Int(n),
                    "must be less than or equal to previous value",
                ));
                return;
            }
        }
        (None, Some(_)) => out.push(invalid(
            "spec.activeDeadlineSeconds",
            Bad::Raw("null".into()),
            "must not update from a positive integer to nil value",
        )),
        (None, None) => {}
    }
    // Tolerations: every old one must still exist (tolerationSeconds may change).
    let new_t = arr(new, "tolerations");
    for ot in arr(old, "tolerations") {
        let found = new_t.iter().any(|nt| {
            let mut a = ot.clone();
            let mut b = nt.clone();
            if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object_mut()) {
                a.remove("tolerationSeconds");
                b.remove("tolerationSeconds");
            }
            a == b
        });
        if !found {
            out.push(forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    let old_gates: Vec<&str> = arr(old, "schedulingGates")
        .iter()
        .map(|g| st(g, "name"))
        .collect();
    for (i, g) in arr(new, "schedulingGates").iter().enumerate() {
        if !old_gates.contains(&st(g, "name")) {
            out.push(forbidden(
                &child(&index("spec.schedulingGates", i), "name"),
                &format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    st(g, "name")
                ),
            ));
        }
    }
    // Mask the mutable fields, then compare the rest.
    let mut munged = new.clone();
    if let Some(m) = munged.as_object_mut() {
        for k in ["containers", "initContainers"] {
            if let Some(list) = m.get_mut(k).and_then(Value::as_array_mut) {
                for (i, c) in list.iter_mut().enumerate() {
                    if let Some(cm) = c.as_object_mut() {
                        match arr(old, k).get(i).and_then(|oc| oc.get("image")) {
                            Some(img) => cm.insert("image".into(), img.clone()),
                            None => cm.remove("image"),
                        };
                    }
                }
            }
        }
        for k in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match old.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        if int(old, "terminationGracePeriodSeconds").is_some_and(|g| g < 0)
            && int(new, "terminationGracePeriodSeconds") == Some(1)
        {
            if let Some(v) = old.get("terminationGracePeriodSeconds") {
                m.insert("terminationGracePeriodSeconds".into(), v.clone());
            }
        }
    }
    if !json_equal_ignoring_empty(&munged, old) {
        let mut diff = Vec::new();
        json_diff("", old, &munged, &mut diff);
        out.push(forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {POD_UPDATABLE}\n{}",
                diff.join("\n")
            ),
        ));
    }
}

/// Equality as upstream's semantic DeepEqual after decoding: an absent field
/// equals its empty value.
pub(super) fn json_equal_ignoring_empty(a: &Value, b: &Value) -> bool {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::String(s) => s.is_empty(),
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
        }
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.iter().all(|(k, v)| {
                y.get(k)
                    .map_or(empty(v), |w| json_equal_ignoring_empty(v, w))
            }) && y.iter().all(|(k, w)| x.contains_key(k) || empty(w))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(v, w)| json_equal_ignoring_empty(v, w))
        }
        _ => a == b || (empty(a) && empty(b)),
    }
}

/// A short line diff (`-` old, `+` new) naming the changed fields, standing in
/// for upstream's Go struct diff.
fn json_diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = child(path, k);
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                if !json_equal_ignoring_empty(x, y) {
                    json_diff(&p, x, y, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if !json_equal_ignoring_empty(x, y) {
                    json_diff(&index(path, i), x, y, out);
                }
            }
        }
        _ => {
            out.push(format!("- {path}: {old}"));
            out.push(format!("+ {path}: {new}"));
        }
    }
}

/// Upstream `ValidatePodTemplateSpec`.
pub(super) fn pod_template(out: &mut Vec<Cause>, t: &Value, path: &str) {
    let meta = t.get("metadata").unwrap_or(&Value::Null);
    let mp = child(path, "metadata");
    validate_labels(out, meta.get("labels"), &child(&mp, "labels"));
    validate_annotations(out, meta.get("annotations"), &child(&mp, "annotations"));
    let spec = t.get("spec").unwrap_or(&Value::Null);
    pod_spec(out, spec, &child(path, "spec"), false);
    if !arr(spec, "ephemeralContainers").is_empty() {
        out.push(forbidden(
            &child(&child(path, "spec"), "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

fn replication_controller(out: &mut Vec<Cause>, spec: &Value) {
    nonneg(out, spec, "minReadySeconds", "spec");
    let sel = spec.get("selector");
    if sel.and_then(Value::as_object).is_none_or(|m| m.is_empty()) {
        out.push(required("spec.selector", ""));
    }
    nonneg(out, spec, "replicas", "spec");
    let Some(t) = spec.get("template").filter(|v| v.is_object()) else {
        out.push(required("spec.template", ""));
        return;
    };
    let labels = t.get("metadata").and_then(|m| m.get("labels"));
    if let Some(sel) = sel.and_then(Value::as_object).filter(|m| !m.is_empty()) {
        let ok = sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !ok {
            out.push(invalid(
                "spec.template.metadata.labels",
                Bad::Raw(go_string_map(labels)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    pod_template(out, t, "spec.template");
    let ts = t.get("spec").unwrap_or(&Value::Null);
    if st(ts, "restartPolicy") != "Always" {
        out.push(not_supported(
            "spec.template.spec.restartPolicy",
            s(st(ts, "restartPolicy")),
            &["Always"],
        ));
    }
    if present(ts, "activeDeadlineSeconds") {
        out.push(forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicationController is not Supported",
        ));
    }
}

// ---------------------------------------------------------------- services

fn service(out: &mut Vec<Cause>, o: &Value, old: Option<&Value>) {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let ty = st(spec, "type");
    let cips: Vec<&str> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let headless = cips.len() == 1 && cips[0] == "None";
    let ports = arr(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        out.push(required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" if headless => {
            out.push(invalid(
                "spec.clusterIPs[0]",
                s("None"),
                &format!("may not be set to 'None' for {ty} services"),
            ));
        }
        "ExternalName" => {
            if !cips.is_empty() {
                out.push(forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                out.push(forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if present(spec, "ipFamilyPolicy") {
                out.push(forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = st(spec, "externalName").trim_end_matches('.');
            if cname.is_empty() {
                out.push(required("spec.externalName", ""));
            } else {
                for m in f::dns1123_subdomain(cname) {
                    out.push(invalid("spec.externalName", s(cname), &m));
                }
            }
        }
        _ => {}
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        let name = st(p, "name");
        if ports.len() > 1 && name.is_empty() {
            out.push(required(&child(&pp, "name"), ""));
        } else if !name.is_empty() {
            for m in f::dns1123_label(name) {
                out.push(invalid(&child(&pp, "name"), s(name), &m));
            }
            if names.contains(&name) {
                out.push(duplicate(&child(&pp, "name"), s(name)));
            } else {
                names.push(name);
            }
        }
        let port = int(p, "port").unwrap_or(0);
        for m in f::port_num(port) {
            out.push(invalid(&child(&pp, "port"), Bad::Int(port), &m));
        }
        protocol(out, p, &pp);
        port_num_or_name(out, p.get("targetPort"), &child(&pp, "targetPort"));
        if let Some(ap) = p.get("appProtocol").and_then(Value::as_str) {
            for m in f::qualified_name(ap) {
                out.push(invalid(&child(&pp, "appProtocol"), s(ap), &m));
            }
        }
        if let Some(np) = int(p, "nodePort").filter(|n| *n != 0) {
            // The allocator's range check (default 30000-32767).
            if !(30000..=32767).contains(&np) && ty != "ClusterIP" {
                out.push(invalid(&child(&pp, "nodePort"), Bad::Int(np), "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
        }
    }
    validate_labels(out, spec.get("selector"), "spec.selector");
    let aff = st(spec, "sessionAffinity");
    match aff {
        "" => out.push(required("spec.sessionAffinity", "")),
        "ClientIP" => {
            let t = spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_i64);
            match t {
                None => out.push(required(
                    "spec.sessionAffinityConfig",
                    "when session affinity type is ClientIP",
                )),
                Some(t) if t <= 0 || t > 86400 => out.push(invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    Bad::Int(t),
                    "must be greater than 0 and less than 86400",
                )),
                _ => {}
            }
        }
        "None" => {
            if present(spec, "sessionAffinityConfig") {
                out.push(forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => out.push(not_supported(
            "spec.sessionAffinity",
            s(other),
            &["ClientIP", "None"],
        )),
    }
    if ty != "ExternalName" {
        cluster_ips(out, spec, headless);
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or_default();
        if let Some(m) = f::ip_error(ip) {
            out.push(invalid(&index("spec.externalIPs", i), s(ip), m));
        }
    }
    match ty {
        "" => out.push(required("spec.type", "")),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        other => out.push(not_supported(
            "spec.type",
            s(other),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "nodePort").unwrap_or(0) != 0 {
                out.push(forbidden(
                    &child(&index("spec.ports", i), "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports: Vec<(String, i64)> = Vec::new();
    let mut port_keys: Vec<(String, i64)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = st(p, "protocol").to_string();
        let np = int(p, "nodePort").unwrap_or(0);
        if np != 0 {
            if node_ports.contains(&(proto.clone(), np)) {
                out.push(duplicate(
                    &child(&index("spec.ports", i), "nodePort"),
                    Bad::Int(np),
                ));
            }
            node_ports.push((proto.clone(), np));
        }
        let k = (proto, int(p, "port").unwrap_or(0));
        if port_keys.contains(&k) {
            out.push(duplicate(
                &index("spec.ports", i),
                Bad::Raw(format!("core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}", f::go_quote(&k.0), k.1)),
            ));
        }
        port_keys.push(k);
    }
    if !arr(spec, "loadBalancerSourceRanges").is_empty() && ty != "LoadBalancer" {
        out.push(forbidden(
            "spec.LoadBalancerSourceRanges",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if present(spec, "allocateLoadBalancerNodePorts") && ty != "LoadBalancer" {
        out.push(forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if ty == "LoadBalancer" && !present(spec, "allocateLoadBalancerNodePorts") {
        out.push(required("allocateLoadBalancerNodePorts", ""));
    }
    if present(spec, "loadBalancerClass") && ty != "LoadBalancer" {
        out.push(forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    let external = ty == "NodePort" || ty == "LoadBalancer" || !arr(spec, "externalIPs").is_empty();
    let etp = st(spec, "externalTrafficPolicy");
    if !external {
        if !etp.is_empty() {
            out.push(invalid(
                "spec.externalTrafficPolicy",
                s(etp),
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        out.push(required("spec.externalTrafficPolicy", ""));
    } else if etp != "Cluster" && etp != "Local" {
        out.push(not_supported(
            "spec.externalTrafficPolicy",
            s(etp),
            &["Cluster", "Local"],
        ));
    }
    match spec.get("internalTrafficPolicy").and_then(Value::as_str) {
        None if matches!(ty, "NodePort" | "LoadBalancer" | "ClusterIP") => {
            out.push(required("spec.internalTrafficPolicy", ""))
        }
        Some(p) if p != "Cluster" && p != "Local" => out.push(not_supported(
            "spec.internalTrafficPolicy",
            s(p),
            &["Cluster", "Local"],
        )),
        _ => {}
    }
    if let Some(td) = spec.get("trafficDistribution").and_then(Value::as_str) {
        if td != "PreferClose" {
            out.push(not_supported(
                "spec.trafficDistribution",
                s(td),
                &["PreferClose"],
            ));
        }
    }
    if let Some(old) = old {
        let os = old.get("spec").unwrap_or(&Value::Null);
        let ocips: Vec<&str> = arr(os, "clusterIPs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let oheadless = ocips.len() == 1 && ocips[0] == "None";
        if ty != "ExternalName" && st(os, "type") != "ExternalName" && !(headless && oheadless) {
            let render = || {
                Bad::Raw(format!(
                    "[]string{{{}}}",
                    cips.iter()
                        .map(|c| f::go_quote(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            };
            if ocips.len() == cips.len() {
                for (i, ip) in ocips.iter().enumerate() {
                    if cips.get(i) != Some(ip) {
                        out.push(invalid(
                            &index("spec.clusterIPs", i),
                            render(),
                            "may not change once set",
                        ));
                    }
                }
            } else if ocips.len() > cips.len() {
                if cips.is_empty() {
                    out.push(invalid(
                        "spec.clusterIPs[0]",
                        render(),
                        "primary clusterIP can not be unset",
                    ));
                } else if !ocips.is_empty() && cips[0] != ocips[0] {
                    out.push(invalid(
                        "spec.clusterIPs[0]",
                        render(),
                        "may not change once set",
                    ));
                }
            } else if !ocips.is_empty() && cips[0] != ocips[0] {
                out.push(invalid(
                    "spec.clusterIPs[0]",
                    render(),
                    "may not change once set",
                ));
            }
        }
    }
}

fn cluster_ips(out: &mut Vec<Cause>, spec: &Value, headless: bool) {
    let cip = st(spec, "clusterIP");
    let cips: Vec<&str> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let render = || {
        Bad::Raw(format!(
            "[]string{{{}}}",
            cips.iter()
                .map(|c| f::go_quote(c))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    if !cip.is_empty() {
        if cips.is_empty() {
            out.push(required("spec.clusterIPs", ""));
        } else if cips[0] != cip {
            out.push(invalid(
                "spec.clusterIPs",
                render(),
                "first value must match `clusterIP`",
            ));
        }
    } else if !cips.is_empty() {
        out.push(invalid(
            "spec.clusterIPs",
            render(),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, fam) in arr(spec, "ipFamilies").iter().enumerate() {
        let fam = fam.as_str().unwrap_or_default();
        if fam != "IPv4" && fam != "IPv6" {
            out.push(not_supported(
                &index("spec.ipFamilies", i),
                s(fam),
                &["IPv4", "IPv6"],
            ));
        }
        if seen.contains(&fam) {
            out.push(duplicate(&index("spec.ipFamilies", i), s(fam)));
        }
        seen.push(fam);
    }
    if let Some(p) = spec.get("ipFamilyPolicy").and_then(Value::as_str) {
        if !["SingleStack", "PreferDualStack", "RequireDualStack"].contains(&p) {
            out.push(not_supported(
                "spec.ipFamilyPolicy",
                s(p),
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
    }
    let mut bad_ips = false;
    for (i, ip) in cips.iter().enumerate() {
        if i == 0 && *ip == "None" {
            if cips.len() > 1 {
                bad_ips = true;
                out.push(invalid(
                    "spec.clusterIPs",
                    render(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if let Some(m) = f::ip_error(ip) {
            bad_ips = true;
            out.push(invalid(&index("spec.clusterIPs", i), s(*ip), m));
        }
    }
    if cips.len() > 2 {
        out.push(invalid(
            "spec.clusterIPs",
            render(),
            "may only hold up to 2 values",
        ));
    }
    if bad_ips {
        return;
    }
    let is_v6 = |ip: &str| ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv6());
    if cips.len() == 2 && is_v6(cips[0]) == is_v6(cips[1]) {
        out.push(invalid(
            "spec.clusterIPs",
            render(),
            "may specify no more than one IP for each IP family",
        ));
    }
    if !headless {
        for (i, (ip, fam)) in cips.iter().zip(arr(spec, "ipFamilies")).enumerate() {
            let fam = fam.as_str().unwrap_or_default();
            if fam == "IPv4" && is_v6(ip) {
                out.push(invalid(
                    &index("spec.clusterIPs", i),
                    s(*ip),
                    &format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if fam == "IPv6" && !is_v6(ip) {
                out.push(invalid(
                    &index("spec.clusterIPs", i),
                    s(*ip),
                    &format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
}

// ------------------------------------------------- config maps and secrets

const MAX_SECRET_SIZE: usize = 1024 * 1024;

fn immutable_flag(out: &mut Vec<Cause>, o: &Value, old: Option<&Value>, fields: &[&str]) {
    let Some(old) = old else { return };
    if !truthy(old, "immutable") {
        return;
    }
    if !truthy(o, "immutable") {
        out.push(forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        if !json_equal_ignoring_empty(
            o.get(*f).unwrap_or(&Value::Null),
            old.get(*f).unwrap_or(&Value::Null),
        ) {
            out.push(forbidden(f, "field is immutable when `immutable` is set"));
        }
    }
}

fn config_map(out: &mut Vec<Cause>, o: &Value, old: Option<&Value>) {
    immutable_flag(out, o, old, &["data", "binaryData"]);
    let mut total = 0usize;
    let binary = obj(o, "binaryData");
    if let Some(m) = obj(o, "data") {
        for (k, v) in m {
            for msg in f::config_map_key(k) {
                out.push(invalid(&key("data", k), s(k), &msg));
            }
            if binary.is_some_and(|b| b.contains_key(k)) {
                out.push(invalid(
                    &key("data", k),
                    s(k),
                    "duplicate of key present in binaryData",
                ));
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if let Some(m) = binary {
        for (k, v) in m {
            for msg in f::config_map_key(k) {
                out.push(invalid(&key("binaryData", k), s(k), &msg));
            }
            total += decoded_len(v);
        }
    }
    if total > MAX_SECRET_SIZE {
        out.push(too_long("", MAX_SECRET_SIZE));
    }
}

/// Size of base64 data once decoded (what upstream counts).
fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or_default().trim_end_matches('=');
    s.len() * 3 / 4
}

fn secret(out: &mut Vec<Cause>, o: &Value, old: Option<&Value>) {
    if let Some(old) = old {
        let (nt, ot) = (st(o, "type"), st(old, "type"));
        if nt != ot {
            out.push(invalid("type", s(nt), IMMUTABLE));
        }
    }
    immutable_flag(out, o, old, &["data"]);
    let mut total = 0usize;
    let data = obj(o, "data");
    if let Some(m) = data {
        for (k, v) in m {
            for msg in f::config_map_key(k) {
                out.push(invalid(&key("data", k), s(k), &msg));
            }
            total += decoded_len(v);
        }
    }
    if total > MAX_SECRET_SIZE {
        out.push(too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.is_some_and(|m| m.contains_key(k));
    let ann = |k: &str| {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    match st(o, "type") {
        "kubernetes.io/service-account-token"
            if ann("kubernetes.io/service-account.name").is_empty() =>
        {
            out.push(required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            out.push(required("data[.dockercfg]", ""))
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            out.push(required("data[.dockerconfigjson]", ""))
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            out.push(required("data[username]", ""));
            out.push(required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth"
            if data
                .and_then(|m| m.get("ssh-privatekey"))
                .and_then(Value::as_str)
                .is_none_or(str::is_empty) =>
        {
            out.push(required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                out.push(required("data[tls.crt]", ""));
            }
            if !has("tls.key") {
                out.push(required("data[tls.key]", ""));
            }
        }
        _ => {}
    }
}

// ------------------------------------------------------------ nodes, PVCs

fn node(out: &mut Vec<Cause>, o: &Value, old: Option<&Value>) {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut uniq: Vec<(String, String)> = Vec::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        // Upstream reports taint errors under metadata.taints (sic).
        let ip = index("metadata.taints", i);
        let k = st(t, "key");
        for m in f::qualified_name(k) {
            out.push(invalid(&child(&ip, "key"), s(k), &m));
        }
        let errs = f::label_value(st(t, "value"));
        if !errs.is_empty() {
            out.push(invalid(
                &child(&ip, "value"),
                s(st(t, "value")),
                &errs.join(";"),
            ));
        }
        let e = st(t, "effect");
        if e.is_empty() {
            out.push(required(&child(&ip, "effect"), ""));
        } else if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e) {
            out.push(not_supported(
                &child(&ip, "effect"),
                s(e),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
        let pair = (e.to_string(), k.to_string());
        if uniq.contains(&pair) {
            let mut c = duplicate(
                &ip,
                Bad::Raw(format!(
                    "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:<nil>}}",
                    f::go_quote(k),
                    f::go_quote(st(t, "value")),
                    f::go_quote(e)
                )),
            );
            c.message
                .push_str(": taints must be unique by key and effect pair");
            out.push(c);
            continue;
        }
        uniq.push(pair);
    }
    for (i, c) in arr(spec, "podCIDRs").iter().enumerate() {
        let c = c.as_str().unwrap_or_default();
        if !is_cidr(c) {
            out.push(invalid(
                &index("spec.podCIDRs", i),
                s(c),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    if let Some(old) = old {
        let os = old.get("spec").unwrap_or(&Value::Null);
        let (oc, nc) = (arr(os, "podCIDRs"), arr(spec, "podCIDRs"));
        if !oc.is_empty() && oc != nc {
            out.push(forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let opid = st(os, "providerID");
        if !opid.is_empty() && opid != st(spec, "providerID") {
            out.push(forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
        if st(os, "externalID") != st(spec, "externalID") {
            out.push(forbidden("spec.externalID", "may not be updated"));
        }
    }
}

fn is_cidr(c: &str) -> bool {
    let Some((ip, bits)) = c.split_once('/') else {
        return false;
    };
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv6() { 128 } else { 32 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

fn pvc(out: &mut Vec<Cause>, o: &Value, old: Option<&Value>) {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let modes: Vec<&str> = arr(spec, "accessModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if modes.is_empty() {
        out.push(required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    const MODES: &[&str] = &[
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOnce",
        "ReadWriteOncePod",
    ];
    for m in &modes {
        if !MODES.contains(m) {
            out.push(not_supported("spec.accessModes", s(*m), MODES));
        }
    }
    if modes.contains(&"ReadWriteOncePod")
        && modes
            .iter()
            .any(|m| *m != "ReadWriteOncePod" && MODES.contains(m))
    {
        out.push(forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    if let Some(sel) = spec.get("selector").filter(|v| v.is_object()) {
        validate_label_selector(out, sel, "spec.selector");
    }
    match spec.pointer("/resources/requests/storage") {
        None => out.push(required("spec.resources[storage]", "")),
        Some(v) => {
            if let Some(q) = quantity(out, v, "spec.resources[storage]") {
                if q.is_negative() || q.is_zero() {
                    out.push(invalid(
                        "spec.resources[storage]",
                        s(q.to_upstream_string()),
                        "must be greater than zero",
                    ));
                }
            }
        }
    }
    if let Some(sc) = spec
        .get("storageClassName")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
    {
        for m in f::dns1123_subdomain(sc) {
            out.push(invalid("spec.storageClassName", s(sc), &m));
        }
    }
    if let Some(vm) = spec.get("volumeMode").and_then(Value::as_str) {
        if vm != "Block" && vm != "Filesystem" {
            out.push(not_supported(
                "spec.volumeMode",
                s(vm),
                &["Block", "Filesystem"],
            ));
        }
    }
    if let Some(old) = old {
        let os = old.get("spec").unwrap_or(&Value::Null);
        let mut a = spec.clone();
        let mut b = os.clone();
        let bound = o.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
        for (x, is_new) in [(&mut a, true), (&mut b, false)] {
            if let Some(m) = x.as_object_mut() {
                if st(os, "volumeName").is_empty() {
                    m.remove("volumeName");
                }
                if bound {
                    if let Some(r) = m
                        .get_mut("resources")
                        .and_then(|r| r.get_mut("requests"))
                        .and_then(Value::as_object_mut)
                    {
                        r.remove("storage");
                    }
                    m.remove("volumeAttributesClassName");
                }
                let _ = is_new;
            }
        }
        if !json_equal_ignoring_empty(&a, &b) {
            let mut diff = Vec::new();
            json_diff("", &b, &a, &mut diff);
            out.push(forbidden("spec", &format!("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}", diff.join("\n"))));
        }
        let q = |v: &Value| {
            v.pointer("/resources/requests/storage")
                .and_then(|q| parse_json(q).ok())
        };
        if let (Some(n), Some(o)) = (q(spec), q(os)) {
            if n < o {
                let cap = old
                    .pointer("/status/capacity/storage")
                    .and_then(|c| parse_json(c).ok());
                if cap.is_some_and(|c| n <= c) {
                    out.push(forbidden(
                        "spec.resources.requests.storage",
                        "field can not be less than status.capacity",
                    ));
                }
            }
        }
    }
}
