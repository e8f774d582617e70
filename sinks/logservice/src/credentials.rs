//! The AccessKey secret and the optional STS token: read once at open from
//! a file private to the daemon's user or from the daemon's environment,
//! never written anywhere (not in errors, not in logs, not in `Debug`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flowlogd_plugin_api::SinkError;

use crate::options::{CredentialSource, LogServiceConfig};

/// A credential that must not leak: no `Display`, a redacted `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    /// The value, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What signs the requests.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// An STS token, sent as `x-acs-security-token`.
    pub security_token: Option<Secret>,
}

impl Credentials {
    /// Reads the secret and the token the config names.
    ///
    /// # Errors
    /// [`SinkError::config`] naming the option whose file or variable is
    /// missing, unreadable, empty or (files) open to group or others.
    pub fn load(config: &LogServiceConfig) -> Result<Credentials, SinkError> {
        let access_key_secret = match &config.secret {
            CredentialSource::File(path) => read_private_file("access_key_secret_file", path)?,
            CredentialSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Secret::new(v.trim().to_owned()),
                Ok(_) => {
                    return Err(SinkError::config(
                        "access_key_secret_env",
                        format!("environment variable {name} is empty"),
                    ))
                }
                Err(_) => {
                    return Err(SinkError::config(
                        "access_key_secret_env",
                        format!(
                            "environment variable {name} is not set in the daemon's environment: set it \
                             there (e.g. systemd EnvironmentFile=) or use access_key_secret_file"
                        ),
                    ))
                }
            },
        };
        let security_token = match &config.security_token {
            CredentialSource::File(path) => Some(read_private_file("security_token_file", path)?),
            // Optional: AccessKeys of a RAM user need no token.
            CredentialSource::Env(name) => std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim().to_owned())),
        };
        if let Some(token) = &security_token {
            // It is sent as a header value.
            if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
                let key = match config.security_token {
                    CredentialSource::File(_) => "security_token_file",
                    CredentialSource::Env(_) => "security_token_env",
                };
                return Err(SinkError::config(
                    key,
                    "the security token has characters that cannot be sent in an HTTP header \
                     (expected printable ASCII without spaces)",
                ));
            }
        }
        Ok(Credentials {
            access_key_id: config.access_key_id.clone(),
            access_key_secret,
            security_token,
        })
    }

    /// For `check-config`: the files named by the config are there, are
    /// private and readable. Environment variables are not checked: they
    /// are usually set only in the service's own environment, so a check
    /// from a shell would fail for no reason; `open` checks them.
    ///
    /// # Errors
    /// As [`Credentials::load`].
    pub fn check(config: &LogServiceConfig) -> Result<(), SinkError> {
        if let CredentialSource::File(path) = &config.secret {
            read_private_file("access_key_secret_file", path)?;
        }
        if let CredentialSource::File(path) = &config.security_token {
            read_private_file("security_token_file", path)?;
        }
        Ok(())
    }
}

/// Reads a credential file, refusing one that group or others may read or
/// write (as ssh does with private keys): a secret readable by others is a
/// leaked secret, and one writable by others lets them swap the account.
///
/// # Errors
/// [`SinkError::config`] on `key`, with the path and, for a file too open,
/// its mode and the fix. Never with the file's content.
pub fn read_private_file(key: &str, path: &Path) -> Result<Secret, SinkError> {
    let shown = path.display();
    let meta = fs::metadata(path)
        .map_err(|e| SinkError::config(key, format!("cannot read {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(SinkError::config(
            key,
            format!("cannot read {shown}: not a regular file"),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o066 != 0 {
        return Err(SinkError::config(
            key,
            format!(
                "{shown} has mode {mode:04o}: it is readable or writable by group or others, and it holds a \
                 credential; refusing it: run `chmod 600 {shown}`"
            ),
        ));
    }
    let text = fs::read_to_string(path)
        .map_err(|e| SinkError::config(key, format!("cannot read {shown}: {e}")))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(SinkError::config(key, format!("{shown} is empty")));
    }
    Ok(Secret::new(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "flowlogd-logservice-unit-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn file(&self, content: &str, mode: u32) -> std::path::PathBuf {
            let p = self.0.join("secret");
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_private_file_is_read_and_trimmed() {
        let s = Scratch::new("private");
        let p = s.file("s3cr3t-value\n", 0o600);
        assert_eq!(read_private_file("k", &p).unwrap().expose(), "s3cr3t-value");
        assert_eq!(
            format!("{:?}", read_private_file("k", &p).unwrap()),
            "Secret(<redacted>)"
        );
    }

    #[test]
    fn a_file_open_to_others_is_refused_without_its_content() {
        let s = Scratch::new("open");
        for mode in [0o644, 0o640, 0o602, 0o620] {
            let p = s.file("s3cr3t-value", mode);
            let e = read_private_file("access_key_secret_file", &p).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("access_key_secret_file"));
            assert!(e.message.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(e.message.contains("chmod 600"), "{e}");
            assert!(!e.message.contains("s3cr3t"), "{e}");
        }
        // Execute bits reveal nothing.
        let p = s.file("s3cr3t-value", 0o711);
        assert!(read_private_file("k", &p).is_ok());
    }

    #[test]
    fn missing_empty_and_directory_files_are_refused() {
        let s = Scratch::new("missing");
        let e = read_private_file("k", &s.0.join("nope")).unwrap_err();
        assert!(e.message.contains("No such file"), "{e}");
        let e = read_private_file("k", &s.0).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e}");
        let p = s.file(" \n", 0o600);
        assert!(read_private_file("k", &p)
            .unwrap_err()
            .message
            .contains("is empty"));
    }
}
