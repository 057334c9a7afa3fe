//! An in-memory CRI runtime for unit tests.

use std::collections::HashMap;
use std::time::Duration;

use kelson_cri::api;
use parking_lot::Mutex;

use super::cri::{CriError, CriRuntime, ExecOutput};

#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub sandbox: String,
    pub config: api::ContainerConfig,
    pub state: api::ContainerState,
    pub created: i64,
    pub started: i64,
    pub finished: i64,
    pub exit_code: i32,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct FakeSandbox {
    pub config: api::PodSandboxConfig,
    pub ready: bool,
    pub created: i64,
}

#[derive(Default)]
pub struct FakeState {
    pub sandboxes: HashMap<String, FakeSandbox>,
    pub containers: HashMap<String, FakeContainer>,
    pub images: HashMap<String, api::Image>,
    pub next: i64,
    /// Set: every pull fails with it.
    pub pull_error: Option<CriError>,
    pub pulls: Vec<(String, Option<api::AuthConfig>)>,
    pub execs: Vec<(String, Vec<String>)>,
    pub stops: Vec<(String, i64)>,
    /// Time base of created/started/finished (ns).
    pub now: i64,
}

#[derive(Default)]
pub struct FakeCri {
    pub state: Mutex<FakeState>,
}

impl FakeCri {
    pub fn with_images(images: &[&str]) -> FakeCri {
        let f = FakeCri::default();
        for i in images {
            f.add_image(i, None);
        }
        f
    }

    pub fn add_image(&self, name: &str, uid: Option<i64>) {
        self.state.lock().images.insert(
            name.to_string(),
            api::Image {
                id: format!("sha256:{name}"),
                repo_tags: vec![name.to_string()],
                size: 1234,
                uid: uid.map(|value| api::Int64Value { value }),
                ..Default::default()
            },
        );
    }

    fn tick(st: &mut FakeState) -> i64 {
        st.next += 1;
        st.now + st.next
    }

    pub fn set_now(&self, now: i64) {
        self.state.lock().now = now;
    }

