//! The cluster's certificates: a CA, the API server's serving certificate,
//! the admin client certificate and the API server's kubelet client
//! certificate, kept under `DATA_DIR/server/tls`.
//!
//! First start creates them; later starts reuse them. The serving certificate
//! is reissued (by the same CA) when it no longer covers the names and
//! addresses the server answers on, or when it is close to expiry, so clients
//! that trust the CA keep working across restarts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
}

type Result<T> = std::result::Result<T, PkiError>;

/// Days a CA certificate is valid for (as k3s: ten years).
const CA_DAYS: i64 = 3650;
/// Days a leaf certificate is valid for.
const LEAF_DAYS: i64 = 365;
/// Leaf certificates expiring sooner than this are reissued at start.
const RENEW_BEFORE_DAYS: i64 = 90;

/// A certificate and its key, both PEM.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertPair {
    pub fn cert_der(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .filter_map(|c| c.ok())
            .collect()
    }

    pub fn key_der(&self) -> Option<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).ok()
    }
}

/// Everything the API server needs from the PKI.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertPair,
    pub serving: CertPair,
    pub admin: CertPair,
    /// The API server's client certificate towards kubelets (upstream's
    /// --kubelet-client-certificate).
    pub kubelet_client: CertPair,
}

/// Names and addresses the serving certificate must cover.
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// The SANs upstream's kube-apiserver certificate carries, plus this
    /// machine's names.
    pub fn new(hostname: &str, bind: IpAddr, first_service_ip: IpAddr) -> ServingNames {
        let mut dns: Vec<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !hostname.is_empty() && !dns.iter().any(|d| d == hostname) {
            dns.push(hostname.to_string());
        }
        let mut ips = vec![IpAddr::from([127, 0, 0, 1]), first_service_ip];
        if !bind.is_unspecified() && !ips.contains(&bind) {
            ips.push(bind);
        }
        ServingNames { dns, ips }
    }
}

impl Pki {
    /// Loads the certificates under `dir`, creating what is missing.
    pub fn load_or_create(dir: &Path, names: &ServingNames) -> Result<Pki> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        restrict_dir(dir)?;
        let ca = match read_pair(dir, "ca")? {
            Some(ca) => ca,
            None => {
                let ca = new_ca("kelson-ca")?;
                write_pair(dir, "ca", &ca)?;
                ca
            }
        };
        let ca_key = KeyPair::from_pem(&ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key)?;

