//! The metadata service's base URL (`metadata.base_url`): a value the
//! config validates and the HTTP client requests, so neither imports the
//! other for it.

use std::fmt;

/// An `http://host[:port]/path` URL. The path always starts with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// A name or an address; IPv6 literals without their brackets.
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    /// Parses a base URL: `http://` only, no user info, query or fragment.
    /// A missing trailing `/` is added, since paths are appended to it.
    ///
    /// # Errors
    /// A message for the operator saying what is wrong and what is expected.
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let expected = || {
            format!(
                "expected an http:// URL like \"http://100.100.100.200/latest/meta-data/\", got \"{s}\""
            )
        };
        if s.starts_with("https://") {
            return Err(format!(
                "https is not supported (the ECS metadata service is plain http on an address only the VM \
                 reaches), got \"{s}\""
            ));
        }
        let rest = s.strip_prefix("http://").ok_or_else(expected)?;
        if rest.contains(['?', '#', '@']) || rest.contains(char::is_whitespace) {
            return Err(expected());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(expected)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(expected)?),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(expected());
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(expected()),
            },
        };
        let mut path = path.to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// This URL with `relative` appended to its path.
    pub fn join(&self, relative: &str) -> HttpUrl {
        HttpUrl {
            path: format!("{}{}", self.path, relative.trim_start_matches('/')),
            ..self.clone()
        }
    }

    /// The `Host` header's value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "http://{host}:{}{}", self.port, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = HttpUrl::parse("http://100.100.100.200/latest/meta-data/").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                host: "100.100.100.200".into(),
                port: 80,
                path: "/latest/meta-data/".into()
            }
        );
        let u = HttpUrl::parse("http://127.0.0.1:8080/latest/meta-data").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/latest/meta-data/"));
        let u = HttpUrl::parse("http://[::1]:81").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 81, "/"));
        assert_eq!(u.authority(), "[::1]:81");
        assert_eq!(
            u.join("instance-id").to_string(),
            "http://[::1]:81/instance-id"
        );
        for bad in [
            "100.100.100.200/latest/",
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h/x?y=1",
            "http://user@h/",
            "http://h /",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(HttpUrl::parse("https://h/")
            .unwrap_err()
            .starts_with("https is not supported"));
    }
}
