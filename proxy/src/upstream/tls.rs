//! An upstream's TLS material, read from its PEM files when a generation is built (so a reload
//! re-reads them), and checked here: Pingora panics on a certificate or key it cannot parse.

use std::path::Path;
use std::sync::Arc;

use pingora::utils::tls::{CertKey, WrappedX509};
use wasmgate_config::UpstreamTls;

/// What a TLS connection to an upstream needs beyond its address.
#[derive(Clone)]
pub struct TlsMaterial {
    /// `tls.sni`, if set.
    pub sni: Option<String>,
    pub verify: bool,
    /// CA certificates (`tls.ca`); `None` is the system roots.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// Client certificate and key (`tls.client_cert`, `tls.client_key`).
    pub client: Option<Arc<CertKey>>,
    /// SHA-256 of the files, to tell whether a reload changed them.
    pub digest: [u8; 32],
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl TlsMaterial {
    /// Reads and checks the files `tls` names.
    pub fn load(tls: &UpstreamTls) -> Result<TlsMaterial, String> {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        let ca = match &tls.ca {
            None => None,
            Some(path) => {
                let pem = read(path, &mut digest)?;
                let certs = certificates(&pem, path)?;
                Some(certs.into_iter().map(wrap).collect::<Arc<[_]>>())
            }
        };
        let client = match &tls.client_cert {
            None => None,
            Some((cert, key)) => {
                let certs = certificates(&read(cert, &mut digest)?, cert)?;
                let key_der = private_key(&read(key, &mut digest)?, key)?;
                Some(Arc::new(CertKey::new(certs, key_der)))
            }
        };
        Ok(TlsMaterial {
            sni: tls.sni.clone(),
            verify: tls.verify,
            ca,
            client,
            digest: digest.finalize().into(),
        })
    }
}

fn read(path: &Path, digest: &mut sha2::Sha256) -> Result<Vec<u8>, String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    digest.update(&bytes);
    Ok(bytes)
}

fn wrap(der: Vec<u8>) -> WrappedX509 {
    WrappedX509::new(der, pingora::utils::tls::parse_x509)
}

/// Every certificate of a PEM file, as DER, each one parsed once here so that Pingora's own
/// parse (which panics) cannot fail.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in rustls_pemfile::certs(&mut &pem[..]) {
        let der = item.map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{}: invalid certificate: {e}", path.display()))?;
        out.push(der.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(out)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1), as DER.
fn private_key(pem: &[u8], path: &Path) -> Result<Vec<u8>, String> {
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in it", path.display()))?;
    let der = key.secret_der().to_vec();
    // Pingora converts the DER again when it connects, and panics if it cannot.
    rustls_pki_types::PrivateKeyDer::try_from(der.clone())
        .map_err(|e| format!("{}: unusable private key: {e}", path.display()))?;
    Ok(der)
}
