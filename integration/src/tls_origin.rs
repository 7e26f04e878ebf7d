//! An HTTPS upstream on loopback for the upstream-TLS tests: a private CA made in the test
//! ([`TestPki`], rcgen), and a server ([`TlsOrigin`], tokio-rustls + hyper) that speaks
//! HTTP/1.1 and HTTP/2 (h2 by ALPN), can require a client certificate signed by the CA, and
//! records what each connection and request showed: the SNI, the ALPN protocol, the HTTP
//! version and whether a client certificate came.
//!
//! Every response is `200`, `x-origin-name: NAME`, and a JSON body with the name, the path,
//! the HTTP version, the SNI and the ALPN protocol.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// A private certificate authority and a directory its files are written to.
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl TestPki {
    /// A new CA named `cn`.
    pub fn new(cn: &str) -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        TestPki {
            ca,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// Writes the CA certificate to `DIR/NAME` and returns its path.
    pub fn write_ca(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, self.ca_pem()).expect("write the CA");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by the CA.
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, "test server", ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `cn`, signed by the CA.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(&[], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Writes `issued` to `DIR/STEM.pem` and `DIR/STEM.key`; returns both paths.
    pub fn write(&self, issued: &Issued, stem: &str) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{stem}.pem"));
        let key = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert, &issued.cert_pem).expect("write the certificate");
        std::fs::write(&key, &issued.key_pem).expect("write the key");
        (cert, key)
    }

    fn issue(&self, names: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &*self.ca).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The SNI the client sent, if any.
    pub sni: Option<String>,
    /// The ALPN protocol agreed, if any (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
}

/// A running HTTPS origin; stops when dropped.
#[derive(Debug)]
pub struct TlsOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    handshakes: Arc<Mutex<Vec<Result<(), String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsOrigin {
    /// Starts an origin named `name` with `cert`, offering ALPN `h2` and `http/1.1`. With
    /// `client_ca`, it requires a client certificate signed by that CA.
    pub async fn start(name: &str, cert: &Issued, client_ca: Option<&TestPki>) -> TlsOrigin {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca {
            Some(pki) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki.ca_der()).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
        let mut config = builder
            .with_single_cert(vec![cert.cert_der.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let name: Arc<str> = Arc::from(name);
        let (log, shakes) = (seen.clone(), handshakes.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log, shakes, name) =
                    (acceptor.clone(), log.clone(), shakes.clone(), name.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            push(&shakes, Ok(()));
                            tls
                        }
                        Err(e) => {
                            push(&shakes, Err(e.to_string()));
                            return;
                        }
                    };
                    let conn = tls.get_ref().1;
                    let sni = conn.server_name().map(str::to_string);
                    let alpn = conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let seen = Seen {
                            path: req.uri().path().to_string(),
                            version: format!("{:?}", req.version()),
                            sni: sni.clone(),
                            alpn: alpn.clone(),
                            client_cert,
                        };
                        answer(req, seen, log.clone(), name.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsOrigin {
            addr,
            seen,
            handshakes,
            task,
        }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The outcome of every TLS handshake so far (an error as the server saw it).
    pub fn handshakes(&self) -> Vec<Result<(), String>> {
        self.handshakes
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub fn ip_endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// `localhost:PORT`.
    pub fn host_endpoint(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn push<T>(log: &Mutex<Vec<T>>, item: T) {
    if let Ok(mut v) = log.lock() {
        v.push(item);
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: Seen,
    log: Arc<Mutex<Vec<Seen>>>,
    name: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the whole request body before answering, as a real service does.
    let _ = req.into_body().collect().await;
    let body = serde_json::json!({
        "name": name.as_ref(),
        "path": seen.path,
        "version": seen.version,
        "sni": seen.sni,
        "alpn": seen.alpn,
        "client_cert": seen.client_cert,
    });
    push(&log, seen);
    let response = Response::builder()
        .status(200)
        .header("x-origin-name", name.as_ref())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response");
    Ok(response)
}
