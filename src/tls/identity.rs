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
    pub name: String,
    pub source: PrincipalSource,
    /// The subject DN (RFC 4514), kept for the audit trail whatever rule gave `name`.
    pub subject: String,
}

/// The UPN otherName of Microsoft and PIV certificates.
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

/// The principal of a DER certificate: the first of `sources` it carries. `None` when the
/// certificate does not parse or none of the sources is present.
pub fn principal_of(der: &[u8], sources: &[PrincipalSource]) -> Option<Principal> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = rfc4514(cert.subject());
    for &source in sources {
        let name = match source {
            PrincipalSource::Edipi => last_cn(&cert).and_then(|cn| edipi(&cn).map(str::to_owned)),
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
            PrincipalSource::Cn => last_cn(&cert),
            PrincipalSource::Dn => Some(subject.clone()).filter(|s| !s.is_empty()),
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            return Some(Principal { name, source, subject });
        }
    }
    None
}

fn san<'a>(cert: &'a X509Certificate<'a>) -> Vec<&'a GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.iter().collect(),
        _ => Vec::new(),
    }
}

/// The most specific CN (the last one in encoding order).
fn last_cn(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject().iter_common_name().filter_map(|a| a.as_str().ok()).last().map(str::to_owned)
}

/// The EDIPI of a DoD-style CN: `LAST.FIRST.MIDDLE.1234567890` (middle name optional, and
/// further parts such as a generational qualifier tolerated), i.e. 10 digits after the last dot.
pub fn edipi(cn: &str) -> Option<&str> {
    let (names, id) = cn.rsplit_once('.')?;
    let valid = id.len() == 10
        && id.bytes().all(|b| b.is_ascii_digit())
        && names.split('.').count() >= 2
        && names.split('.').all(|p| !p.is_empty());
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
        assert_eq!((p.name.as_str(), p.source), ("1234567890", Edipi));
        assert_eq!(p.subject, "CN=DOE.JOHN.A.1234567890,OU=DoD,O=U.S. Government,C=US");
        assert_eq!(principal_of(&der, &[Upn]).unwrap().name, "1234567890@mil");
        assert_eq!(principal_of(&der, &[Dns, Email]).unwrap().name, "john.doe@example.mil");
        assert_eq!(principal_of(&der, &[Cn]).unwrap().name, "DOE.JOHN.A.1234567890");
        assert_eq!(principal_of(&der, &[Dn]).unwrap().name, p.subject);
        assert_eq!(principal_of(&der, &[Dns]), None);
        assert_eq!(principal_of(b"not a certificate", &[Dn]), None);
    }
}
