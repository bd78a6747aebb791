//! The mesh CA: a root, an intermediate that signs workload certificates,
//! and the workload certificates (X.509-SVIDs), made with rcgen (ECDSA P-256).
//! A workload's identity is the SPIFFE ID `spiffe://<trust-domain>/svc/<service>`
//! in its certificate's URI SAN, and nothing else.
//! Reads: the CA directory that [`init`] wrote. Writes: PEM files; private
//! keys are created with mode 0600, so they are never readable by others,
//! not even for a moment. A file is replaced only when asked (`force`), and
//! then by rename, so a reader (a proxy watching its files) sees the old
//! file or the new one, never half of one.
//! Errors: [`CaError`], naming the value or the file at fault.
//!
//! A CA directory ([`init`]):
//!
//! | file | holds |
//! |---|---|
//! | `root.pem`, `root-key.pem` | the root CA (10 years); keep its key offline once the intermediate exists |
//! | `intermediate.pem`, `intermediate-key.pem` | the CA that signs workloads (5 years, path length 0) |
//! | `bundle.pem` | the trust anchors: the root certificate |
//! | `trust-domain` | the trust domain, one line |
//!
//! A workload directory ([`issue`]): `cert.pem` (the leaf, then the
//! intermediate), `key.pem` (PKCS#8) and `bundle.pem` (the CA's trust anchors).

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use x509_parser::pem::Pem;

/// Root CA certificate, in a CA directory.
pub const ROOT_CERT: &str = "root.pem";
/// Root CA private key, in a CA directory.
pub const ROOT_KEY: &str = "root-key.pem";
/// Intermediate CA certificate, in a CA directory.
pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
/// Intermediate CA private key, in a CA directory.
pub const INTERMEDIATE_KEY: &str = "intermediate-key.pem";
/// Trust anchors (the root certificate), in a CA and in a workload directory.
pub const BUNDLE: &str = "bundle.pem";
/// The trust domain, one line, in a CA directory.
pub const TRUST_DOMAIN: &str = "trust-domain";
/// Workload certificate chain (leaf, then intermediate), in a workload directory.
pub const WORKLOAD_CERT: &str = "cert.pem";
/// Workload private key (PKCS#8), in a workload directory.
pub const WORKLOAD_KEY: &str = "key.pem";

const ROOT_LIFETIME: Duration = Duration::from_secs(3652 * 86_400);
const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(1826 * 86_400);
/// Certificates start this long before now, so a peer whose clock is a
/// little behind still accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;
const PRIVATE_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;

/// What [`init`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    pub root: PathBuf,
    pub root_key: PathBuf,
    pub intermediate: PathBuf,
    pub intermediate_key: PathBuf,
    pub bundle: PathBuf,
    pub trust_domain: PathBuf,
    /// When the intermediate expires: no workload certificate outlives it.
    pub intermediate_not_after: SystemTime,
}

/// What [`issue`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedPaths {
    /// The leaf, then the intermediate.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
    /// `spiffe://<trust-domain>/svc/<service>` (empty for [`issue_server`]).
    pub spiffe_id: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    pub not_after: SystemTime,
}

/// Why the CA could not be made or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("invalid trust domain {value:?}: {reason}")]
    InvalidTrustDomain { value: String, reason: String },
    #[error("invalid service name {value:?}: {reason}")]
    InvalidService { value: String, reason: String },
    #[error("invalid certificate lifetime: {0}")]
    InvalidTtl(String),
    #[error("{} exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("invalid {what} {}: {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "the certificate would expire at {leaf}, after the intermediate CA {} \
         (expires {ca}); use a shorter TTL or a new CA",
        path.display()
    )]
    OutlivesCa {
        path: PathBuf,
        leaf: String,
        ca: String,
    },
    #[error("cannot make the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("cannot get random bytes from the operating system")]
    Random,
    #[error("the system clock is before 1970")]
    Clock,
}

/// `spiffe://<trust_domain>/svc/<service>`.
pub fn spiffe_id(trust_domain: &str, service: &str) -> String {
    format!("spiffe://{trust_domain}/svc/{service}")
}

