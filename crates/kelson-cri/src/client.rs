//! CRI v1 client over a Unix socket.

use crate::api::image_service_client::ImageServiceClient;
use crate::api::runtime_service_client::RuntimeServiceClient;
use crate::api::{VersionRequest, VersionResponse};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// The kubelet's limit for CRI messages (ListContainers on a busy node can
/// exceed gRPC's 4 MiB default).
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CRI endpoint {0:?} is not a unix socket (want unix:///path or /path)")]
    Endpoint(String),
    #[error("connecting to CRI socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI call failed: {0}")]
    Status(#[from] tonic::Status),
}

/// Parses a `--container-runtime-endpoint` value: `unix:///path` or a bare
/// absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ClientError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(ClientError::Endpoint(endpoint.to_string()))
    }
}

/// The two CRI services on one connection.
#[derive(Clone, Debug)]
pub struct Cri {
    path: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI socket at `path` (eagerly: a missing socket is an
    /// error here, not at the first call).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let socket = path.clone();
        // The URI is required by tonic but unused: the connector dials the
        // socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| ClientError::Connect {
                path: path.clone(),
                source,
            })?;
        let runtime = RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let image = ImageServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Ok(Cri {
            path,
            runtime,
            image,
        })
    }

    /// Connects to a `--container-runtime-endpoint` value.
    pub async fn connect_endpoint(endpoint: &str) -> Result<Self, ClientError> {
        Cri::connect(socket_path(endpoint)?).await
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// The RuntimeService (sandboxes, containers, exec, stats).
    pub fn runtime(&mut self) -> &mut RuntimeServiceClient<Channel> {
        &mut self.runtime
    }

    /// The ImageService (pull, list, status, remove, fs info).
    pub fn images(&mut self) -> &mut ImageServiceClient<Channel> {
        &mut self.image
    }

    /// A clone of the runtime client, for use from another task.
    pub fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    pub fn image_client(&self) -> ImageServiceClient<Channel> {
        self.image.clone()
    }

    /// `RuntimeService.Version`, the readiness probe for a runtime.
    pub async fn version(&mut self) -> Result<VersionResponse, ClientError> {
        let resp = self
            .runtime
            .version(VersionRequest {
                version: "v1".to_string(),
            })
            .await?;
        Ok(resp.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").expect("unix"),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").expect("bare"),
            PathBuf::from("/run/x.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Cri::connect(dir.path().join("none.sock")).await;
        assert!(matches!(err, Err(ClientError::Connect { .. })), "{err:?}");
    }
}
