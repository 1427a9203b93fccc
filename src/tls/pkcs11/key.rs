//! The private key on a token as rustls sees it: the signature schemes the key and the
//! token's mechanisms allow, the public key (to check the certificate against), and a signer
//! whose every signature is a `C_Sign` on the token.

use std::sync::Arc;
use std::time::Instant;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use rustls::pki_types::{SubjectPublicKeyInfoDer, alg_id};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::{Pkcs11Error, Token};

/// How a signature is made on the token.
#[derive(Debug, Clone, Copy)]
enum How {
    /// `CKM_ECDSA` over a hash computed here; the token returns r||s.
    EcdsaPrehashed(Hash),
    /// `CKM_ECDSA_SHA*` over the message.
    Ecdsa(Hash),
    /// `CKM_SHA*_RSA_PKCS_PSS` over the message.
    RsaPss(Hash),
    /// `CKM_RSA_PKCS_PSS` over a hash computed here.
    RsaPssPrehashed(Hash),
    /// `CKM_SHA*_RSA_PKCS` over the message.
    RsaPkcs1(Hash),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, m: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => crate::crypto::sha256(m).to_vec(),
            Hash::Sha384 => crate::crypto::sha384(m),
            Hash::Sha512 => crate::crypto::sha512(m),
        }
    }

    fn pss(self) -> PkcsPssParams {
        let (hash_alg, mgf, len) = match self {
            Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
            Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
            Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
        };
        PkcsPssParams { hash_alg, mgf, s_len: len.into() }
    }
}

/// The private key on a token, as rustls sees it.
#[derive(Debug)]
pub struct TokenKey {
    token: Arc<Token>,
    algorithm: SignatureAlgorithm,
    /// Schemes in order of preference, with how each is made.
    schemes: Vec<(SignatureScheme, How)>,
    spki: Option<SubjectPublicKeyInfoDer<'static>>,
}

