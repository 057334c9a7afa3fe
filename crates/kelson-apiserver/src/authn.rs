//! Authentication: x509 client certificates signed by the cluster CA, and
//! bearer tokens from a static token file (upstream's CSV format).

use std::collections::HashMap;
use std::path::Path;

use crate::handler::User;

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {why}")]
    Format {
        path: String,
        line: usize,
        why: String,
    },
}

/// Tokens from `--token-auth-file`: `token,user,uid[,"group1,group2"]`.
#[derive(Default, Clone)]
pub struct TokenFile {
    tokens: HashMap<String, User>,
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<TokenFile, AuthnError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthnError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TokenFile::parse(&text).map_err(|(line, why)| AuthnError::Format {
            path: path.display().to_string(),
            line,
            why,
        })
    }

    pub fn parse(text: &str) -> Result<TokenFile, (usize, String)> {
        let mut tokens = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err((
                    i + 1,
                    "expected at least 3 comma-separated fields: token,user,uid".into(),
                ));
            }
            let token = fields[0].trim().to_string();
            if token.is_empty() {
                return Err((i + 1, "empty token".into()));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                token,
                User {
                    name: fields[1].trim().to_string(),
                    uid: fields[2].trim().to_string(),
                    groups,
                },
            );
        }
        Ok(TokenFile { tokens })
    }

    pub fn user(&self, token: &str) -> Option<User> {
        self.tokens.get(token).cloned()
    }
}

/// Splits one CSV line, honouring double quotes (the group list is quoted).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The user named by a verified client certificate: CN is the user, each O
/// a group.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(User {
        name,
        uid: String::new(),
        groups,
    })
}

/// Everyone authenticated is in system:authenticated, as upstream adds.
pub fn with_default_groups(mut u: User) -> User {
    if !u.groups.iter().any(|g| g == "system:authenticated") {
        u.groups.push("system:authenticated".into());
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_in_upstream_format() {
        let f = TokenFile::parse("# comment\nabc123,alice,u1,\"dev,ops\"\nxyz,bob,u2\n").unwrap();
        let a = f.user("abc123").unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.uid, "u1");
        assert_eq!(a.groups, ["dev", "ops"]);
        assert!(f.user("xyz").unwrap().groups.is_empty());
        assert!(f.user("nope").is_none());
        assert!(TokenFile::parse("onlytoken,user\n").is_err());
    }
}
