//! A test certificate authority for client certificates: a CA, leaf certificates in the shapes
//! the daemon must understand (DoD-style CAC, host), expired ones, and CRLs written the way an
//! operator's tooling replaces them (new file, then rename).

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, OtherNameValue,
    RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};

pub struct Pki {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    next_serial: u64,
}

/// A certificate on disk.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
}

impl Pki {
    /// A CA named `name`, its certificate in `ca.pem`, and an empty CRL in `crl.pem`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2100, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        let pki = Pki { dir, issuer: Issuer::new(params, key), next_serial: 100 };
        pki.write_crl(&[]);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub fn crl(&self) -> PathBuf {
        self.path("crl.pem")
    }

    /// A client certificate with subject `dn` (attribute, value pairs, most general first) and
    /// `sans`, written to `<file>.pem` and `<file>.key`.
    pub fn issue(&mut self, file: &str, dn: &[(DnType, &str)], sans: Vec<SanType>, expired: bool) -> Leaf {
        self.issue_for(file, dn, sans, expired, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A server certificate for `localhost` and 127.0.0.1 (for peers the daemon connects to).
    pub fn server(&mut self, file: &str) -> Leaf {
        let sans = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
        ];
        self.issue_for(
            file,
            &[(DnType::CommonName, "localhost")],
            sans,
            false,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn issue_for(
        &mut self,
        file: &str,
        dn: &[(DnType, &str)],
        sans: Vec<SanType>,
        expired: bool,
        usage: ExtendedKeyUsagePurpose,
    ) -> Leaf {
        let serial = self.next_serial;
        self.next_serial += 1;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = if expired { date_time_ymd(2021, 1, 1) } else { date_time_ymd(2100, 1, 1) };
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf =
            Leaf { cert: self.path(&format!("{file}.pem")), key: self.path(&format!("{file}.key")), serial };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    /// A DoD-style CAC certificate: CN `LAST.FIRST.MIDDLE.EDIPI`, SAN email and UPN.
    pub fn cac(&mut self, file: &str, cn: &str, email: &str, upn: &str) -> Leaf {
        let dn = [
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "U.S. Government"),
            (DnType::OrganizationalUnitName, "DoD"),
            (DnType::CommonName, cn),
        ];
        let sans = vec![
            SanType::Rfc822Name(email.try_into().unwrap()),
            SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                OtherNameValue::Utf8String(upn.into()),
            )),
        ];
        self.issue(file, &dn, sans, false)
    }

    /// A host certificate: CN and SAN DNS `host`.
    pub fn host(&mut self, file: &str, host: &str, expired: bool) -> Leaf {
        self.issue(
            file,
            &[(DnType::CommonName, host)],
            vec![SanType::DnsName(host.try_into().unwrap())],
            expired,
        )
    }

    /// Replace `crl.pem` with a CRL revoking `serials`: written aside, then renamed over it.
    pub fn write_crl(&self, serials: &[u64]) {
        self.write_crl_until(serials, (2100, 1, 1));
    }

    /// [`Pki::write_crl`] with the CRL's `nextUpdate` at `(year, month, day)`.
    pub fn write_crl_until(&self, serials: &[u64], (y, m, d): (i32, u8, u8)) {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(y, m, d),
            crl_number: SerialNumber::from(serials.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: date_time_ymd(2025, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).unwrap();
        let tmp = self.path("crl.pem.new");
        std::fs::write(&tmp, crl.pem().unwrap()).unwrap();
        std::fs::rename(&tmp, self.crl()).unwrap();
    }
}

/// `[tls]` lines trusting `pki` for client certificates, checking its CRL every `interval`.
pub fn trust_section(pki: &Pki, interval: &str) -> String {
    format!(
        "[tls]\nclient_ca_file = \"{}\"\ncrl_files = [\"{}\"]\ntrust_reload_interval = \"{interval}\"\n",
        pki.ca().display(),
        pki.crl().display()
    )
}

/// A stream listener named `name` asking for client certificates.
pub fn mtls_listener(name: &str, client_auth: &str) -> String {
    format!("[[stream]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\nclient_auth = \"{client_auth}\"\n")
}