        let serving = match read_pair(dir, "serving")? {
            Some(p) if covers(&p, names) && !expiring(&p) => p,
            _ => {
                let p = issue_serving(&issuer, names)?;
                write_pair(dir, "serving", &p)?;
                p
            }
        };
        let admin = match read_pair(dir, "admin")? {
            Some(p) if !expiring(&p) => p,
            _ => {
                let p = issue_client(&issuer, "system:admin", &["system:masters"])?;
                write_pair(dir, "admin", &p)?;
                p
            }
        };
        let kubelet_client = match read_pair(dir, "kubelet-client")? {
            Some(p) if !expiring(&p) => p,
            _ => {
                let p = issue_client(&issuer, KUBELET_CLIENT_USER, &["system:masters"])?;
                write_pair(dir, "kubelet-client", &p)?;
                p
            }
        };
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
            serving,
            admin,
            kubelet_client,
        })
    }

    /// Issues a client certificate for `user` in `groups`, signed by the CA.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertPair> {
        let ca_key = KeyPair::from_pem(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key)?;
        issue_client(&issuer, user, groups)
    }

    /// Issues a kubelet serving certificate for `node` covering `names`
    /// (CN system:node:NODE, O system:nodes, as kubelets' certificates are
    /// named), signed by the CA the API server checks kubelets against.
    pub fn issue_kubelet_serving(&self, node: &str, names: &ServingNames) -> Result<CertPair> {
        let ca_key = KeyPair::from_pem(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(DnType::CommonName, format!("system:node:{node}"));
        issue_leaf(
            &issuer,
            dn,
            sans(names)?,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }
}

/// The user the API server is to kubelets (upstream's kubeadm names it so).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

fn sans(names: &ServingNames) -> Result<Vec<SanType>> {
    let mut sans = Vec::new();
    for d in &names.dns {
        sans.push(SanType::DnsName(d.clone().try_into()?));
    }
    sans.extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(sans)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = jiff::Timestamp::now();
    // Back-date an hour so a slightly slow client clock still accepts it.
    let start = now - jiff::SignedDuration::from_hours(1);
    let end = now + jiff::SignedDuration::from_hours(24 * days);
    params.not_before = to_offset(start);
    params.not_after = to_offset(end);
}

fn to_offset(t: jiff::Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn new_ca(cn: &str) -> Result<CertPair> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{cn}@{}", jiff::Timestamp::now().as_second()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issue_serving(issuer: &Issuer<'_, &KeyPair>, names: &ServingNames) -> Result<CertPair> {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    issue_leaf(
        issuer,
        dn,
        sans(names)?,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

fn issue_client(issuer: &Issuer<'_, &KeyPair>, user: &str, groups: &[&str]) -> Result<CertPair> {
    let mut dn = DistinguishedName::new();
    // Kubernetes reads the user from CN and the groups from O.
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    dn.push(DnType::CommonName, user);
    issue_leaf(issuer, dn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
}

/// A fresh key and a leaf certificate for it, signed by the CA.
fn issue_leaf(
    issuer: &Issuer<'_, &KeyPair>,
    dn: DistinguishedName,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_DAYS);
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Whether the certificate's SANs include every required name and address.
fn covers(pair: &CertPair, names: &ServingNames) -> bool {
    let Some(der) = pair.cert_der().into_iter().next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for n in &san.value.general_names {
        match n {
            x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                _ => {}
            },
            _ => {}
        }
    }
    names.dns.iter().all(|d| dns.contains(d)) && names.ips.iter().all(|i| ips.contains(i))
}

fn expiring(pair: &CertPair) -> bool {
    let Some(der) = pair.cert_der().into_iter().next() else {
        return true;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return true;
    };
    let not_after = cert.validity().not_after.timestamp();
    not_after - jiff::Timestamp::now().as_second() < RENEW_BEFORE_DAYS * 86_400
}

fn read_pair(dir: &Path, name: &str) -> Result<Option<CertPair>> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    if !crt.exists() || !key.exists() {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| PkiError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let pair = CertPair {
        cert_pem: read(&crt)?,
        key_pem: read(&key)?,
    };
    if pair.cert_der().is_empty() {
        return Err(PkiError::Pem {
            path: crt,
            what: "certificate",
        });
    }
    if pair.key_der().is_none() {
        return Err(PkiError::Pem {
            path: key,
            what: "private key",
        });
    }
    Ok(Some(pair))
}

fn write_pair(dir: &Path, name: &str, pair: &CertPair) -> Result<()> {
    write_private(&dir.join(format!("{name}.key")), pair.key_pem.as_bytes())?;
    write_file(
        &dir.join(format!("{name}.crt")),
        pair.cert_pem.as_bytes(),
        0o644,
    )
}

/// Writes a file readable only by its owner (keys, kubeconfigs with keys).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    write_file(path, data, 0o600)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Write beside and rename, so a crash never leaves half a key.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn restrict_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        PkiError::Io {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// An admin kubeconfig in the layout k3s writes (cluster, user and context
/// all named "default"), with the certificates inline.
pub fn kubeconfig(server_url: &str, ca_pem: &str, client: &CertPair) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: default\n\
         contexts:\n\
         - context:\n    cluster: default\n    user: default\n  name: default\n\
         current-context: default\n\
         preferences: {{}}\n\
         users:\n\
         - name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        server_url,
        b64(&client.cert_pem),
        b64(&client.key_pem)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API server's names on `host` bound to `bind`, service IP 10.43.0.1.
    fn serving_names(host: &str, bind: &str) -> ServingNames {
        ServingNames::new(host, bind.parse().unwrap(), "10.43.0.1".parse().unwrap())
    }

    /// The certificate's subject: (common names, organizations).
    fn subject(pair: &CertPair) -> (Vec<String>, Vec<String>) {
        let der = pair.cert_der().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let strings = |attrs: Vec<&x509_parser::x509::AttributeTypeAndValue>| -> Vec<String> {
            attrs
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect()
        };
        (
            strings(cert.subject().iter_common_name().collect()),
            strings(cert.subject().iter_organization().collect()),
        )
    }

    #[test]
    fn creates_then_reuses_and_reissues_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = serving_names("node1", "0.0.0.0");
        let a = Pki::load_or_create(dir.path(), &names).unwrap();
        let b = Pki::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(a.ca.cert_pem, b.ca.cert_pem);
        assert_eq!(a.serving.cert_pem, b.serving.cert_pem);
        assert_eq!(a.admin.cert_pem, b.admin.cert_pem);
        assert!(covers(&a.serving, &names));

        let moved = serving_names("node1", "192.0.2.7");
        let c = Pki::load_or_create(dir.path(), &moved).unwrap();
        assert_eq!(a.ca.cert_pem, c.ca.cert_pem, "the CA is kept");
        assert_ne!(
            a.serving.cert_pem, c.serving.cert_pem,
            "serving cert reissued"
        );
        assert!(covers(&c.serving, &moved));
    }

    #[test]
    fn admin_certificate_names_user_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let names = serving_names("h", "0.0.0.0");
        let pki = Pki::load_or_create(dir.path(), &names).unwrap();
        let (cn, o) = subject(&pki.admin);
        assert_eq!(cn, ["system:admin"]);
        assert_eq!(o, ["system:masters"]);
    }

    #[test]
    fn kubelet_client_certificate_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let names = serving_names("h", "0.0.0.0");
        let a = Pki::load_or_create(dir.path(), &names).unwrap();
        let b = Pki::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(a.kubelet_client.cert_pem, b.kubelet_client.cert_pem);
        let (cn, o) = subject(&a.kubelet_client);
        assert_eq!(cn, ["kube-apiserver-kubelet-client"]);
        assert_eq!(o, ["system:masters"]);
        let node = ServingNames {
            dns: vec!["node1".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
        };
        let serving = a.issue_kubelet_serving("node1", &node).unwrap();
        assert!(covers(&serving, &node));
    }
}