    /// The container of `name` created last.
    pub fn latest(&self, name: &str) -> Option<(String, FakeContainer)> {
        let st = self.state.lock();
        st.containers
            .iter()
            .filter(|(_, c)| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .max_by_key(|(_, c)| c.created)
            .map(|(id, c)| (id.clone(), c.clone()))
    }

    /// Makes the container exit.
    pub fn exit(&self, id: &str, code: i32, reason: &str) {
        let mut st = self.state.lock();
        let t = Self::tick(&mut st);
        if let Some(c) = st.containers.get_mut(id) {
            c.state = api::ContainerState::ContainerExited;
            c.exit_code = code;
            c.reason = reason.to_string();
            c.finished = t;
        }
    }

    pub fn count(&self, name: &str) -> usize {
        let st = self.state.lock();
        st.containers
            .values()
            .filter(|c| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .count()
    }
}

fn not_found(what: &str, id: &str) -> CriError {
    CriError::NotFound(format!("{what} \"{id}\" not found"))
}

#[async_trait::async_trait]
impl CriRuntime for FakeCri {
    async fn version(&self) -> Result<(String, String), CriError> {
        Ok(("fake".into(), "0.1".into()))
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError> {
        let mut st = self.state.lock();
        let t = Self::tick(&mut st);
        let id = format!("sb{}", st.next);
        st.sandboxes.insert(
            id.clone(),
            FakeSandbox {
                config,
                ready: true,
                created: t,
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut st = self.state.lock();
        let t = Self::tick(&mut st);
        let sb = st
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        sb.ready = false;
        for c in st.containers.values_mut().filter(|c| c.sandbox == id) {
            if c.state == api::ContainerState::ContainerRunning {
                c.state = api::ContainerState::ContainerExited;
                c.exit_code = 137;
                c.reason = "Error".into();
                c.finished = t;
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut st = self.state.lock();
        st.sandboxes
            .remove(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        st.containers.retain(|_, c| c.sandbox != id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, CriError> {
        let st = self.state.lock();
        let sb = st
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        let hostnet = sb
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        Ok(api::PodSandboxStatus {
            id: id.to_string(),
            metadata: sb.config.metadata.clone(),
            state: if sb.ready {
                api::PodSandboxState::SandboxReady as i32
            } else {
                api::PodSandboxState::SandboxNotready as i32
            },
            created_at: sb.created,
            network: Some(api::PodSandboxNetworkStatus {
                ip: if hostnet
                    .as_ref()
                    .is_some_and(|n| n.network == api::NamespaceMode::Node as i32)
                {
                    String::new()
                } else {
                    "10.42.0.7".into()
                },
                additional_ips: vec![],
            }),
            linux: Some(api::LinuxPodSandboxStatus {
                namespaces: Some(api::Namespace { options: hostnet }),
            }),
            labels: sb.config.labels.clone(),
            annotations: sb.config.annotations.clone(),
            runtime_handler: String::new(),
        })
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<api::PodSandbox>, CriError> {
        let st = self.state.lock();
        Ok(st
            .sandboxes
            .iter()
            .map(|(id, sb)| api::PodSandbox {
                id: id.clone(),
                metadata: sb.config.metadata.clone(),
                state: if sb.ready {
                    api::PodSandboxState::SandboxReady as i32
                } else {
                    api::PodSandboxState::SandboxNotready as i32
                },
                created_at: sb.created,
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        _sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut st = self.state.lock();
        if !st.sandboxes.contains_key(sandbox_id) {
            return Err(not_found("sandbox", sandbox_id));
        }
        let t = Self::tick(&mut st);
        let id = format!("c{}", st.next);
        st.containers.insert(
            id.clone(),
            FakeContainer {
                sandbox: sandbox_id.to_string(),
                config,
                state: api::ContainerState::ContainerCreated,
                created: t,
                started: 0,
                finished: 0,
                exit_code: 0,
                reason: String::new(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut st = self.state.lock();
        let t = Self::tick(&mut st);
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("container", id))?;
        c.state = api::ContainerState::ContainerRunning;
        c.started = t;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), CriError> {
        let mut st = self.state.lock();
        let t = Self::tick(&mut st);
        st.stops.push((id.to_string(), timeout));
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("container", id))?;
        if c.state == api::ContainerState::ContainerRunning {
            c.state = api::ContainerState::ContainerExited;
            c.exit_code = 137;
            c.reason = "Error".into();
            c.finished = t;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.state
            .lock()
            .containers
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| not_found("container", id))
    }

    async fn list_containers(&self) -> Result<Vec<api::Container>, CriError> {
        let st = self.state.lock();
        Ok(st
            .containers
            .iter()
            .map(|(id, c)| api::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                state: c.state as i32,
                created_at: c.created,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError> {
        let st = self.state.lock();
        let c = st
            .containers
            .get(id)
            .ok_or_else(|| not_found("container", id))?;
        let sb = st.sandboxes.get(&c.sandbox);
        let log_path = sb
            .map(|s| format!("{}/{}", s.config.log_directory, c.config.log_path))
            .unwrap_or_default();
        Ok(api::ContainerStatus {
            id: id.to_string(),
            metadata: c.config.metadata.clone(),
            state: c.state as i32,
            created_at: c.created,
            started_at: c.started,
            finished_at: c.finished,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: c
                .config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            reason: c.reason.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: c.config.mounts.clone(),
            log_path,
            ..Default::default()
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        _timeout: Duration,
    ) -> Result<ExecOutput, CriError> {
        self.state.lock().execs.push((id.to_string(), cmd));
        Ok(ExecOutput::default())
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        let st = self.state.lock();
        Ok(st
            .images
            .get(image)
            .or_else(|| st.images.values().find(|i| i.id == image))
            .cloned())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        _sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let err = {
            let mut st = self.state.lock();
            st.pulls.push((image.to_string(), auth));
            st.pull_error.clone()
        };
        if let Some(e) = err {
            return Err(e);
        }
        self.add_image(image, None);
        Ok(format!("sha256:{image}"))
    }
}
