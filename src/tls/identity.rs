//! From a verified client certificate to a principal: the name stamped on events as
//! `client_id`, written in the audit trail and checked against `[access]` rules.
//!
//! The sources cover DoD-style CAC/PIV certificates (the EDIPI ending the CN, the UPN in the
//! SAN) as well as ordinary host and user certificates (DNS name, email, CN, whole DN).

use x509_parser::asn1_rs::{Any, FromDer, Tag, ToDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::config::PrincipalSource;

/// Who a certificate names, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The source and the value, `edipi:1234567890`, `dns:web-01.example.org`: the form that
    /// `client_id`, the audit trail and `[access]` rules show (see [`crate::access`]).
    pub name: String,
    pub source: PrincipalSource,
    /// The subject DN (RFC 4514), kept for the audit trail whatever rule gave `name`.
    pub subject: String,
}

/// `[identity] principal_from` as in force: read per handshake, replaced by a reload.
pub type PrincipalFrom = std::sync::Arc<arc_swap::ArcSwap<Vec<PrincipalSource>>>;

/// Why a verified certificate names no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("the certificate does not parse")]
    Unparsable,
    #[error("the certificate has none of the [identity] principal_from sources")]
    NoSource,
    #[error("the certificate's subject has {0} CN attributes: which one names the peer is ambiguous")]
    SeveralCns(usize),
    #[error(
        "the certificate's CN is in a string type logwarden does not read (such as BMPString), which other readers may take for a name"
    )]
    UnreadableCn,
    #[error(
        "the CN {0:?} ends in an EDIPI but is not a DoD-style name (LAST.FIRST[.MIDDLE].EDIPI in capitals): it could pose as a CAC holder"
    )]
    NotDodShaped(String),
}

impl PrincipalError {
    /// The `reason` label of a refused connection.
    pub fn reason(&self) -> &'static str {
        match self {
            PrincipalError::Unparsable | PrincipalError::NoSource => "no_principal",
            PrincipalError::SeveralCns(_)
            | PrincipalError::UnreadableCn
            | PrincipalError::NotDodShaped(_) => "ambiguous_identity",
        }
    }
}

/// The UPN otherName of Microsoft and PIV certificates.
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

/// The principal of a DER certificate: the first of `sources` it carries. A certificate whose
/// subject could make it pass for someone else is refused whatever `sources` says: several CN
/// attributes, or a CN ending in an EDIPI without being a DoD-style name.
pub fn principal_of(der: &[u8], sources: &[PrincipalSource]) -> Result<Principal, PrincipalError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| PrincipalError::Unparsable)?;
    // Every CN attribute counts, readable or not: a second CN in a string type this parser
    // does not decode (BMPString, T61String) is one that another reader of the certificate
    // would take for the name.
    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    if cns.len() > 1 {
        return Err(PrincipalError::SeveralCns(cns.len()));
    }
    let cn = match cns.first() {
        None => None,
        Some(a) => Some(a.as_str().map_err(|_| PrincipalError::UnreadableCn)?),
    };
    if let Some(cn) = cn
        && ends_in_edipi(cn)
        && edipi(cn).is_none()
    {
        return Err(PrincipalError::NotDodShaped(cn.to_owned()));
    }
    let subject = rfc4514(cert.subject());
    for &source in sources {
        let value = match source {
            PrincipalSource::Edipi => cn.and_then(edipi).map(str::to_owned),
            PrincipalSource::Upn => san(&cert).into_iter().find_map(|n| match n {
                GeneralName::OtherName(oid, value) if oid.to_id_string() == UPN_OID => {
                    utf8_in_explicit(value)
                }
                _ => None,
            }),
            PrincipalSource::Email => san(&cert)
                .into_iter()
                .find_map(|n| match n {
                    GeneralName::RFC822Name(e) => Some((*e).to_owned()),
                    _ => None,
                })
                .or_else(|| cert.subject().iter_email().find_map(|a| a.as_str().ok()).map(str::to_owned)),
            PrincipalSource::Dns => san(&cert).into_iter().find_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            }),
            PrincipalSource::Cn => cn.map(str::to_owned),
            PrincipalSource::Dn => Some(subject.clone()).filter(|s| !s.is_empty()),
        };
        // A UPN and an email address are `name@domain`; a value without its `@` is no such
        // name (and would pass for a bare EDIPI or CN in a rule), so that source gives nothing.
        let shaped = |n: &String| match source {
            PrincipalSource::Upn | PrincipalSource::Email => n.contains('@'),
            _ => true,
        };
        if let Some(value) = value.filter(|n| !n.is_empty() && shaped(n)) {
            return Ok(Principal { name: format!("{}:{value}", source.as_str()), source, subject });
        }
    }
    Err(PrincipalError::NoSource)
}

