//! The AWS shared credentials and config files (`~/.aws/credentials`, `~/.aws/config`), which
//! object_store does not read: static keys and the region of the profile `AWS_PROFILE` (or
//! `default`). The environment wins over the files, as in the AWS tools; with neither, object_store
//! goes on to web identity, container and instance credentials.

use std::path::PathBuf;

use object_store::aws::AmazonS3ConfigKey;

/// Settings from the files that the environment does not already give.
pub fn from_files() -> Vec<(AmazonS3ConfigKey, String)> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let home = env("HOME").map(PathBuf::from);
    let profile =
        env("AWS_PROFILE").map_or_else(|| "default".to_owned(), |p| p.to_string_lossy().into_owned());
    let mut out = Vec::new();
    if env("AWS_ACCESS_KEY_ID").is_none() {
        let path = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        if let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) {
            let keys = [
                ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
                ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
                ("aws_session_token", AmazonS3ConfigKey::Token),
            ];
            for (name, key) in keys {
                if let Some(v) = lookup(&text, &profile, name) {
                    out.push((key, v));
                }
            }
        }
    }
    if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        let path = env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        // In the config file every profile but `default` is written `[profile NAME]`.
        let section = if profile == "default" { profile.clone() } else { format!("profile {profile}") };
        if let Some(v) =
            path.and_then(|p| std::fs::read_to_string(p).ok()).and_then(|t| lookup(&t, &section, "region"))
        {
            out.push((AmazonS3ConfigKey::Region, v));
        }
    }
    out
}

/// `key = value` in section `[section]` of an INI text.
fn lookup(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == section;
            continue;
        }
        if in_section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn reads_the_named_section_only() {
        let text = "[default]\naws_access_key_id = AKIADEFAULT\n# comment\n[ci]\naws_access_key_id=AKIACI\n\
                    aws_secret_access_key = s3cr3t=x\n[profile ci]\nregion = eu-west-3\n";
        assert_eq!(lookup(text, "default", "aws_access_key_id").as_deref(), Some("AKIADEFAULT"));
        assert_eq!(lookup(text, "ci", "aws_access_key_id").as_deref(), Some("AKIACI"));
        assert_eq!(lookup(text, "ci", "aws_secret_access_key").as_deref(), Some("s3cr3t=x"));
        assert_eq!(lookup(text, "default", "aws_secret_access_key"), None);
        assert_eq!(lookup(text, "profile ci", "region").as_deref(), Some("eu-west-3"));
    }
}