/// `(trust domain, service)` of exactly `spiffe://TD/svc/NAME`, both valid
/// names; anything else (other paths, query, port, upper case) is `None`.
pub fn parse_spiffe_id(id: &str) -> Option<(&str, &str)> {
    let (trust_domain, path) = id.strip_prefix("spiffe://")?.split_once('/')?;
    let service = path.strip_prefix("svc/")?;
    (check_name(trust_domain).is_ok() && check_name(service).is_ok())
        .then_some((trust_domain, service))
}

/// A trust domain is a lower-case DNS-like name: `a-z`, `0-9`, `-` and `.`.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), CaError> {
    check_name(trust_domain).map_err(|reason| CaError::InvalidTrustDomain {
        value: trust_domain.to_string(),
        reason,
    })
}

/// A service name follows the rule of [`validate_trust_domain`].
pub fn validate_service(service: &str) -> Result<(), CaError> {
    check_name(service).map_err(|reason| CaError::InvalidService {
        value: service.to_string(),
        reason,
    })
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Err(format!(
            "{bad:?} is not allowed (only a-z, 0-9, '-' and '.')"
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (leading, trailing or double '.')".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("label {label:?} is longer than {MAX_LABEL_LEN}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Makes a new CA for `trust_domain` in `out` (created if missing): a root
/// and an intermediate, both ECDSA P-256. Refuses to replace any of the
/// files unless `force`.
pub fn init(trust_domain: &str, out: &Path, force: bool) -> Result<CaPaths, CaError> {
    validate_trust_domain(trust_domain)?;
    let path = |name| out.join(name);
    let (root, root_key) = (path(ROOT_CERT), path(ROOT_KEY));
    let (intermediate, intermediate_key) = (path(INTERMEDIATE_CERT), path(INTERMEDIATE_KEY));
    let (bundle, trust_domain_file) = (path(BUNDLE), path(TRUST_DOMAIN));
    refuse_existing(
        &[
            &root,
            &root_key,
            &intermediate,
            &intermediate_key,
            &bundle,
            &trust_domain_file,
        ],
        force,
    )?;

    let rng = SystemRandom::new();
    let now = unix_now()?;

    let root_params = ca_params(
        &format!("mesh root CA {trust_domain}"),
        BasicConstraints::Unconstrained,
        random_serial(&rng)?.0,
        now,
        ROOT_LIFETIME,
    )?;
    let root_signing_key = new_key("root CA key")?;
    let root_cert = root_params
        .self_signed(&root_signing_key)
        .map_err(|source| CaError::Generate {
            what: "root CA certificate",
            source,
        })?;
    let root_key_pem = root_signing_key.serialize_pem();
    let root_issuer = Issuer::new(root_params, root_signing_key);

    let mut intermediate_params = ca_params(
        &format!("mesh intermediate CA {trust_domain}"),
        BasicConstraints::Constrained(0),
        random_serial(&rng)?.0,
        now,
        INTERMEDIATE_LIFETIME,
    )?;
    intermediate_params.use_authority_key_identifier_extension = true;
    let intermediate_signing_key = new_key("intermediate CA key")?;
    let intermediate_cert = intermediate_params
        .signed_by(&intermediate_signing_key, &root_issuer)
        .map_err(|source| CaError::Generate {
            what: "intermediate CA certificate",
            source,
        })?;

    fs::create_dir_all(out).map_err(|source| CaError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    // Keys first, the trust domain last: a CA directory with a
    // `trust-domain` file is complete.
    write_file(&root_key, &root_key_pem, PRIVATE_MODE, force)?;
    write_file(
        &intermediate_key,
        &intermediate_signing_key.serialize_pem(),
        PRIVATE_MODE,
        force,
    )?;
    write_file(&root, &root_cert.pem(), PUBLIC_MODE, force)?;
    write_file(&intermediate, &intermediate_cert.pem(), PUBLIC_MODE, force)?;
    write_file(&bundle, &root_cert.pem(), PUBLIC_MODE, force)?;
    write_file(
        &trust_domain_file,
        &format!("{trust_domain}\n"),
        PUBLIC_MODE,
        force,
    )?;

    Ok(CaPaths {
        root,
        root_key,
        intermediate,
        intermediate_key,
        bundle,
        trust_domain: trust_domain_file,
        intermediate_not_after: to_system_time(expiry(now, INTERMEDIATE_LIFETIME)?),
    })
}

/// Issues a workload certificate for `service`, valid for `ttl` (and since
/// five minutes ago), signed by the intermediate in `ca_dir`; writes the
/// chain, a new key and the trust bundle in `out` (created if missing).
/// Refuses to replace any of the files unless `force`.
pub fn issue(
    ca_dir: &Path,
    service: &str,
    ttl: Duration,
    out: &Path,
    force: bool,
) -> Result<IssuedPaths, CaError> {
    validate_service(service)?;
    let ca = SigningCa::load(ca_dir)?;
    let id = spiffe_id(&ca.trust_domain, service);
    let leaf = Leaf {
        common_name: service,
        uri: Some(&id),
        hosts: &[service.to_string()],
        client_auth: true,
    };
    let issued = issue_leaf(ca, &leaf, ttl, out, force)?;
    Ok(IssuedPaths {
        spiffe_id: id,
        ..issued
    })
}

/// Issues a server certificate for the DNS names `hosts` (`*.example.test`
/// allowed), for public TLS listeners (the edge) in demos and tests: no
/// SPIFFE ID, server authentication only. Same CA, files and rules as [`issue`].
pub fn issue_server(
    ca_dir: &Path,
    hosts: &[String],
    ttl: Duration,
    out: &Path,
    force: bool,
) -> Result<IssuedPaths, CaError> {
    let first = hosts.first().ok_or_else(|| CaError::InvalidService {
        value: String::new(),
        reason: "at least one host name is required".into(),
    })?;
    for host in hosts {
        validate_service(host.strip_prefix("*.").unwrap_or(host))?;
    }
    let ca = SigningCa::load(ca_dir)?;
    let leaf = Leaf {
        common_name: first,
        uri: None,
        hosts,
        client_auth: false,
    };
    issue_leaf(ca, &leaf, ttl, out, force)
}

/// What a leaf certificate names.
struct Leaf<'a> {
    common_name: &'a str,
    uri: Option<&'a str>,
    hosts: &'a [String],
    client_auth: bool,
}

fn issue_leaf(
    ca: SigningCa,
    leaf: &Leaf<'_>,
    ttl: Duration,
    out: &Path,
    force: bool,
) -> Result<IssuedPaths, CaError> {
    if ttl.as_secs() == 0 {
        return Err(CaError::InvalidTtl("must be at least 1s".into()));
    }
    let cert = out.join(WORKLOAD_CERT);
    let key = out.join(WORKLOAD_KEY);
    let bundle = out.join(BUNDLE);
    refuse_existing(&[&cert, &key, &bundle], force)?;

    let now = unix_now()?;
    let not_after = expiry(now, ttl)?;
    if not_after > ca.not_after {
        return Err(CaError::OutlivesCa {
            path: ca.cert_path,
            leaf: utc(not_after),
            ca: utc(ca.not_after),
        });
    }
    let (serial, serial_hex) = random_serial(&SystemRandom::new())?;
    let generate = |source| CaError::Generate {
        what: "workload certificate",
        source,
    };

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, leaf.common_name.to_string());
    let mut sans = Vec::new();
    if let Some(uri) = leaf.uri {
        sans.push(SanType::URI(uri.to_string().try_into().map_err(generate)?));
    }
    for host in leaf.hosts {
        sans.push(SanType::DnsName(host.clone().try_into().map_err(generate)?));
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if leaf.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial);
    set_validity(&mut params, now, not_after)?;

    let workload_key = new_key("workload key")?;
    // The issuer is read back from the intermediate certificate, so the
    // leaf's issuer name and authority key identifier are exactly the
    // intermediate's subject and subject key identifier.
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca.key).map_err(|source| CaError::Invalid {
            what: "CA certificate",
            path: ca.cert_path.clone(),
            reason: source.to_string(),
        })?;
    let signed = params.signed_by(&workload_key, &issuer).map_err(generate)?;

    fs::create_dir_all(out).map_err(|source| CaError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let chain = format!("{}{}\n", signed.pem(), ca.cert_pem.trim());
    write_file(&key, &workload_key.serialize_pem(), PRIVATE_MODE, force)?;
    write_file(&cert, &chain, PUBLIC_MODE, force)?;
    write_file(&bundle, &ca.bundle, PUBLIC_MODE, force)?;

    Ok(IssuedPaths {
        cert,
        key,
        bundle,
        spiffe_id: String::new(),
        serial: serial_hex,
        not_after: to_system_time(not_after),
    })
}

/// `2026-05-01T12:00:00Z`.
pub fn format_utc(time: SystemTime) -> String {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => utc(i64::try_from(since.as_secs()).unwrap_or(i64::MAX)),
        Err(_) => "before 1970".into(),
    }
}

/// The intermediate of a CA directory, ready to sign.
struct SigningCa {
    trust_domain: String,
    cert_path: PathBuf,
    cert_pem: String,
    key: KeyPair,
    /// Seconds since the epoch.
    not_after: i64,
    /// The trust anchors, as the CA wrote them.
    bundle: String,
}

impl SigningCa {
    fn load(dir: &Path) -> Result<Self, CaError> {
        let invalid = |what, path: &Path| {
            let path = path.to_path_buf();
            move |reason| CaError::Invalid { what, path, reason }
        };

        let td_path = dir.join(TRUST_DOMAIN);
        let trust_domain = read(&td_path, "trust domain file")?.trim().to_string();
        check_name(&trust_domain).map_err(invalid("trust domain file", &td_path))?;

        let key_path = dir.join(INTERMEDIATE_KEY);
        let key = KeyPair::from_pem(&read(&key_path, "CA key")?)
            .map_err(|e| invalid("CA key", &key_path)(e.to_string()))?;

        let cert_path = dir.join(INTERMEDIATE_CERT);
        let cert_pem = read(&cert_path, "CA certificate")?;
        let not_after =
            check_intermediate(&cert_pem, &key).map_err(invalid("CA certificate", &cert_path))?;

        let bundle_path = dir.join(BUNDLE);
        let bundle = read(&bundle_path, "trust bundle")?;
        check_bundle(&bundle).map_err(invalid("trust bundle", &bundle_path))?;

        Ok(Self {
            trust_domain,
            cert_path,
            cert_pem,
            key,
            not_after,
            bundle,
        })
    }
}

/// Checks that `pem` is one CA certificate whose public key is `key`'s;
/// returns its expiry (seconds since the epoch).
fn check_intermediate(pem: &str, key: &KeyPair) -> Result<i64, String> {
    let blocks = pem_blocks(pem)?;
    let [block] = blocks.as_slice() else {
        return Err(format!(
            "expected one certificate, found {} PEM blocks",
            blocks.len()
        ));
    };
    let cert = block
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !cert
        .basic_constraints()
        .is_ok_and(|bc| bc.is_some_and(|bc| bc.value.ca))
    {
        return Err("not a CA certificate (no basicConstraints CA:TRUE)".into());
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(format!("its public key does not match {INTERMEDIATE_KEY}"));
    }
    Ok(cert.validity().not_after.timestamp())
}

/// Checks that `pem` holds at least one certificate and nothing else.
fn check_bundle(pem: &str) -> Result<(), String> {
    let blocks = pem_blocks(pem)?;
    if blocks.is_empty() {
        return Err("no certificate in it".into());
    }
    for block in &blocks {
        block
            .parse_x509()
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    }
    Ok(())
}

fn pem_blocks(pem: &str) -> Result<Vec<Pem>, String> {
    let blocks = Pem::iter_from_buffer(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    match blocks.iter().find(|block| block.label != "CERTIFICATE") {
        Some(other) => Err(format!("unexpected PEM block {:?}", other.label)),
        None => Ok(blocks),
    }
}

fn ca_params(
    common_name: &str,
    constraints: BasicConstraints,
    serial: SerialNumber,
    now: i64,
    lifetime: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(serial);
    set_validity(&mut params, now, expiry(now, lifetime)?)?;
    Ok(params)
}

/// Valid from `BACKDATE` before `now` to `not_after` (seconds since the epoch).
fn set_validity(params: &mut CertificateParams, now: i64, not_after: i64) -> Result<(), CaError> {
    let backdate = i64::try_from(BACKDATE.as_secs()).unwrap_or(0);
    params.not_before = date_time(now.saturating_sub(backdate))?;
    params.not_after = date_time(not_after)?;
    Ok(())
}

/// `now + lifetime` in seconds since the epoch, if a certificate can say it.
fn expiry(now: i64, lifetime: Duration) -> Result<i64, CaError> {
    let too_long = || CaError::InvalidTtl(format!("{}s is too long", lifetime.as_secs()));
    let end = i64::try_from(lifetime.as_secs())
        .ok()
        .and_then(|secs| now.checked_add(secs))
        .ok_or_else(too_long)?;
    date_time(end).map_err(|_| too_long())?;
    Ok(end)
}

fn date_time(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|_| CaError::InvalidTtl(format!("{unix} is out of range as a date")))
}

fn utc(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

fn unix_now() -> Result<i64, CaError> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::Clock)?;
    i64::try_from(since.as_secs()).map_err(|_| CaError::Clock)
}

