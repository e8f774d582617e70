//! What the Alibaba Cloud ECS instance metadata service says about this VM
//! and its ENIs, read from the service's documented paths under
//! `/latest/meta-data/`:
//!
//! ```text
//! instance-id                                       i-bp13znx0m0me8cquu****
//! owner-account-id                                  1234567890123456
//! network/interfaces/macs/                          00:16:3e:0f:xx:xx/  (one per line)
//! network/interfaces/macs/<mac>/network-interface-id   eni-bp1b2c0jvnj0g17b****
//! network/interfaces/macs/<mac>/vpc-id                 vpc-bp1...
//! network/interfaces/macs/<mac>/vswitch-id             vsw-bp1...
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::http::{self, HttpError};
use crate::http_url::HttpUrl;
use crate::ids::check_id;
use crate::model::{EcsEni, EcsSnapshot, MacAddr};

/// Why the metadata could not be read.
#[derive(Debug)]
pub enum FetchError {
    /// The service did not answer (down, unreachable, timed out).
    Unreachable { path: String, error: HttpError },
    /// It answered something else than the document or a 404.
    Status { path: String, status: u16 },
    /// A document every ECS instance has is missing: not the metadata
    /// service, or a wrong base URL.
    Missing { path: String },
    /// A value that is not UTF-8 or not an id (see [`crate::ids`]).
    BadValue { path: String, why: String },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unreachable { path, error } => write!(f, "{path}: {error}"),
            FetchError::Status { path, status } => write!(f, "{path}: HTTP status {status}"),
            FetchError::Missing { path } => write!(
                f,
                "{path}: not found (404); is metadata.base_url the ECS metadata service's /latest/meta-data/?"
            ),
            FetchError::BadValue { path, why } => write!(f, "{path}: not a usable id: {why}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Where documents come from: the service over HTTP, or a table in tests.
pub trait DocumentSource {
    /// The document at `path` (relative to the base URL); `None` for 404.
    ///
    /// # Errors
    /// [`FetchError::Unreachable`] or [`FetchError::Status`].
    fn get(&mut self, path: &str) -> Result<Option<String>, FetchError>;
}

/// The service at a base URL, each request bounded by `timeout`.
pub struct HttpSource {
    pub base: HttpUrl,
    pub timeout: Duration,
}

impl DocumentSource for HttpSource {
    fn get(&mut self, path: &str) -> Result<Option<String>, FetchError> {
        let response = http::get(&self.base.join(path), self.timeout).map_err(|error| {
            FetchError::Unreachable {
                path: path.to_owned(),
                error,
            }
        })?;
        match response.status {
            200 => String::from_utf8(response.body)
                .map(Some)
                .map_err(|_| FetchError::BadValue {
                    path: path.to_owned(),
                    why: "not UTF-8".to_owned(),
                }),
            404 => Ok(None),
            status => Err(FetchError::Status {
                path: path.to_owned(),
                status,
            }),
        }
    }
}

/// Reads the instance and every ENI the service lists.
///
/// A listed MAC whose `network-interface-id` is missing is left out (the
/// service is still filling it in after a hot-plug; it is asked again);
/// a missing `vpc-id` or `vswitch-id` or `owner-account-id` is `-`.
///
/// # Errors
/// The first [`FetchError`]; a partial snapshot is never returned, so an
/// ENI is never half described.
pub fn fetch_snapshot(source: &mut dyn DocumentSource) -> Result<EcsSnapshot, FetchError> {
    let instance_id = required(source, "instance-id")?;
    let account_id = optional(source, "owner-account-id")?;
    let listing_path = "network/interfaces/macs/";
    let listing = source
        .get(listing_path)?
        .ok_or_else(|| FetchError::Missing {
            path: listing_path.to_owned(),
        })?;
    let mut enis = BTreeMap::new();
    for (mac, text) in parse_mac_listing(&listing) {
        let dir = format!("{listing_path}{text}/");
        let Some(eni_id) = value(source, &format!("{dir}network-interface-id"))? else {
            log::debug!("metadata: {dir}network-interface-id is not there yet");
            continue;
        };
        let vpc_id = optional(source, &format!("{dir}vpc-id"))?;
        let vswitch_id = optional(source, &format!("{dir}vswitch-id"))?;
        enis.insert(
            mac,
            EcsEni {
                eni_id,
                vpc_id,
                vswitch_id,
            },
        );
    }
    Ok(EcsSnapshot {
        instance_id,
        account_id,
        enis,
    })
}

/// The MACs of `network/interfaces/macs/`: one per line, each with a
/// trailing `/` (a directory), as written (the path segment to use) and as
/// bytes. Lines that are no MAC are skipped.
pub fn parse_mac_listing(listing: &str) -> Vec<(MacAddr, String)> {
    listing
        .split(['\n', '\r'])
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty())
        .filter_map(|l| match MacAddr::parse(l) {
            Some(mac) => Some((mac, l.to_owned())),
            None => {
                log::debug!("metadata: {l:?} in network/interfaces/macs/ is no MAC; skipped");
                None
            }
        })
        .collect()
}

fn value(source: &mut dyn DocumentSource, path: &str) -> Result<Option<String>, FetchError> {
    let Some(text) = source.get(path)? else {
        return Ok(None);
    };
    // Documents have no trailing newline today; tolerate one.
    let v = text.trim();
    check_id(v).map_err(|why| FetchError::BadValue {
        path: path.to_owned(),
        why: why.to_string(),
    })?;
    Ok(Some(v.to_owned()))
}

fn required(source: &mut dyn DocumentSource, path: &str) -> Result<String, FetchError> {
    value(source, path)?.ok_or_else(|| FetchError::Missing {
        path: path.to_owned(),
    })
}

fn optional(source: &mut dyn DocumentSource, path: &str) -> Result<String, FetchError> {
    Ok(value(source, path)?.unwrap_or_else(|| "-".to_owned()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Documents by path, as a test's stand-in for the service.
    #[derive(Default)]
    pub(crate) struct Table {
        pub docs: HashMap<String, String>,
        pub down: bool,
        pub requests: Vec<String>,
    }

    impl Table {
        /// The documents of an instance with these ENIs (mac, eni, vpc, vswitch).
        pub(crate) fn instance(enis: &[(&str, &str, &str, &str)]) -> Table {
            let mut docs = HashMap::new();
            docs.insert("instance-id".into(), "i-bp13znx0m0me8cquu0001".into());
            docs.insert("owner-account-id".into(), "1234567890123456".into());
            let listing: Vec<String> = enis.iter().map(|e| format!("{}/", e.0)).collect();
            docs.insert("network/interfaces/macs/".into(), listing.join("\n"));
            for (mac, eni, vpc, vsw) in enis {
                let dir = format!("network/interfaces/macs/{mac}/");
                docs.insert(format!("{dir}network-interface-id"), (*eni).into());
                docs.insert(format!("{dir}vpc-id"), (*vpc).into());
                docs.insert(format!("{dir}vswitch-id"), (*vsw).into());
            }
            Table {
                docs,
                ..Table::default()
            }
        }
    }

    impl DocumentSource for Table {
        fn get(&mut self, path: &str) -> Result<Option<String>, FetchError> {
            self.requests.push(path.to_owned());
            if self.down {
                return Err(FetchError::Unreachable {
                    path: path.to_owned(),
                    error: HttpError::Timeout,
                });
            }
            Ok(self.docs.get(path).cloned())
        }
    }

    const MAC_1: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x0f, 0x01, 0x02]);

    #[test]
    fn reads_the_instance_and_its_enis() {
        let mut t = Table::instance(&[
            (
                "00:16:3e:0f:01:02",
                "eni-bp1primary",
                "vpc-bp1a",
                "vsw-bp1a",
            ),
            ("00:16:3e:0f:0a:0b", "eni-bp1second", "vpc-bp1a", "vsw-bp1b"),
        ]);
        let s = fetch_snapshot(&mut t).unwrap();
        assert_eq!(s.instance_id, "i-bp13znx0m0me8cquu0001");
        assert_eq!(s.account_id, "1234567890123456");
        assert_eq!(s.enis.len(), 2);
        assert_eq!(
            s.enis[&MAC_1],
            EcsEni {
                eni_id: "eni-bp1primary".into(),
                vpc_id: "vpc-bp1a".into(),
                vswitch_id: "vsw-bp1a".into()
            }
        );
        assert_eq!(
            t.requests[..4],
            [
                "instance-id",
                "owner-account-id",
                "network/interfaces/macs/",
                "network/interfaces/macs/00:16:3e:0f:01:02/network-interface-id"
            ]
        );
    }

    #[test]
    fn listing_lines_are_macs_with_a_trailing_slash() {
        let l = parse_mac_listing("00:16:3e:0f:01:02/\n00:16:3E:0F:0A:0B/\r\n\nnot-a-mac/\n");
        assert_eq!(
            l,
            vec![
                (MAC_1, "00:16:3e:0f:01:02".to_owned()),
                (
                    MacAddr([0x00, 0x16, 0x3e, 0x0f, 0x0a, 0x0b]),
                    "00:16:3E:0F:0A:0B".to_owned()
                )
            ]
        );
        assert!(parse_mac_listing("").is_empty());
    }

    #[test]
    fn missing_pieces() {
        let mut t = Table::instance(&[("00:16:3e:0f:01:02", "eni-1", "vpc-1", "vsw-1")]);
        t.docs
            .remove("network/interfaces/macs/00:16:3e:0f:01:02/vswitch-id");
        t.docs.remove("owner-account-id");
        let s = fetch_snapshot(&mut t).unwrap();
        assert_eq!(s.enis[&MAC_1].vswitch_id, "-");
        assert_eq!(s.account_id, "-");
        // An ENI still being set up is left out, not half described.
        t.docs
            .remove("network/interfaces/macs/00:16:3e:0f:01:02/network-interface-id");
        assert!(fetch_snapshot(&mut t).unwrap().enis.is_empty());
        t.docs.remove("instance-id");
        assert_eq!(
            fetch_snapshot(&mut t).unwrap_err().to_string(),
            "instance-id: not found (404); is metadata.base_url the ECS metadata service's /latest/meta-data/?"
        );
    }

    #[test]
    fn unusable_values_and_a_dead_service_are_errors() {
        let mut t = Table::instance(&[("00:16:3e:0f:01:02", "eni 1", "vpc-1", "vsw-1")]);
        assert_eq!(
            fetch_snapshot(&mut t).unwrap_err().to_string(),
            "network/interfaces/macs/00:16:3e:0f:01:02/network-interface-id: not a usable id: ' ' at byte 3: \
             ids are printable ASCII without whitespace (they are fields of text records and log lines)"
        );
        t.docs.insert("instance-id".into(), "i-1\n".into());
        t.down = true;
        assert_eq!(
            fetch_snapshot(&mut t).unwrap_err().to_string(),
            "instance-id: no complete answer in time"
        );
    }
}
