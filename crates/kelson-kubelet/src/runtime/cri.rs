//! The CRI calls the runtime manager makes, behind a trait so unit tests can
//! use an in-memory runtime; [`kelson_cri::Cri`] is the real one.

use std::time::Duration;

use kelson_cri::api;

/// A failed CRI call. `NotFound` is separate because upstream ignores it
/// when stopping or removing things that are already gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriError {
    #[error("rpc error: code = NotFound desc = {0}")]
    NotFound(String),
    /// Go's gRPC error text, which upstream passes on to users verbatim
    /// (e.g. in `ErrImagePull` messages).
    #[error("rpc error: code = {code} desc = {message}")]
    Other { code: String, message: String },
}

impl CriError {
    /// The gRPC status message alone (upstream's `status.Message()`), as
    /// used in "Error: ..." events and container waiting messages.
    pub fn message(&self) -> &str {
        match self {
            CriError::NotFound(m) => m,
            CriError::Other { message, .. } => message,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::NotFound(_))
    }
}

impl From<tonic::Status> for CriError {
    fn from(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::NotFound {
            return CriError::NotFound(s.message().to_string());
        }
        CriError::Other {
            code: format!("{:?}", s.code()),
            message: s.message().to_string(),
        }
    }
}

/// Result of `ExecSync`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The subset of CRI v1 (RuntimeService + ImageService) the kubelet's
/// runtime manager uses.
#[async_trait::async_trait]
pub trait CriRuntime: Send + Sync + 'static {
    /// `(runtime_name, runtime_version)` from `Version`.
    async fn version(&self) -> Result<(String, String), CriError>;
    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError>;
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError>;
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError>;
    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, CriError>;
    async fn list_pod_sandboxes(&self) -> Result<Vec<api::PodSandbox>, CriError>;
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError>;
    async fn start_container(&self, id: &str) -> Result<(), CriError>;
    /// Stops with `timeout` seconds between SIGTERM (or the image's stop
    /// signal) and SIGKILL.
    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), CriError>;
    async fn remove_container(&self, id: &str) -> Result<(), CriError>;
    async fn list_containers(&self) -> Result<Vec<api::Container>, CriError>;
    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError>;
    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, CriError>;
    /// The image as the runtime knows it; `None` when absent.
    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError>;
    /// Pulls and returns the image reference (`sha256:...`).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, CriError>;
}

fn spec(image: &str) -> Option<api::ImageSpec> {
    Some(api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[async_trait::async_trait]
impl CriRuntime for kelson_cri::Cri {
    async fn version(&self) -> Result<(String, String), CriError> {
        let v = self
            .runtime_client()
            .version(api::VersionRequest {
                version: "v1".into(),
            })
            .await?
            .into_inner();
        Ok((v.runtime_name, v.runtime_version))
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError> {
        Ok(self
            .runtime_client()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.runtime_client()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.runtime_client()
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await?;
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, CriError> {
        self.runtime_client()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .ok_or_else(|| CriError::Other {
                code: "Unknown".into(),
                message: "pod sandbox status is nil".into(),
            })
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<api::PodSandbox>, CriError> {
        Ok(self
            .runtime_client()
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        Ok(self
            .runtime_client()
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await?
            .into_inner()
            .container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        self.runtime_client()
            .start_container(api::StartContainerRequest {
                container_id: id.into(),
            })
            .await?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), CriError> {
        self.runtime_client()
            .stop_container(api::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.runtime_client()
            .remove_container(api::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await?;
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<api::Container>, CriError> {
        Ok(self
            .runtime_client()
            .list_containers(api::ListContainersRequest { filter: None })
            .await?
            .into_inner()
            .containers)
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError> {
        self.runtime_client()
            .container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .ok_or_else(|| CriError::Other {
                code: "Unknown".into(),
                message: "container status is nil".into(),
            })
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, CriError> {
        let r = self
            .runtime_client()
            .exec_sync(api::ExecSyncRequest {
                container_id: id.into(),
                cmd,
                timeout: timeout.as_secs() as i64,
            })
            .await?
            .into_inner();
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        Ok(self
            .image_client()
            .image_status(api::ImageStatusRequest {
                image: spec(image),
                verbose: false,
            })
            .await?
            .into_inner()
            .image)
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        Ok(self
            .image_client()
            .pull_image(api::PullImageRequest {
                image: spec(image),
                auth,
                sandbox_config,
            })
            .await?
            .into_inner()
            .image_ref)
    }
}
