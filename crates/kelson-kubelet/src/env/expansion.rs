//! `$(VAR)` expansion as upstream's `third_party/forked/golang/expansion`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, VolumeMount};

use super::EnvError;

/// Expands `$(NAME)` references with `lookup`. As upstream:
/// * an unknown name is left as written (`$(NAME)`);
/// * `$$` is an escaped `$`, so `$$(NAME)` yields `$(NAME)`;
/// * a `$` followed by anything else, an unterminated `$(`, or a trailing
///   `$` is kept literally.
///
/// Upstream works on bytes and mangles a multi-byte character right after a
/// `$`; here the whole character is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            // Bytes consumed after the `$`, less one (the loop adds it).
            let advance = match b[cursor + 1] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest[1..].find(')') {
                    Some(i) => {
                        let name = &rest[1..1 + i];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i + 2
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `rest` is non-empty here, so a char exists.
                    let ch = rest.chars().next().unwrap_or('$');
                    out.push('$');
                    out.push(ch);
                    ch.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

fn env_map(env: &[(String, String)]) -> BTreeMap<&str, &str> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The container's command and args with `$(VAR)` expanded against its final
/// environment (upstream `ExpandContainerCommandAndArgs`).
pub fn expand_command(
    container: &Container,
    env: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let map = env_map(env);
    let lookup = |k: &str| map.get(k).map(|v| v.to_string());
    let run = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|s| expand(s, lookup))
            .collect()
    };
    (run(&container.command), run(&container.args))
}

/// A volume mount's `subPathExpr` expanded against the container's
/// environment (upstream `ExpandContainerVolumeMounts`): every referenced
/// variable must be set and non-empty. `Ok(None)` when the mount has no
/// `subPathExpr`.
pub fn expand_sub_path(
    mount: &VolumeMount,
    env: &[(String, String)],
) -> Result<Option<String>, EnvError> {
    let Some(expr) = mount.sub_path_expr.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let map = env_map(env);
    let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let out = expand(expr, |k| match map.get(k) {
        Some(v) if !v.is_empty() => Some(v.to_string()),
        _ => {
            missing.borrow_mut().insert(k.to_string());
            Some(String::new())
        }
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(EnvError::MissingSubPathValue(names.join(", ")));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(s: &str) -> String {
        expand(s, |k| match k {
            "VAR_A" => Some("A".into()),
            "VAR_B" => Some("B".into()),
            "VAR_EMPTY" => Some(String::new()),
            _ => None,
        })
    }

    #[test]
    fn expansion_matches_upstream_cases() {
        // Cases from upstream's expand_test.go semantics.
        assert_eq!(vars("$(VAR_A)"), "A");
        assert_eq!(vars("___$(VAR_A)___"), "___A___");
        assert_eq!(vars("$(VAR_A)-$(VAR_B)"), "A-B");
        assert_eq!(vars("$(VAR_EMPTY)x"), "x");
        assert_eq!(vars("$(UNKNOWN)"), "$(UNKNOWN)");
        assert_eq!(vars("$$(VAR_A)"), "$(VAR_A)");
        assert_eq!(vars("$$$(VAR_A)"), "$A");
        assert_eq!(vars("$$$$(VAR_A)"), "$$(VAR_A)");
        assert_eq!(vars("$VAR_A"), "$VAR_A");
        assert_eq!(vars("$(VAR_A"), "$(VAR_A");
        assert_eq!(vars("foo$"), "foo$");
        assert_eq!(vars("$"), "$");
        assert_eq!(vars("$()"), "$()");
        assert_eq!(vars("$(VAR_A$(VAR_B)"), "$(VAR_A$(VAR_B)");
        assert_eq!(vars("héllo $(VAR_A) wörld"), "héllo A wörld");
        assert_eq!(vars("$é$(VAR_B)"), "$éB");
    }

    #[test]
    fn command_and_args_use_final_env() {
        let c = Container {
            name: "c".into(),
            command: Some(vec!["echo".into(), "$(GREETING)".into()]),
            args: Some(vec!["$(WHO) $$(WHO) $(NOPE)".into()]),
            ..Default::default()
        };
        let env = vec![
            ("GREETING".to_string(), "hello".to_string()),
            ("WHO".to_string(), "world".to_string()),
        ];
        let (cmd, args) = expand_command(&c, &env);
        assert_eq!(cmd, vec!["echo", "hello"]);
        assert_eq!(args, vec!["world $(WHO) $(NOPE)"]);
    }

    #[test]
    fn sub_path_expr_requires_every_variable() {
        let env = vec![
            ("POD".to_string(), "web-0".to_string()),
            ("EMPTY".to_string(), String::new()),
        ];
        let mut m = VolumeMount {
            name: "v".into(),
            mount_path: "/data".into(),
            sub_path_expr: Some("logs/$(POD)".into()),
            ..Default::default()
        };
        assert_eq!(
            expand_sub_path(&m, &env).unwrap().as_deref(),
            Some("logs/web-0")
        );
        m.sub_path_expr = Some("$(ZED)/$(EMPTY)/$(POD)/$(ALPHA)".into());
        assert_eq!(
            expand_sub_path(&m, &env).unwrap_err().to_string(),
            "missing value for ALPHA, EMPTY, ZED"
        );
        m.sub_path_expr = None;
        assert_eq!(expand_sub_path(&m, &env).unwrap(), None);
    }
}