impl TokenKey {
    /// Inspect the key and the token's mechanisms; offer only schemes the token can make.
    pub fn new(token: Arc<Token>) -> Result<Self, Pkcs11Error> {
        let uri = token.uri().to_string();
        let label = token.label();
        let attrs = token.attributes(
            ObjectClass::PRIVATE_KEY,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )?;
        let get = |t: AttributeType| attrs.iter().find(|a| a.attribute_type() == t);
        let mechs = token.mechanisms();
        let has = |m: MechanismType| mechs.contains(&m);
        let (algorithm, schemes, spki) = match get(AttributeType::KeyType) {
            Some(Attribute::KeyType(k)) if *k == KeyType::EC => {
                let params = match get(AttributeType::EcParams) {
                    Some(Attribute::EcParams(p)) => p.clone(),
                    _ => Vec::new(),
                };
                let (scheme, hash, mech, alg) = match params.as_slice() {
                    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07] => (
                        SignatureScheme::ECDSA_NISTP256_SHA256,
                        Hash::Sha256,
                        MechanismType::ECDSA_SHA256,
                        alg_id::ECDSA_P256,
                    ),
                    [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22] => (
                        SignatureScheme::ECDSA_NISTP384_SHA384,
                        Hash::Sha384,
                        MechanismType::ECDSA_SHA384,
                        alg_id::ECDSA_P384,
                    ),
                    _ => {
                        return Err(Pkcs11Error::UnsupportedKey {
                            uri,
                            kind: "an EC key on a curve other than P-256/P-384".into(),
                        });
                    }
                };
                let how = if has(MechanismType::ECDSA) {
                    How::EcdsaPrehashed(hash)
                } else if has(mech) {
                    How::Ecdsa(hash)
                } else {
                    return Err(Pkcs11Error::NoMechanism {
                        uri,
                        token: label,
                        needed: format!("CKM_ECDSA or {mech}"),
                    });
                };
                let point = token
                    .attributes(ObjectClass::PUBLIC_KEY, &[AttributeType::EcPoint])?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcPoint(p) => Some(unwrap_octet_string(p)),
                        _ => None,
                    });
                let spki = point.map(|p| rustls::sign::public_key_to_spki(&alg, p));
                (SignatureAlgorithm::ECDSA, vec![(scheme, how)], spki)
            }
            Some(Attribute::KeyType(k)) if *k == KeyType::RSA => {
                let (n, e) = match (get(AttributeType::Modulus), get(AttributeType::PublicExponent)) {
                    (Some(Attribute::Modulus(n)), Some(Attribute::PublicExponent(e))) => {
                        (n.clone(), e.clone())
                    }
                    _ => (Vec::new(), Vec::new()),
                };
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if !n.is_empty() && bits < 2048 {
                    return Err(Pkcs11Error::UnsupportedKey { uri, kind: format!("RSA of {bits} bits") });
                }
                let mut schemes = Vec::new();
                for (scheme, hash, mech) in [
                    (SignatureScheme::RSA_PSS_SHA256, Hash::Sha256, MechanismType::SHA256_RSA_PKCS_PSS),
                    (SignatureScheme::RSA_PSS_SHA384, Hash::Sha384, MechanismType::SHA384_RSA_PKCS_PSS),
                    (SignatureScheme::RSA_PSS_SHA512, Hash::Sha512, MechanismType::SHA512_RSA_PKCS_PSS),
                ] {
                    if has(mech) {
                        schemes.push((scheme, How::RsaPss(hash)));
                    } else if has(MechanismType::RSA_PKCS_PSS) {
                        schemes.push((scheme, How::RsaPssPrehashed(hash)));
                    }
                }
                for (scheme, hash, mech) in [
                    (SignatureScheme::RSA_PKCS1_SHA256, Hash::Sha256, MechanismType::SHA256_RSA_PKCS),
                    (SignatureScheme::RSA_PKCS1_SHA384, Hash::Sha384, MechanismType::SHA384_RSA_PKCS),
                    (SignatureScheme::RSA_PKCS1_SHA512, Hash::Sha512, MechanismType::SHA512_RSA_PKCS),
                ] {
                    if has(mech) {
                        schemes.push((scheme, How::RsaPkcs1(hash)));
                    }
                }
                if schemes.is_empty() {
                    return Err(Pkcs11Error::NoMechanism {
                        uri,
                        token: label,
                        needed: "CKM_SHA256_RSA_PKCS_PSS, CKM_RSA_PKCS_PSS or CKM_SHA256_RSA_PKCS".into(),
                    });
                }
                let spki = (!n.is_empty()).then(|| {
                    let der = yasna::construct_der(|w| {
                        w.write_sequence(|s| {
                            s.next().write_bigint_bytes(&n, true);
                            s.next().write_bigint_bytes(&e, true);
                        })
                    });
                    rustls::sign::public_key_to_spki(&alg_id::RSA_ENCRYPTION, der)
                });
                (SignatureAlgorithm::RSA, schemes, spki)
            }
            other => {
                let kind = match other {
                    Some(Attribute::KeyType(k)) => format!("a {k} key"),
                    _ => "a key of unknown type".into(),
                };
                return Err(Pkcs11Error::UnsupportedKey { uri, kind });
            }
        };
        Ok(TokenKey { token, algorithm, schemes, spki })
    }

    /// The signature schemes offered, in preference order (for logs).
    pub fn scheme_names(&self) -> Vec<String> {
        self.schemes.iter().map(|(s, _)| format!("{s:?}")).collect()
    }
}

