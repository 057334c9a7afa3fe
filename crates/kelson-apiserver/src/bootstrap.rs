//! Objects every cluster has from the start, as upstream's bootstrap
//! controllers create them: the four system namespaces, the two system
//! PriorityClasses and the `kubernetes` Service in `default`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::json;

use crate::handler::Api;
use crate::registry::WriteOptions;
use crate::status::ApiError;
use crate::strategy;

pub const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates what is missing; existing objects are left alone.
pub async fn ensure(api: &Arc<Api>, service_ip: Ipv4Addr, https_port: u16) -> Result<(), ApiError> {
    let ns_res = crate::handler::namespaces(api)?;
    for ns in NAMESPACES {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        strategy::apply_defaults(&ns_res, &mut obj);
        match api
            .registry
            .create(&ns_res, None, obj, &WriteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    // Upstream's scheduling storage creates the two system PriorityClasses.
    if let Some(pc_res) = api.find("scheduling.k8s.io", "v1", "priorityclasses") {
        for mut pc in crate::admission::system_priority_classes() {
            strategy::apply_defaults(&pc_res, &mut pc);
            match api
                .registry
                .create(&pc_res, None, pc, &WriteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
    }
    let svc_res = api
        .find("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services are not served"))?;
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": service_ip.to_string(),
            "clusterIPs": [service_ip.to_string()],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": https_port}],
            "sessionAffinity": "None",
        },
    });
    strategy::apply_defaults(&svc_res, &mut svc);
    match api
        .registry
        .create(&svc_res, Some("default"), svc, &WriteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}
