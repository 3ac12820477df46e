//! The VIP file, in the shape the agent serves at `/v1/vips`:
//!
//! ```json
//! [{"vip":"11.1.2.3:80","protocol":"tcp",
//!   "backend":[{"ip":"10.0.0.2","port":8080,"weight":1}]}]
//! ```
//!
//! `weight` is optional (default 1); IPv6 is written `"[fd00::1]:80"` and
//! `"ip":"fd00::2"`. A named VIP is written with its DNS name and its address:
//! `{"vip":"web.marathon.l4lb.thisdcos.directory:80","address":"11.4.5.6:80",…}`
//! (the `/v1/vips` shape). Parsing is all-or-nothing: one bad entry rejects the
//! file, so a half-valid file never replaces what is programmed.
use std::{net::SocketAddr, path::Path};

use serde::{Deserialize, Serialize};

use super::table::{Backend, Protocol, VipKey, VipTable, VipTableError};

/// One entry as written in the file and served by `/v1/vips`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipEntry {
    pub vip: String,
    /// The address of a named VIP (`vip` is then `NAME:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub backend: Vec<BackendEntry>,
}

/// One backend as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    pub ip: String,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_protocol() -> String {
    "tcp".to_string()
}

fn default_weight() -> u32 {
    1
}

/// Why a VIP file was rejected. Every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum VipFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a JSON list of VIP entries: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: entry {index} ({vip:?}): {reason}")]
    Entry {
        path: String,
        index: usize,
        vip: String,
        reason: Box<EntryError>,
    },
}

/// What is wrong with one entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(
        "\"vip\" is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT), nor NAME:PORT with an \"address\""
    )]
    BadVip,
    #[error("\"address\" {0:?} is not ADDRESS:PORT with the port of \"vip\"")]
    BadAddress(String),
    #[error("backend {0}: \"ip\" {1:?} is not an IP address")]
    BadBackendIp(usize, String),
    #[error(transparent)]
    Table(#[from] VipTableError),
}

/// Reads and validates a VIP file.
pub fn load(path: &Path) -> Result<VipTable, VipFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| VipFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses VIP file text; `origin` names the file in errors.
pub fn parse(origin: &str, text: &str) -> Result<VipTable, VipFileError> {
    let entries: Vec<VipEntry> =
        serde_json::from_str(text).map_err(|source| VipFileError::Json {
            path: origin.to_string(),
            source,
        })?;
    let mut table = VipTable::new();
    for (index, entry) in entries.iter().enumerate() {
        add_entry(&mut table, entry).map_err(|reason| VipFileError::Entry {
            path: origin.to_string(),
            index,
            vip: entry.vip.clone(),
            reason: Box::new(reason),
        })?;
    }
    Ok(table)
}

/// `vip` (+ `address`) → the VIP's address and, for a named VIP, its name.
fn vip_address(entry: &VipEntry) -> Result<(SocketAddr, Option<String>), EntryError> {
    if let Ok(addr) = entry.vip.parse::<SocketAddr>() {
        return Ok((addr, None));
    }
    let (name, port) = entry.vip.rsplit_once(':').ok_or(EntryError::BadVip)?;
    let port: u16 = port.parse().map_err(|_| EntryError::BadVip)?;
    let address = entry.address.as_ref().ok_or(EntryError::BadVip)?;
    let addr: SocketAddr = address
        .parse()
        .map_err(|_| EntryError::BadAddress(address.clone()))?;
    if name.is_empty() || addr.port() != port {
        return Err(EntryError::BadAddress(address.clone()));
    }
    Ok((addr, Some(name.to_string())))
}

fn add_entry(table: &mut VipTable, entry: &VipEntry) -> Result<(), EntryError> {
    let (addr, name) = vip_address(entry)?;
    let protocol: Protocol = entry.protocol.parse()?;
    let backends = entry
        .backend
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let ip =
                b.ip.parse()
                    .map_err(|_| EntryError::BadBackendIp(i, b.ip.clone()))?;
            Ok(Backend {
                addr: SocketAddr::new(ip, b.port),
                weight: b.weight,
                healthy: true,
            })
        })
        .collect::<Result<Vec<_>, EntryError>>()?;
    let key = VipKey { addr, protocol };
    table.insert(key, backends)?;
    if let Some(name) = name {
        table.set_name(key, name);
    }
    Ok(())
}