/// The content of a DER OCTET STRING, or the input when it is not one (some tokens return the
/// raw point).
fn unwrap_octet_string(v: Vec<u8>) -> Vec<u8> {
    // Uncompressed P-256, P-384 and P-521 points are 65, 97 and 133 bytes long.
    if [65, 97, 133].contains(&v.len()) {
        return v;
    }
    match v.as_slice() {
        [0x04, len, rest @ ..] if (*len as usize) == rest.len() && *len < 0x80 => rest.to_vec(),
        [0x04, 0x81, len, rest @ ..] if (*len as usize) == rest.len() => rest.to_vec(),
        _ => v,
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let (scheme, how) = self.schemes.iter().find(|(s, _)| offered.contains(s))?;
        Some(Box::new(TokenSigner { token: self.token.clone(), scheme: *scheme, how: *how }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.spki.clone()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

#[derive(Debug)]
struct TokenSigner {
    token: Arc<Token>,
    scheme: SignatureScheme,
    how: How,
}

impl How {
    /// The hash this side computes before the token signs, if any.
    fn prehash(self) -> Option<Hash> {
        match self {
            How::EcdsaPrehashed(h) | How::RsaPssPrehashed(h) => Some(h),
            _ => None,
        }
    }

    /// ECDSA tokens return raw r||s, which TLS wants as DER.
    fn is_ecdsa(self) -> bool {
        matches!(self, How::EcdsaPrehashed(_) | How::Ecdsa(_))
    }

    fn mechanism(self) -> Mechanism<'static> {
        match self {
            How::EcdsaPrehashed(_) => Mechanism::Ecdsa,
            How::Ecdsa(Hash::Sha256) => Mechanism::EcdsaSha256,
            How::Ecdsa(Hash::Sha384) => Mechanism::EcdsaSha384,
            How::Ecdsa(Hash::Sha512) => Mechanism::EcdsaSha512,
            How::RsaPss(Hash::Sha256) => Mechanism::Sha256RsaPkcsPss(Hash::Sha256.pss()),
            How::RsaPss(Hash::Sha384) => Mechanism::Sha384RsaPkcsPss(Hash::Sha384.pss()),
            How::RsaPss(Hash::Sha512) => Mechanism::Sha512RsaPkcsPss(Hash::Sha512.pss()),
            How::RsaPssPrehashed(h) => Mechanism::RsaPkcsPss(h.pss()),
            How::RsaPkcs1(Hash::Sha256) => Mechanism::Sha256RsaPkcs,
            How::RsaPkcs1(Hash::Sha384) => Mechanism::Sha384RsaPkcs,
            How::RsaPkcs1(Hash::Sha512) => Mechanism::Sha512RsaPkcs,
        }
    }
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let started = Instant::now();
        let digest = self.how.prehash().map(|h| h.digest(message));
        let input = digest.as_deref().unwrap_or(message);
        let signed = self.token.with_session("sign", |s, key| s.sign(&self.how.mechanism(), key, input));
        if let Some(m) = &self.token.metrics {
            m.sign_seconds.observe(started.elapsed().as_secs_f64());
        }
        let sig = signed.map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(if self.how.is_ecdsa() { ecdsa_der(&sig) } else { sig })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// DER `Ecdsa-Sig-Value` from the raw r||s a token returns.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    yasna::construct_der(|w| {
        w.write_sequence(|seq| {
            seq.next().write_bigint_bytes(r, true);
            seq.next().write_bigint_bytes(s, true);
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_der_integers() {
        // High bit set on r (needs a 0x00 sign byte) and leading zeros on s (dropped).
        let mut raw = vec![0x80; 32];
        raw.extend([0u8, 0, 0x12].iter().chain([0x34; 29].iter()));
        let der = ecdsa_der(&raw);
        assert_eq!(&der[..5], &[0x30, 0x43, 0x02, 0x21, 0x00]);
        assert_eq!(&der[37..40], &[0x02, 0x1e, 0x12]);
        assert_eq!(der.len(), 2 + 0x43);
    }

    #[test]
    fn ec_points_lose_their_octet_string_wrapper() {
        let point = [0x04u8; 65].to_vec();
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(unwrap_octet_string(wrapped), point);
        assert_eq!(unwrap_octet_string(point.clone()), point);
    }
}
