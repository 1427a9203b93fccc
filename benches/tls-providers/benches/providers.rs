//! rustls on ring and on AWS-LC, in memory (no sockets, no daemon): what the crypto module
//! alone costs a full mutual-TLS 1.3 handshake, per server key type and key-exchange group, and
//! bulk records, per cipher suite. Both peers run on the bench thread, so a handshake figure is
//! the client's and the server's work together; a bulk figure is encryption plus decryption.

use std::io::Read;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SignatureAlgorithm,
};
use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
    SupportedCipherSuite,
};

/// The AWS-LC flavour this bench was built with (`--features fips` switches aws-lc-rs as a whole).
const AWS_LC: &str = if cfg!(feature = "fips") { "aws-lc-fips" } else { "aws-lc" };

fn providers() -> Vec<(&'static str, CryptoProvider)> {
    let aws_lc = rustls::crypto::aws_lc_rs::default_provider();
    assert_eq!(aws_lc.fips(), cfg!(feature = "fips"), "{AWS_LC} is not the module this bench was built for");
    vec![("ring", rustls::crypto::ring::default_provider()), (AWS_LC, aws_lc)]
}

/// A CA, a server certificate with a key of `alg`, and a client certificate (ECDSA P-256).
struct Pki {
    roots: RootCertStore,
    server: (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>),
    client: (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>),
}

fn pki(alg: &'static SignatureAlgorithm) -> Pki {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |key: KeyPair, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (vec![cert.der().clone()], PrivatePkcs8KeyDer::from(key.serialize_der()))
    };
    let server = leaf(KeyPair::generate_for(alg).unwrap(), ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf(
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    Pki { roots, server, client }
}

/// A server and a client that do full handshakes only (no tickets, no resumption), like the
/// daemon's listeners facing a new shipper connection.
fn configs(pki: &Pki, provider: CryptoProvider) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = Arc::new(provider);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots.clone()), provider.clone())
        .build()
        .unwrap();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server.0.clone(), PrivateKeyDer::Pkcs8(pki.server.1.clone_key()))
        .unwrap();
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(pki.roots.clone())
        .with_client_auth_cert(pki.client.0.clone(), PrivateKeyDer::Pkcs8(pki.client.1.clone_key()))
        .unwrap();
    client.resumption = Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

/// Moves what `from` has to send into `to`, and drains the plaintext `to` received.
fn pump(from: &mut Connection, to: &mut Connection, wire: &mut Vec<u8>, sink: &mut [u8]) {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).unwrap();
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
        while let Ok(n) = to.reader().read(sink) {
            if n == 0 {
                break;
            }
        }
    }
}

fn connect(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    wire: &mut Vec<u8>,
    sink: &mut [u8],
) -> (Connection, Connection) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = Connection::from(ClientConnection::new(client.clone(), name).unwrap());
    let mut s = Connection::from(ServerConnection::new(server.clone()).unwrap());
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        pump(&mut c, &mut s, wire, sink);
        pump(&mut s, &mut c, wire, sink);
    }
    (c, s)
}

fn with_groups(mut p: CryptoProvider, names: &[&str]) -> Option<CryptoProvider> {
    let groups: Vec<&'static dyn SupportedKxGroup> = names
        .iter()
        .map(|n| p.kx_groups.iter().copied().find(|g| format!("{:?}", g.name()) == *n))
        .collect::<Option<_>>()?;
    p.kx_groups = groups;
    Some(p)
}

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("full mTLS 1.3 handshake");
    g.throughput(Throughput::Elements(1));
    let (mut wire, mut sink) = (Vec::new(), vec![0u8; 64 * 1024]);
    for (key, alg) in [("ecdsa-p256", &rcgen::PKCS_ECDSA_P256_SHA256), ("rsa-2048", &rcgen::PKCS_RSA_SHA256)]
    {
        let pki = pki(alg);
        for (name, provider) in providers() {
            // The provider's own first choice, then the groups both modules have, each alone.
            let first = format!("{:?}", provider.kx_groups[0].name());
            let mut groups = vec![first.as_str()];
            groups.extend(["X25519", "secp256r1"].into_iter().filter(|g| *g != first));
            for groups in groups.into_iter().map(|g| vec![g]) {
                let Some(p) = with_groups(provider.clone(), &groups) else { continue };
                let (server, client) = configs(&pki, p);
                let id = BenchmarkId::new(format!("{name}/{key}"), groups[0]);
                g.bench_function(id, |b| b.iter(|| connect(&server, &client, &mut wire, &mut sink)));
            }
        }
    }
    g.finish();
}

fn bulk(c: &mut Criterion) {
    const RECORD: usize = 16 * 1024;
    const RECORDS: usize = 64;
    let mut g = c.benchmark_group("bulk records, encrypt + decrypt");
    g.throughput(Throughput::Bytes((RECORD * RECORDS) as u64));
    let (mut wire, mut sink) = (Vec::new(), vec![0u8; 64 * 1024]);
    let plain = vec![0x5au8; RECORD];
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    for (name, provider) in providers() {
        let suites: Vec<SupportedCipherSuite> = provider.cipher_suites.clone();
        for suite in suites.into_iter().filter(|s| s.version() == &rustls::version::TLS13) {
            let mut p = provider.clone();
            p.cipher_suites = vec![suite];
            let (server, client) = configs(&pki, p);
            let (mut cl, mut sv) = connect(&server, &client, &mut wire, &mut sink);
            let id = BenchmarkId::new(name, format!("{:?}", suite.suite()));
            g.bench_function(id, |b| {
                b.iter(|| {
                    for _ in 0..RECORDS {
                        std::io::Write::write_all(&mut cl.writer(), &plain).unwrap();
                        pump(&mut cl, &mut sv, &mut wire, &mut sink);
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, handshakes, bulk);
criterion_main!(benches);
