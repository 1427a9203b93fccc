//! PKCS#11 URIs (RFC 7512): `pkcs11:token=logwarden;object=server;type=private`.
//!
//! Only what logwarden uses is kept; unknown standard attributes are an error so that a typo
//! in a config does not silently match a different key. Vendor attributes (`x-...`) are
//! accepted and ignored, as the RFC asks.

use std::fmt;
use std::path::PathBuf;

/// A parsed PKCS#11 URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    /// `cert`, `private`, `public`, `secret-key` or `data`.
    pub object_type: Option<String>,
    pub module_path: Option<PathBuf>,
    pub pin_source: Option<String>,
    /// Whether the URI carries `pin-value` (refused by the config: secrets stay out of it).
    pub has_pin_value: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid PKCS#11 URI (RFC 7512): {0}")]
pub struct UriError(String);

impl Pkcs11Uri {
    pub fn parse(s: &str) -> Result<Self, UriError> {
        let err = |m: String| UriError(m);
        let rest = s.strip_prefix("pkcs11:").ok_or_else(|| err("it must start with \"pkcs11:\"".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) =
                attr.split_once('=').ok_or_else(|| err(format!("attribute {attr:?} has no '='")))?;
            let bytes = decode(value).map_err(|e| err(format!("attribute {name}: {e}")))?;
            let text = || {
                String::from_utf8(bytes.clone()).map_err(|_| err(format!("attribute {name} is not UTF-8")))
            };
            match name {
                "token" => uri.token = Some(text()?),
                "manufacturer" => uri.manufacturer = Some(text()?),
                "serial" => uri.serial = Some(text()?),
                "model" => uri.model = Some(text()?),
                "object" => uri.object = Some(text()?),
                "id" => uri.id = Some(bytes),
                "slot-id" => {
                    uri.slot_id =
                        Some(text()?.parse().map_err(|_| err(format!("slot-id {value:?} is not a number")))?)
                }
                "type" => {
                    let t = text()?;
                    if !["cert", "private", "public", "secret-key", "data"].contains(&t.as_str()) {
                        return Err(err(format!("unknown object type {t:?}")));
                    }
                    uri.object_type = Some(t);
                }
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-manufacturer"
                | "slot-description" => {}
                n if n.starts_with("x-") => {}
                n => return Err(err(format!("unknown attribute {n:?}"))),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) =
                attr.split_once('=').ok_or_else(|| err(format!("attribute {attr:?} has no '='")))?;
            let value = decode(value).map_err(|e| err(format!("attribute {name}: {e}")))?;
            let text = String::from_utf8(value).map_err(|_| err(format!("attribute {name} is not UTF-8")))?;
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(text)),
                "pin-source" => uri.pin_source = Some(text),
                "pin-value" => uri.has_pin_value = true,
                "module-name" => {}
                n if n.starts_with("x-") => {}
                n => return Err(err(format!("unknown query attribute {n:?}"))),
            }
        }
        Ok(uri)
    }

    /// Whether a token with these properties is the one the URI names.
    pub fn matches_token(&self, label: &str, manufacturer: &str, model: &str, serial: &str) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.token, label)
            && ok(&self.manufacturer, manufacturer)
            && ok(&self.model, model)
            && ok(&self.serial, serial)
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let text =
            |name: &str, v: &Option<String>| v.as_ref().map(|v| format!("{name}={}", encode(v.as_bytes())));
        parts.extend(text("model", &self.model));
        parts.extend(text("manufacturer", &self.manufacturer));
        parts.extend(text("serial", &self.serial));
        parts.extend(text("token", &self.token));
        parts.extend(self.slot_id.map(|s| format!("slot-id={s}")));
        parts.extend(self.id.as_ref().map(|id| format!("id={}", encode_all(id))));
        parts.extend(text("object", &self.object));
        parts.extend(text("type", &self.object_type));
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

fn decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes what may not appear literally in a path attribute value.
fn encode(b: &[u8]) -> String {
    b.iter()
        .map(|&c| match c {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b':'
            | b'['
            | b']'
            | b'@'
            | b'!'
            | b'$'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b'='
            | b'&' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// Percent-encodes every byte (the customary form of `id`).
fn encode_all(b: &[u8]) -> String {
    b.iter().map(|c| format!("%{c:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_attributes_logwarden_uses() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=My%20Card;object=server;id=%01%a0;type=private;slot-id=7;x-vendor=1\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("My Card"));
        assert_eq!(u.object.as_deref(), Some("server"));
        assert_eq!(u.id, Some(vec![0x01, 0xa0]));
        assert_eq!(u.object_type.as_deref(), Some("private"));
        assert_eq!(u.slot_id, Some(7));
        assert_eq!(u.module_path, Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")));
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/pin"));
        assert!(!u.has_pin_value);
        assert!(Pkcs11Uri::parse("pkcs11:token=t?pin-value=1234").unwrap().has_pin_value);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for (uri, why) in [
            ("token=x", "pkcs11:"),
            ("pkcs11:tokn=x", "unknown attribute \"tokn\""),
            ("pkcs11:token", "has no '='"),
            ("pkcs11:id=%0", "truncated"),
            ("pkcs11:id=%zz", "bad %-escape"),
            ("pkcs11:type=key", "unknown object type"),
            ("pkcs11:slot-id=one", "not a number"),
        ] {
            let e = Pkcs11Uri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(why), "{uri}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        let u = Pkcs11Uri {
            token: Some("a;b c".into()),
            object: Some("server".into()),
            id: Some(vec![1, 255]),
            object_type: Some("private".into()),
            ..Default::default()
        };
        let s = u.to_string();
        assert_eq!(s, "pkcs11:token=a%3Bb%20c;id=%01%FF;object=server;type=private");
        assert_eq!(Pkcs11Uri::parse(&s).unwrap(), u);
    }
}
