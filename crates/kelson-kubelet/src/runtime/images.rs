//! Image references, pull policies and registry credentials from a pod's
//! image pull secrets (upstream `images/image_manager.go` and
//! `credentialprovider` keyring matching).

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Secret};
use kelson_cri::api::AuthConfig;

/// Upstream `applyDefaultImageTag`: `:latest` when the reference has
/// neither tag nor digest.
pub fn with_default_tag(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The container's pull policy; the API server's default when unset
/// (`Always` for `:latest` or untagged, else `IfNotPresent`).
pub fn pull_policy(c: &Container) -> String {
    if let Some(p) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = c.image.as_deref().unwrap_or("");
    let tagged = with_default_tag(image);
    if !image.contains('@') && tagged.ends_with(":latest") {
        "Always".into()
    } else {
        "IfNotPresent".into()
    }
}

/// Upstream `shouldPullImage`.
pub fn should_pull(policy: &str, present: bool) -> bool {
    match policy {
        "Never" => false,
        "Always" => true,
        _ => !present,
    }
}

/// The registry host and repository path of an image reference, with
/// Docker Hub's defaults.
fn split_image(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
            (f.to_string(), r.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    // Drop the tag from the last component.
    let path = match rest.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{}", last.split(':').next().unwrap_or(last)),
        None => rest.split(':').next().unwrap_or(&rest).to_string(),
    };
    (normalize_host(&first), path)
}

fn normalize_host(h: &str) -> String {
    match h {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        other => other.to_string(),
    }
}

/// A dockercfg key (`https://index.docker.io/v1/`, `registry:5000/team`)
/// as host and path prefix.
fn split_key(key: &str) -> (String, String) {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let path = path.trim_end_matches('/');
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    (normalize_host(host), path.to_string())
}

/// Credentials for `image` from `kubernetes.io/dockerconfigjson` and
/// `kubernetes.io/dockercfg` secrets, best (longest path) match first.
pub fn credentials_for(image: &str, secrets: &[Secret]) -> Vec<AuthConfig> {
    let (host, path) = split_image(image);
    let mut found: Vec<(usize, AuthConfig)> = Vec::new();
    for s in secrets {
        let data = s.data.as_ref();
        let (auths, is_json) = match data {
            Some(d) if d.contains_key(".dockerconfigjson") => (d.get(".dockerconfigjson"), true),
            Some(d) => (d.get(".dockercfg"), false),
            None => (None, false),
        };
        let Some(bytes) = auths else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes.0) else {
            continue;
        };
        let entries = if is_json {
            v.get("auths").cloned()
        } else {
            Some(v)
        };
        let Some(serde_json::Value::Object(entries)) = entries else {
            continue;
        };
        for (key, entry) in entries {
            let (khost, kpath) = split_key(&key);
            if khost != host {
                continue;
            }
            if !(kpath.is_empty() || path == kpath || path.starts_with(&format!("{kpath}/"))) {
                continue;
            }
            let field = |n: &str| {
                entry
                    .get(n)
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let (mut username, mut password) = (field("username"), field("password"));
            let auth = field("auth");
            if !auth.is_empty() && username.is_empty() {
                if let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(&auth) {
                    let dec = String::from_utf8_lossy(&dec).into_owned();
                    if let Some((u, p)) = dec.split_once(':') {
                        username = u.to_string();
                        password = p.to_string();
                    }
                }
            }
            found.push((
                kpath.len(),
                AuthConfig {
                    username,
                    password,
                    server_address: key.clone(),
                    identity_token: field("identitytoken"),
                    registry_token: field("registrytoken"),
                    ..Default::default()
                },
            ));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn default_tags_and_policies() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("reg:5000/app"), "reg:5000/app:latest");
        assert_eq!(with_default_tag("reg:5000/app:1"), "reg:5000/app:1");
        assert_eq!(with_default_tag("app@sha256:abc"), "app@sha256:abc");
        let c = |img: &str| Container {
            name: "c".into(),
            image: Some(img.into()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36")), "IfNotPresent");
        assert!(!should_pull("Never", false));
        assert!(should_pull("IfNotPresent", false));
        assert!(!should_pull("IfNotPresent", true));
    }

    #[test]
    fn dockerconfigjson_matches_by_registry() {
        let cfg = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hub:pw")},
            "registry.example:5000/team": {"username": "u", "password": "p"},
        }});
        let secret = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(
                [(
                    ".dockerconfigjson".to_string(),
                    ByteString(cfg.to_string().into_bytes()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let hub = credentials_for("busybox:1", std::slice::from_ref(&secret));
        assert_eq!(hub.len(), 1);
        assert_eq!(
            (hub[0].username.as_str(), hub[0].password.as_str()),
            ("hub", "pw")
        );
        let team = credentials_for(
            "registry.example:5000/team/app:2",
            std::slice::from_ref(&secret),
        );
        assert_eq!(team[0].username, "u");
        assert!(credentials_for("registry.example:5000/other/app", &[secret]).is_empty());
    }
}