fn san<'a>(cert: &'a X509Certificate<'a>) -> Vec<&'a GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.iter().collect(),
        _ => Vec::new(),
    }
}

/// Whether `s` has the form of an EDIPI (the DoD ID number): ten digits.
pub fn is_edipi(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a CN reads as an EDIPI: ten digits, alone or after the last dot.
fn ends_in_edipi(cn: &str) -> bool {
    is_edipi(cn.rsplit_once('.').map_or(cn, |(_, id)| id))
}

/// The EDIPI of a DoD-style CN: `LAST.FIRST.MIDDLE.1234567890`: two to four names in capital
/// letters (with `-`, `'` or a space inside a name: `O'NEIL`, `SMITH-JONES`; the middle name
/// and a generational qualifier such as `JR` are optional), then the 10 digits.
pub fn edipi(cn: &str) -> Option<&str> {
    let (names, id) = cn.rsplit_once('.')?;
    let name = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_uppercase())
            && p.bytes().all(|b| b.is_ascii_uppercase() || b"-' ".contains(&b))
    };
    let parts = names.split('.').count();
    let valid = ends_in_edipi(cn) && (2..=4).contains(&parts) && names.split('.').all(name);
    valid.then_some(id)
}

/// The UTF8String inside an otherName's `[0] EXPLICIT` value.
fn utf8_in_explicit(value: &[u8]) -> Option<String> {
    let (_, outer) = Any::from_der(value).ok()?;
    let (_, inner) = Any::from_der(outer.data).ok()?;
    match inner.tag() {
        Tag::Utf8String | Tag::Ia5String | Tag::PrintableString => {
            std::str::from_utf8(inner.data).ok().map(str::to_owned)
        }
        _ => None,
    }
}