/// The table in file / `/v1/vips` shape (inverse of [`parse`]).
pub fn to_entries(table: &VipTable) -> Vec<VipEntry> {
    table
        .iter()
        .map(|(key, backends)| VipEntry {
            vip: match table.name(key) {
                Some(name) => format!("{name}:{}", key.addr.port()),
                None => key.addr.to_string(),
            },
            address: table.name(key).map(|_| key.addr.to_string()),
            protocol: key.protocol.to_string(),
            backend: backends
                .iter()
                .map(|b| BackendEntry {
                    ip: b.addr.ip().to_string(),
                    port: b.addr.port(),
                    weight: b.effective_weight(),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_v6_defaults_and_round_trips() {
        let text = r#"[
          {"vip":"11.1.2.3:80","protocol":"tcp","backend":[{"ip":"10.0.0.2","port":8080,"weight":3},{"ip":"10.0.0.3","port":8080}]},
          {"vip":"[fd00::1]:53","protocol":"udp","backend":[{"ip":"fd00::2","port":5353}]}
        ]"#;
        let t = parse("vips.json", text).unwrap();
        assert_eq!(t.len(), 2);
        let key = VipKey {
            addr: "11.1.2.3:80".parse().unwrap(),
            protocol: Protocol::Tcp,
        };
        let b = t.get(&key).unwrap();
        assert_eq!((b[0].weight, b[1].weight), (3, 1));
        let again = serde_json::to_string(&to_entries(&t)).unwrap();
        assert_eq!(parse("again", &again).unwrap(), t);
    }

    #[test]
    fn named_entries_carry_their_address() {
        let text = r#"[{"vip":"web.marathon.l4lb.thisdcos.directory:80","address":"11.4.5.6:80","backend":[{"ip":"10.0.0.1","port":8080}]}]"#;
        let t = parse("f", text).unwrap();
        let (key, _) = t.iter().next().unwrap();
        assert_eq!(key.addr.to_string(), "11.4.5.6:80");
        assert_eq!(t.name(key), Some("web.marathon.l4lb.thisdcos.directory"));
        let again = serde_json::to_string(&to_entries(&t)).unwrap();
        assert_eq!(parse("again", &again).unwrap(), t);
        let text = r#"[{"vip":"web:80","address":"11.4.5.6:81","backend":[]}]"#;
        assert!(
            parse("f", text)
                .unwrap_err()
                .to_string()
                .contains("address")
        );
        let text = r#"[{"vip":"web:80","backend":[]}]"#;
        assert!(
            parse("f", text)
                .unwrap_err()
                .to_string()
                .contains("NAME:PORT")
        );
    }

    #[test]
    fn errors_name_file_entry_and_reason() {
        let text = r#"[{"vip":"11.1.2.3:80","backend":[]},{"vip":"11.1.2.3","backend":[]}]"#;
        let err = parse("/etc/garrison/vips.json", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/garrison/vips.json"), "{err}");
        assert!(err.contains("entry 1"), "{err}");
        assert!(err.contains("ADDRESS:PORT"), "{err}");

        let text = r#"[{"vip":"11.1.2.3:80","backend":[{"ip":"ten","port":1}]}]"#;
        let err = parse("f", text).unwrap_err().to_string();
        assert!(err.contains("\"ten\" is not an IP address"), "{err}");

        let text = r#"[{"vip":"11.1.2.3:80","protocol":"sctp","backend":[]}]"#;
        assert!(
            parse("f", text)
                .unwrap_err()
                .to_string()
                .contains("unknown protocol")
        );

        let text = r#"{"vip":"11.1.2.3:80"}"#;
        assert!(matches!(parse("f", text), Err(VipFileError::Json { .. })));
        let text = r#"[{"vip":"11.1.2.3:80","backend":[],"bogus":1}]"#;
        assert!(parse("f", text).unwrap_err().to_string().contains("bogus"));
    }
}