fn to_system_time(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

fn new_key(what: &'static str) -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| CaError::Generate { what, source })
}

/// 128 random bits, positive and always 16 bytes long (top bit clear, next
/// bit set); with its lower-case hex.
fn random_serial(rng: &SystemRandom) -> Result<(SerialNumber, String), CaError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| CaError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((SerialNumber::from_slice(&bytes), hex))
}

fn read(path: &Path, what: &'static str) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Fails on the first of `paths` that exists, unless `force`; checked before
/// anything is made, so a refusal leaves no file behind.
fn refuse_existing(paths: &[&PathBuf], force: bool) -> Result<(), CaError> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|path| path.symlink_metadata().is_ok()) {
        Some(path) => Err(CaError::Exists(path.to_path_buf())),
        None => Ok(()),
    }
}

/// Writes `contents` to a new file `path` created with `mode`. Without
/// `force` an existing file is an error (`O_EXCL`, so a file that appeared
/// since [`refuse_existing`] is not replaced either); with it, the file is
/// written beside `path` and renamed over it.
fn write_file(path: &Path, contents: &str, mode: u32, force: bool) -> Result<(), CaError> {
    let failed = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    if !force {
        return create_new(path, contents, mode).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => CaError::Exists(path.to_path_buf()),
            _ => failed(e),
        });
    }
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    let temp = path.with_file_name(name);
    match fs::remove_file(&temp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let written = create_new(&temp, contents, mode).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(failed(e));
    }
    Ok(())
}