/// A DN as RFC 4514 writes it: most specific RDN first, `,` between RDNs, `+` inside one.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> =
        name.iter_rdn().map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+")).collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attribute(a: &AttributeTypeAndValue<'_>) -> String {
    let oid = a.attr_type().to_id_string();
    let short = match oid.as_str() {
        "2.5.4.3" => Some("CN"),
        "2.5.4.5" => Some("serialNumber"),
        "2.5.4.6" => Some("C"),
        "2.5.4.7" => Some("L"),
        "2.5.4.8" => Some("ST"),
        "2.5.4.9" => Some("STREET"),
        "2.5.4.10" => Some("O"),
        "2.5.4.11" => Some("OU"),
        "0.9.2342.19200300.100.1.1" => Some("UID"),
        "0.9.2342.19200300.100.1.25" => Some("DC"),
        "1.2.840.113549.1.9.1" => Some("emailAddress"),
        _ => None,
    };
    match (short, a.as_str()) {
        (Some(k), Ok(v)) => format!("{k}={}", escape(v)),
        (None, Ok(v)) => format!("{oid}={}", escape(v)),
        // Not a string type RFC 4514 can print: the BER encoding in hex.
        (k, Err(_)) => {
            let hex: String =
                a.attr_value().to_der_vec().unwrap_or_default().iter().map(|b| format!("{b:02x}")).collect();
            format!("{}=#{hex}", k.unwrap_or(&oid))
        }
    }
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edipi_comes_from_dod_style_common_names_only() {
        assert_eq!(edipi("DOE.JOHN.A.1234567890"), Some("1234567890"));
        assert_eq!(edipi("DOE.JOHN.1234567890"), Some("1234567890"));
        assert_eq!(edipi("DOE.JOHN.A.JR.1234567890"), Some("1234567890"));
        assert_eq!(edipi("1234567890"), None);
        assert_eq!(edipi("web-01.1234567890"), None);
        assert_eq!(edipi("DOE.JOHN.A.123456789"), None);
        assert_eq!(edipi("DOE..1234567890"), None);
        assert_eq!(edipi("web-01.example.org"), None);
        assert_eq!(edipi("web.prod.1234567890"), None);
        assert_eq!(edipi("O'NEIL.MARY SUE.SMITH-JONES.1234567890"), Some("1234567890"));
        assert_eq!(edipi("A.B.C.D.E.1234567890"), None);
    }

    fn with_subject(cns: &[&str], dns: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Example");
        for (i, cn) in cns.iter().enumerate() {
            // rcgen keeps one value per type: a second CN goes in under its OID spelled out.
            let ty = if i == 0 {
                rcgen::DnType::CommonName
            } else {
                rcgen::DnType::CustomDnType(vec![2, 5, 4, 3])
            };
            dn.push(ty, *cn);
        }
        params.distinguished_name = dn;
        params.subject_alt_names =
            dns.map(|d| rcgen::SanType::DnsName(d.try_into().unwrap())).into_iter().collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_cannot_pose_as_a_cac_holder() {
        use PrincipalSource::*;
        let all = [Edipi, Upn, Email, Dns, Cn, Dn];
        // A host certificate whose CN ends in someone's EDIPI.
        let host = with_subject(&["web.prod.1234567890"], Some("web.prod.example.org"));
        assert!(matches!(principal_of(&host, &all), Err(PrincipalError::NotDodShaped(_))));
        assert!(matches!(principal_of(&host, &[Dns]), Err(PrincipalError::NotDodShaped(_))));
        // A CN that is nothing but an EDIPI.
        let bare = with_subject(&["1234567890"], None);
        assert!(matches!(principal_of(&bare, &all), Err(PrincipalError::NotDodShaped(_))));
        // Two CNs: which one names the peer depends on who reads the certificate.
        let two = with_subject(&["web-01", "DOE.JOHN.A.1234567890"], None);
        assert_eq!(principal_of(&two, &all), Err(PrincipalError::SeveralCns(2)));
        assert_eq!(PrincipalError::SeveralCns(2).reason(), "ambiguous_identity");
        // A CN in a string type this parser cannot read still counts, and cannot name anyone.
        let bmp = |v: &str| rcgen::DnValue::BmpString(rcgen::string::BmpString::try_from(v).unwrap());
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "web-01");
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), bmp("DOE.JOHN.A.1234567890"));
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let hidden = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(principal_of(&hidden, &all), Err(PrincipalError::SeveralCns(2)));
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, bmp("DOE.JOHN.A.1234567890"));
        params.distinguished_name = dn;
        let unreadable = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(principal_of(&unreadable, &all), Err(PrincipalError::UnreadableCn));
        // The sources are told apart: a DNS name is never an EDIPI.
        let web = with_subject(&["web-01"], Some("web-01.example.org"));
        assert_eq!(principal_of(&web, &all).unwrap().name, "dns:web-01.example.org");
        assert_eq!(principal_of(&web, &[Cn]).unwrap().name, "cn:web-01");
        // A UPN or an email address without its `@` is no such name: it cannot become
        // `upn:1234567890` or `email:1234567890` and pass for the CAC holder in a bare rule.
        for san in [
            rcgen::SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                rcgen::OtherNameValue::Utf8String("1234567890".into()),
            )),
            rcgen::SanType::Rfc822Name("1234567890".try_into().unwrap()),
        ] {
            let mut params = rcgen::CertificateParams::default();
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, "web");
            params.distinguished_name = dn;
            params.subject_alt_names = vec![san];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap().der().to_vec();
            assert_eq!(principal_of(&cert, &[Edipi, Upn, Email, Cn]).unwrap().name, "cn:web");
            assert_eq!(principal_of(&cert, &[Upn, Email]), Err(PrincipalError::NoSource));
        }
    }

    #[test]
    fn escaping_follows_rfc4514() {
        assert_eq!(escape("Doe, John"), "Doe\\, John");
        assert_eq!(escape("#1 "), "\\#1\\ ");
        assert_eq!(escape("a+b"), "a\\+b");
    }

    /// A certificate with every source: subject CN, SAN email, DNS and UPN.
    fn cac_like() -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "U.S. Government");
        dn.push(rcgen::DnType::OrganizationalUnitName, "DoD");
        dn.push(rcgen::DnType::CommonName, "DOE.JOHN.A.1234567890");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            rcgen::SanType::Rfc822Name("john.doe@example.mil".try_into().unwrap()),
            rcgen::SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                rcgen::OtherNameValue::Utf8String("1234567890@mil".into()),
            )),
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn sources_are_tried_in_order() {
        use PrincipalSource::*;
        let der = cac_like();
        let p = principal_of(&der, &[Edipi, Upn]).unwrap();
        assert_eq!((p.name.as_str(), p.source), ("edipi:1234567890", Edipi));
        assert_eq!(p.subject, "CN=DOE.JOHN.A.1234567890,OU=DoD,O=U.S. Government,C=US");
        assert_eq!(principal_of(&der, &[Upn]).unwrap().name, "upn:1234567890@mil");
        assert_eq!(principal_of(&der, &[Dns, Email]).unwrap().name, "email:john.doe@example.mil");
        assert_eq!(principal_of(&der, &[Cn]).unwrap().name, "cn:DOE.JOHN.A.1234567890");
        assert_eq!(principal_of(&der, &[Dn]).unwrap().name, format!("dn:{}", p.subject));
        assert_eq!(principal_of(&der, &[Dns]), Err(PrincipalError::NoSource));
        assert_eq!(principal_of(b"not a certificate", &[Dn]), Err(PrincipalError::Unparsable));
    }
}
