//! `logwarden pkcs11 list`: the tokens a module sees and the keys and certificates on them,
//! each with the URI to put in `tls.key`.

use std::fmt::Write as _;
use std::path::Path;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;

use super::{PinSource, Pkcs11Error, Pkcs11Uri, load_module};

/// Describe every token of `module`. With a PIN, log in first so private keys show too (most
/// tokens hide them until then).
pub fn list(module: &Path, pin: Option<&PinSource>) -> Result<String, Pkcs11Error> {
    let ctx = load_module(module)?;
    let call = |op: &'static str, token: &str| {
        let token = token.to_string();
        move |error: CkError| Pkcs11Error::Call { op, token, error }
    };
    let mut out = String::new();
    let lib = ctx.get_library_info().map_err(call("get_info", "-"))?;
    let _ = writeln!(
        out,
        "module {} ({} {})",
        module.display(),
        lib.manufacturer_id(),
        lib.library_description()
    );
    let slots = ctx.get_slots_with_initialized_token().map_err(call("get_slot_list", "-"))?;
    if slots.is_empty() {
        out.push_str("no tokens\n");
    }
    for slot in slots {
        let t = ctx.get_token_info(slot).map_err(call("get_token_info", "-"))?;
        let label = t.label().to_string();
        let token_uri = Pkcs11Uri {
            token: Some(label.clone()),
            manufacturer: Some(t.manufacturer_id().to_string()),
            model: Some(t.model().to_string()),
            serial: Some(t.serial_number().to_string()),
            ..Default::default()
        };
        let _ = writeln!(out, "\ntoken {label:?} in slot {slot}\n  uri: {token_uri}");
        let mut flags = Vec::new();
        if t.login_required() {
            flags.push("login required");
        }
        if t.user_pin_locked() {
            flags.push("USER PIN LOCKED");
        } else if t.user_pin_final_try() {
            flags.push("user PIN: final try");
        } else if t.user_pin_count_low() {
            flags.push("user PIN: wrong attempts recorded");
        }
        if t.protected_authentication_path() {
            flags.push("PIN pad");
        }
        if !flags.is_empty() {
            let _ = writeln!(out, "  {}", flags.join(", "));
        }
        let session = ctx.open_ro_session(slot).map_err(call("open_session", &label))?;
        let mut logged_in = false;
        if let Some(pin) = pin {
            match session.login(UserType::User, Some(&pin.read()?)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => logged_in = true,
                Err(CkError::Pkcs11(rv @ (RvError::PinIncorrect | RvError::PinLocked), _)) => {
                    return Err(Pkcs11Error::PinRefused { token: label, reason: rv.to_string() });
                }
                Err(e) => return Err(call("login", &label)(e)),
            }
        }
        let mut objects = 0;
        for (class, kind, ty) in [
            (ObjectClass::PRIVATE_KEY, "private key", "private"),
            (ObjectClass::PUBLIC_KEY, "public key ", "public"),
            (ObjectClass::CERTIFICATE, "certificate", "cert"),
        ] {
            let handles =
                session.find_objects(&[Attribute::Class(class)]).map_err(call("find_objects", &label))?;
            for h in handles {
                objects += 1;
                let attrs = session
                    .get_attributes(
                        h,
                        &[
                            AttributeType::Label,
                            AttributeType::Id,
                            AttributeType::KeyType,
                            AttributeType::EcParams,
                            AttributeType::Modulus,
                            AttributeType::Extractable,
                        ],
                    )
                    .map_err(call("get_attributes", &label))?;
                let mut uri = Pkcs11Uri {
                    token: Some(label.clone()),
                    object_type: Some(ty.into()),
                    ..Default::default()
                };
                let mut what = String::new();
                let mut extractable = None;
                for a in attrs {
                    match a {
                        Attribute::Label(l) if !l.is_empty() => {
                            uri.object = Some(String::from_utf8_lossy(&l).into_owned())
                        }
                        Attribute::Id(id) if !id.is_empty() => uri.id = Some(id),
                        Attribute::KeyType(k) if k == KeyType::EC => what.insert_str(0, "EC"),
                        Attribute::KeyType(k) if k == KeyType::RSA => what.insert_str(0, "RSA"),
                        Attribute::KeyType(k) => what.insert_str(0, &k.to_string()),
                        Attribute::EcParams(p) => what.push_str(curve_name(&p)),
                        Attribute::Modulus(n) => {
                            let _ = write!(what, " {}", n.iter().skip_while(|b| **b == 0).count() * 8);
                        }
                        Attribute::Extractable(e) => extractable = Some(e),
                        _ => {}
                    }
                }
                if class == ObjectClass::PRIVATE_KEY && extractable == Some(false) {
                    what.push_str(", not extractable");
                }
                let _ =
                    writeln!(out, "  {kind}  {:<28} {uri}", if what.is_empty() { "-".into() } else { what });
            }
        }
        if objects == 0 {
            out.push_str("  no objects visible\n");
        }
        if !logged_in && t.login_required() {
            out.push_str("  (private keys show after login: add --pin-file or --pin-env)\n");
        }
    }
    Ok(out)
}

fn curve_name(params: &[u8]) -> &'static str {
    match params {
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07] => " P-256",
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22] => " P-384",
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23] => " P-521",
        _ => " (other curve)",
    }
}