/// Creates `path` (which must not exist) with `mode` before a byte is
/// written, then writes and syncs `contents`.
fn create_new(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::x509::X509Version;

    const DAY: Duration = Duration::from_secs(86_400);

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .expect("file exists")
            .permissions()
            .mode()
            & 0o777
    }

    fn ders(path: &Path) -> Vec<Vec<u8>> {
        let text = fs::read_to_string(path).expect("PEM file exists");
        pem_blocks(&text)
            .expect("valid PEM")
            .into_iter()
            .map(|block| block.contents)
            .collect()
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der)
            .expect("valid certificate")
            .1
    }

    fn key_ids(cert: &X509Certificate<'_>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let (mut ski, mut aki) = (None, None);
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => {}
            }
        }
        (ski, aki)
    }

    fn now() -> i64 {
        unix_now().expect("clock after 1970")
    }

    #[test]
    fn names_and_spiffe_ids() {
        for good in ["mesh.local", "web", "a-b.c0", "x"] {
            assert!(check_name(good).is_ok(), "{good:?} rejected");
        }
        let long = "a".repeat(64);
        let too_long = ["a"; 129].join("."); // 257 characters
        for bad in [
            "", "Mesh", "a_b", "a/b", "a..b", ".a", "a.", "-a", "a-", "é", "a b", &long, &too_long,
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            validate_trust_domain("Mesh.local")
                .expect_err("upper case")
                .to_string(),
            "invalid trust domain \"Mesh.local\": 'M' is not allowed (only a-z, 0-9, '-' and '.')"
        );

        let id = spiffe_id("mesh.local", "web");
        assert_eq!(id, "spiffe://mesh.local/svc/web");
        assert_eq!(parse_spiffe_id(&id), Some(("mesh.local", "web")));
        for bad in [
            "spiffe://mesh.local/svc/",
            "spiffe://mesh.local/svc/web/x",
            "spiffe://mesh.local/ns/a/svc/web",
            "spiffe://mesh.local:443/svc/web",
            "spiffe://Mesh.local/svc/web",
            "spiffe:///svc/web",
            "spiffe://mesh.local/svc/web?x=1",
            "spiffe://mesh.local",
            "SPIFFE://mesh.local/svc/web",
            "https://mesh.local/svc/web",
        ] {
            assert_eq!(parse_spiffe_id(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn init_then_issue_makes_a_valid_svid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let ca = init("mesh.local", &ca_dir, false).expect("init");
        assert_eq!(ca.intermediate_key, ca_dir.join("intermediate-key.pem"));
        for key in [&ca.root_key, &ca.intermediate_key] {
            assert_eq!(mode(key) & 0o077, 0, "{} readable by others", key.display());
            assert_eq!(mode(key) & 0o600, 0o600);
        }
        assert_eq!(
            fs::read_to_string(&ca.trust_domain).expect("read"),
            "mesh.local\n"
        );
        assert_eq!(ders(&ca.bundle), ders(&ca.root));

        let root_der = ders(&ca.root).remove(0);
        let root = parse(&root_der);
        assert_eq!(root.subject().to_string(), "CN=mesh root CA mesh.local");
        assert!(root.is_ca());
        let root_days = (root.validity().not_after.timestamp() - now()) / 86_400;
        assert!((3650..=3653).contains(&root_days), "{root_days}");
        let root_ku = root.key_usage().expect("one").expect("present").value;
        assert!(root_ku.key_cert_sign() && root_ku.crl_sign());

        let intermediate_der = ders(&ca.intermediate).remove(0);
        let intermediate = parse(&intermediate_der);
        let bc = intermediate
            .basic_constraints()
            .expect("one")
            .expect("present");
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        intermediate
            .verify_signature(Some(root.public_key()))
            .expect("intermediate signed by root");
        assert_eq!(key_ids(&intermediate).1, key_ids(&root).0);
        assert!(key_ids(&root).0.is_some());

        let web_dir = dir.path().join("web");
        let issued = issue(&ca_dir, "web", DAY, &web_dir, false).expect("issue");
        assert_eq!(issued.spiffe_id, "spiffe://mesh.local/svc/web");
        assert_eq!(issued.cert, web_dir.join("cert.pem"));
        assert_eq!(mode(&issued.key) & 0o077, 0);
        assert_eq!(ders(&issued.bundle), ders(&ca.bundle));
        assert!(fs::read_to_string(&issued.key)
            .expect("key")
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));

        let chain = ders(&issued.cert);
        assert_eq!(chain.len(), 2, "leaf then intermediate");
        assert_eq!(chain[1], intermediate_der);
        let leaf = parse(&chain[0]);
        assert_eq!(leaf.version(), X509Version::V3);
        assert_eq!(leaf.raw_serial(), hex_bytes(&issued.serial));
        let sans = &leaf
            .subject_alternative_name()
            .expect("one")
            .expect("present")
            .value
            .general_names;
        let uris: Vec<_> = sans
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        assert_eq!(uris, ["spiffe://mesh.local/svc/web"]);
        assert!(sans.contains(&GeneralName::DNSName("web")));
        let eku = leaf
            .extended_key_usage()
            .expect("one")
            .expect("present")
            .value;
        assert!(eku.server_auth && eku.client_auth && !eku.any);
        let bc = leaf.basic_constraints().expect("one").expect("present");
        assert!(!bc.value.ca);
        let ku = leaf.key_usage().expect("one").expect("present").value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
        let start = now() - 300;
        let not_before = leaf.validity().not_before.timestamp();
        let not_after = leaf.validity().not_after.timestamp();
        assert!((start - 5..=start).contains(&not_before), "{not_before}");
        assert!((start + 300 + 86_400 - 5..=start + 300 + 86_400).contains(&not_after));
        assert_eq!(issued.not_after, to_system_time(not_after));
        leaf.verify_signature(Some(intermediate.public_key()))
            .expect("leaf signed by intermediate");
        assert_eq!(key_ids(&leaf).1, key_ids(&intermediate).0);
        assert_eq!(leaf.issuer(), intermediate.subject());

        let key = KeyPair::from_pem(&fs::read_to_string(&issued.key).expect("key")).expect("key");
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );

        // Two certificates never share a serial.
        let other = issue(&ca_dir, "web", DAY, &dir.path().join("web2"), false).expect("issue");
        assert_ne!(other.serial, issued.serial);
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn rustls_accepts_the_chain_as_client_and_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let ca = init("mesh.local", &ca_dir, false).expect("init");
        let issued = issue(&ca_dir, "orders", DAY, &dir.path().join("w"), false).expect("issue");
        let chain: Vec<CertificateDer<'static>> =
            ders(&issued.cert).into_iter().map(Into::into).collect();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = |bundle: &Path| {
            let mut roots = rustls::RootCertStore::empty();
            for der in ders(bundle) {
                roots.add(der.into()).expect("anchor");
            }
            Arc::new(roots)
        };
        let now = UnixTime::now();

        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&ca.bundle),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        clients
            .verify_client_cert(&chain[0], &chain[1..], now)
            .expect("accepted as a client certificate");

        let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(&ca.bundle),
            provider.clone(),
        )
        .build()
        .expect("server verifier");
        let name = ServerName::try_from("orders").expect("name");
        servers
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
            .expect("accepted as a server certificate");

        // Another CA's bundle does not trust it.
        let other = init("mesh.local", &dir.path().join("other"), false).expect("init");
        let strangers = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&other.bundle),
            provider,
        )
        .build()
        .expect("client verifier");
        assert!(strangers
            .verify_client_cert(&chain[0], &chain[1..], now)
            .is_err());
    }

    #[test]
    fn openssl_verifies_the_chain() {
        let Ok(version) = Command::new("openssl").arg("version").output() else {
            println!("note: openssl is not installed; chain not checked with openssl");
            return;
        };
        assert!(version.status.success());
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let ca = init("mesh.local", &ca_dir, false).expect("init");
        let issued = issue(&ca_dir, "web", DAY, &dir.path().join("web"), false).expect("issue");
        let verify = Command::new("openssl")
            .arg("verify")
            .args(["-purpose", "sslclient", "-CAfile"])
            .arg(&ca.bundle)
            .arg("-untrusted")
            .arg(&ca.intermediate)
            .arg(&issued.cert)
            .output()
            .expect("run openssl");
        let stdout = String::from_utf8_lossy(&verify.stdout);
        assert!(
            verify.status.success() && stdout.trim_end().ends_with(": OK"),
            "{stdout}{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let ca = init("mesh.local", &ca_dir, false).expect("init");
        let root_before = fs::read(&ca.root).expect("root");

        let err = init("mesh.local", &ca_dir, false).expect_err("exists");
        assert!(
            matches!(&err, CaError::Exists(path) if *path == ca.root),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("{} exists; pass --force to replace it", ca.root.display())
        );
        assert_eq!(fs::read(&ca.root).expect("root"), root_before);

        // One file is enough to refuse, and nothing else is written.
        let lone = tempfile::tempdir().expect("tempdir");
        fs::write(lone.path().join(TRUST_DOMAIN), "x\n").expect("write");
        assert!(matches!(
            init("mesh.local", lone.path(), false),
            Err(CaError::Exists(_))
        ));
        assert!(!lone.path().join(ROOT_KEY).exists());

        let web = dir.path().join("web");
        issue(&ca_dir, "web", DAY, &web, false).expect("issue");
        let err = issue(&ca_dir, "web", DAY, &web, false).expect_err("exists");
        assert!(matches!(err, CaError::Exists(_)), "{err}");

        // Forced: replaced, and a key that was world-readable is 0600 now.
        fs::set_permissions(web.join(WORKLOAD_KEY), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let cert_before = fs::read(web.join(WORKLOAD_CERT)).expect("cert");
        issue(&ca_dir, "web", DAY, &web, true).expect("forced issue");
        assert_ne!(
            fs::read(web.join(WORKLOAD_CERT)).expect("cert"),
            cert_before
        );
        assert_eq!(mode(&web.join(WORKLOAD_KEY)) & 0o077, 0);
        let leftovers: Vec<_> = fs::read_dir(&web)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers.len(), 3, "{leftovers:?}");

        init("mesh.local", &ca_dir, true).expect("forced init");
        assert_ne!(fs::read(&ca.root).expect("root"), root_before);
        assert_eq!(mode(&ca.root_key) & 0o077, 0);
    }

    #[test]
    fn errors_name_the_file_or_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let ca = init("mesh.local", &ca_dir, false).expect("init");
        let out = dir.path().join("out");

        assert!(matches!(
            init("mesh_local", &dir.path().join("x"), false),
            Err(CaError::InvalidTrustDomain { .. })
        ));
        assert!(matches!(
            issue(&ca_dir, "Web", DAY, &out, false),
            Err(CaError::InvalidService { .. })
        ));
        assert!(matches!(
            issue(&ca_dir, "web", Duration::from_millis(500), &out, false),
            Err(CaError::InvalidTtl(_))
        ));
        let err = issue(&ca_dir, "web", 3000 * DAY, &out, false).expect_err("outlives");
        assert!(matches!(err, CaError::OutlivesCa { .. }), "{err}");
        let err = issue(&ca_dir, "web", Duration::from_secs(u64::MAX), &out, false)
            .expect_err("overflow");
        assert!(matches!(err, CaError::InvalidTtl(_)), "{err}");

        // The root's key is not the intermediate's.
        fs::copy(&ca.root_key, &ca.intermediate_key).expect("copy");
        let err = issue(&ca_dir, "web", DAY, &out, false).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid CA certificate {}: its public key does not match intermediate-key.pem",
                ca.intermediate.display()
            )
        );

        fs::write(&ca.intermediate_key, "not a key").expect("write");
        let err = issue(&ca_dir, "web", DAY, &out, false).expect_err("bad key");
        assert!(
            err.to_string().starts_with(&format!(
                "invalid CA key {}: ",
                ca.intermediate_key.display()
            )),
            "{err}"
        );

        fs::remove_file(&ca.intermediate_key).expect("remove");
        let err = issue(&ca_dir, "web", DAY, &out, false).expect_err("no key");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read CA key {}: No such file",
                ca.intermediate_key.display()
            )),
            "{err}"
        );

        // A workload directory is not a CA directory.
        let web = dir.path().join("web");
        let other = init("mesh.local", &dir.path().join("ca2"), false).expect("init");
        issue(&dir.path().join("ca2"), "web", DAY, &web, false).expect("issue");
        fs::copy(&other.trust_domain, web.join(TRUST_DOMAIN)).expect("copy");
        fs::copy(web.join(WORKLOAD_KEY), web.join(INTERMEDIATE_KEY)).expect("copy");
        fs::copy(web.join(WORKLOAD_CERT), web.join(INTERMEDIATE_CERT)).expect("copy");
        let err = issue(&web, "db", DAY, &out, false).expect_err("not a CA");
        assert!(
            err.to_string()
                .ends_with("expected one certificate, found 2 PEM blocks"),
            "{err}"
        );
        assert!(!out.exists(), "nothing written on failure");
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(1_777_777_777)),
            "2026-05-03T03:09:37Z"
        );
    }
}
