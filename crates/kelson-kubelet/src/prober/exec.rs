//! Exec probes (upstream `pkg/probe/exec`), run through CRI `ExecSync`.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use kelson_apimachinery::labels::go_quote;

use super::{ProbeError, ProbeOutcome, ProbeResult};
use crate::env::expand;

/// Output kept from an exec probe (upstream's maxReadLength, 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;
/// Slack on top of the probe's timeout for the runtime to answer (upstream's
/// CRI client adds its default 2 minute timeout).
const RUNTIME_SLACK: Duration = Duration::from_secs(120);

/// Why an exec did not produce an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command ran past its timeout (CRI `DeadlineExceeded`).
    #[error("timed out")]
    Timeout,
    /// Any other runtime error, with its message.
    #[error("{0}")]
    Failed(String),
}

/// Runs a command in a container and waits for it (CRI `ExecSync`).
#[async_trait::async_trait]
pub trait ExecRunner: Send + Sync + 'static {
    /// Exit code, stdout and stderr of `cmd` in `container_id` (a bare CRI
    /// ID), stopped by the runtime after `timeout`.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), ExecError>;
}

#[async_trait::async_trait]
impl ExecRunner for kelson_cri::Cri {
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), ExecError> {
        let mut req = tonic::Request::new(kelson_cri::api::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        });
        req.set_timeout(timeout + RUNTIME_SLACK);
        match self.runtime_client().exec_sync(req).await {
            Ok(resp) => {
                let r = resp.into_inner();
                Ok((r.exit_code, r.stdout, r.stderr))
            }
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ExecError::Timeout),
            Err(s) => Err(ExecError::Failed(format!(
                "rpc error: code = {} desc = {}",
                super::grpc::code_name(s.code()),
                s.message()
            ))),
        }
    }
}

/// The probe's command with `$(VAR)` expanded from the container's own env
/// values only (upstream ExpandContainerCommandOnlyStatic: `valueFrom`
/// variables count as empty).
pub(super) fn expand_static(command: &[String], container: &Container) -> Vec<String> {
    let vars: HashMap<&str, &str> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
        .collect();
    command
        .iter()
        .map(|s| expand(s, |k| vars.get(k).map(|v| v.to_string())))
        .collect()
}

/// Exit code 0 is success, any other code a failure with the command's
/// output; a timeout is a failure too (upstream with ExecProbeTimeout on).
pub(super) async fn probe(
    runner: &dyn ExecRunner,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    let timed_out = || {
        ProbeOutcome::new(
            ProbeResult::Failure,
            format!("command {} timed out", go_quote(&cmd.join(" "))),
        )
    };
    let call = runner.exec_sync(container_id, cmd.clone(), timeout);
    let res = match tokio::time::timeout(timeout + RUNTIME_SLACK, call).await {
        Ok(r) => r,
        Err(_) => return Ok(timed_out()),
    };
    match res {
        Ok((code, stdout, stderr)) => {
            let mut data = stdout;
            data.extend_from_slice(&stderr);
            data.truncate(MAX_OUTPUT);
            let output = String::from_utf8_lossy(&data).into_owned();
            let result = if code == 0 {
                ProbeResult::Success
            } else {
                ProbeResult::Failure
            };
            Ok(ProbeOutcome::new(result, output))
        }
        Err(ExecError::Timeout) => Ok(timed_out()),
        Err(ExecError::Failed(msg)) => Err(ProbeError::Exec(msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
    use std::sync::Mutex;

    type Reply = Result<(i32, Vec<u8>, Vec<u8>), ExecError>;

    struct Scripted {
        reply: Mutex<Option<Reply>>,
        seen: Mutex<Vec<(String, Vec<String>, Duration)>>,
    }

    #[async_trait::async_trait]
    impl ExecRunner for Scripted {
        async fn exec_sync(
            &self,
            container_id: &str,
            cmd: Vec<String>,
            timeout: Duration,
        ) -> Result<(i32, Vec<u8>, Vec<u8>), ExecError> {
            self.seen
                .lock()
                .unwrap()
                .push((container_id.to_string(), cmd, timeout));
            self.reply
                .lock()
                .unwrap()
                .take()
                .unwrap_or(Err(ExecError::Failed("no reply".into())))
        }
    }

    fn runner(reply: Reply) -> Scripted {
        Scripted {
            reply: Mutex::new(Some(reply)),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn cmd(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn exit_code_decides_and_output_is_stdout_then_stderr() {
        let r = runner(Ok((0, b"ok".to_vec(), vec![])));
        let out = probe(&r, "c1", cmd(&["true"]), Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(out.result, ProbeResult::Success);
        assert_eq!(
            r.seen.lock().unwrap()[0],
            ("c1".to_string(), cmd(&["true"]), Duration::from_secs(3))
        );

        let r = runner(Ok((1, b"out ".to_vec(), b"err".to_vec())));
        let out = probe(&r, "c1", cmd(&["false"]), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(out, ProbeOutcome::new(ProbeResult::Failure, "out err"));
    }

    #[tokio::test]
    async fn output_is_capped_at_10_kib() {
        let r = runner(Ok((2, vec![b'x'; 20_000], b"tail".to_vec())));
        let out = probe(&r, "c", cmd(&["x"]), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(out.output.len(), 10 * 1024);
    }

    #[tokio::test]
    async fn timeout_is_a_failure_naming_the_command() {
        let r = runner(Err(ExecError::Timeout));
        let out = probe(&r, "c", cmd(&["sleep", "10"]), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            out,
            ProbeOutcome::new(ProbeResult::Failure, "command \"sleep 10\" timed out")
        );
    }

    #[tokio::test]
    async fn runtime_errors_are_probe_errors() {
        let r = runner(Err(ExecError::Failed(
            "rpc error: code = NotFound desc = gone".into(),
        )));
        let err = probe(&r, "c", cmd(&["x"]), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "rpc error: code = NotFound desc = gone");
    }

    #[test]
    fn command_expands_only_static_env() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("one".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "POD".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let got = expand_static(&cmd(&["echo", "$(A)", "[$(POD)]", "$(NOPE)", "$$(A)"]), &c);
        assert_eq!(got, cmd(&["echo", "one", "[]", "$(NOPE)", "$(A)"]));
    }
}
