//! Which certificate authorities the calls to Kiro and its sign-in services trust: the public
//! web's (webpki-roots: built in, the same on every machine, whatever its own store holds)
//! and, with `--kiro-ca-file`, the authorities of a PEM file besides them: a TLS-inspecting
//! company proxy's, or a test Kiro's (`aiproxy fake-kiro --tls-cert`).
//!
//! The file is read and checked once, at start: a path that cannot be read, a file without
//! certificates or one that is not a usable authority stops the start with what was wrong,
//! rather than every call failing later with an unknown-issuer error.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// The trust anchors: the built-in ones, and the file's (none by default).
#[derive(Clone, Debug)]
pub struct KiroTrust {
    /// The file's certificates (for reqwest, which adds them to its own built-in ones).
    extra: Arc<[CertificateDer<'static>]>,
    /// The built-in authorities and the file's, made once and shared by every client's
    /// configuration.
    roots: Arc<RootCertStore>,
}

impl Default for KiroTrust {
    fn default() -> Self {
        Self {
            extra: Arc::new([]),
            roots: Arc::new(built_in_roots()),
        }
    }
}

fn built_in_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

impl KiroTrust {
    /// The authorities of the PEM file at `path` (`--kiro-ca-file`), or none without one.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let extra = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{shown} is not a PEM file of certificates: {e:?}"))?;
        if extra.is_empty() {
            return Err(format!(
                "{shown} holds no certificate: give the authority's certificate in PEM \
                 (a `-----BEGIN CERTIFICATE-----` block)"
            ));
        }
        let mut roots = built_in_roots();
        for (index, certificate) in extra.iter().enumerate() {
            roots.add(certificate.clone()).map_err(|e| {
                format!(
                    "certificate {} of {shown} cannot be a trust anchor: {e}",
                    index + 1
                )
            })?;
        }
        Ok(Self {
            extra: extra.into(),
            roots: Arc::new(roots),
        })
    }

    /// How many authorities the file added.
    pub fn extra_count(&self) -> usize {
        self.extra.len()
    }

    /// A rustls client configuration trusting the built-in authorities and the file's (no
    /// ALPN: the HTTPS connector sets it). Each call makes a new one, with its own session
    /// cache: clients of different accounts do not resume each other's TLS sessions.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_no_client_auth())
    }

    /// `builder` trusting the file's authorities too (reqwest keeps its built-in ones).
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        self.extra.iter().try_fold(builder, |builder, certificate| {
            reqwest::Certificate::from_der(certificate)
                .map(|certificate| builder.add_root_certificate(certificate))
                .map_err(|e| format!("cannot use a certificate of --kiro-ca-file: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("aiproxy-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn without_a_file_only_the_built_in_authorities_are_trusted() {
        let trust = KiroTrust::load(None).unwrap();
        assert_eq!(trust.extra_count(), 0);
        assert!(trust.tls_config().is_ok());
    }

    #[test]
    fn a_file_adds_each_of_its_authorities() {
        let pem = format!("{}{}", authority_pem(), authority_pem());
        let trust = KiroTrust::load(Some(&file("two.pem", pem.as_bytes()))).unwrap();
        assert_eq!(trust.extra_count(), 2);
        assert!(trust.tls_config().is_ok());
        assert!(trust.apply(reqwest::Client::builder()).is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_what_was_wrong() {
        let missing = std::env::temp_dir().join("aiproxy-no-such-ca.pem");
        let error = KiroTrust::load(Some(&missing)).unwrap_err();
        assert!(
            error.starts_with("cannot read ") && error.contains("no-such-ca"),
            "{error}"
        );

        let error = KiroTrust::load(Some(&file("empty.pem", b"just text\n"))).unwrap_err();
        assert!(error.contains("holds no certificate"), "{error}");

        let broken =
            b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
        let error = KiroTrust::load(Some(&file("broken.pem", broken))).unwrap_err();
        assert!(error.contains("not a PEM file of certificates"), "{error}");

        let junk = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let error = KiroTrust::load(Some(&file("junk.pem", junk))).unwrap_err();
        assert!(
            error.contains("certificate 1 of") && error.contains("trust anchor"),
            "{error}"
        );
    }
}
