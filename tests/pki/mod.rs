//! A throwaway PKI for tests, shared by the library's unit tests (`src/sim/tls.rs` includes
//! this file) and the integration tests: a CA, and a server certificate it signed for
//! `127.0.0.1` and `localhost`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA's certificate, the server's certificate and the server's private key, all PEM.
pub struct Pem {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A new CA and a server certificate it signed.
pub fn generate() -> Pem {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "jobwarden test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).expect("the CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("a server key");
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server parameters");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server
        .signed_by(&key, &issuer)
        .expect("the server certificate")
        .pem();
    Pem {
        ca: ca_pem,
        cert,
        key: key.serialize_pem(),
    }
}
