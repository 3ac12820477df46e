//! Marathon app definitions: the supported subset, defaults and validation
//! (pure).
//!
//! Defaults follow Marathon: `instances` 1, `cpus` 1, `mem` 128, `disk` 0,
//! role `*`, one port definition `{port: 0, protocol: tcp}` when none is
//! given, health checks with grace 300 s, interval 60 s, timeout 20 s, 3
//! consecutive failures, HTTP path `/`, upgrade strategy
//! `{minimumHealthCapacity: 1, maximumOverCapacity: 1}`. Invalid
//! definitions give every problem at once as `{path, errors}` pairs, the shape
//! of Marathon's 422 answer.
use std::collections::BTreeMap;

use garrison_proto::{HealthCheckProtocol, Protocol};
use serde::{Deserialize, Serialize};

/// An app as stored and shown (`GET /v2/apps/{id}`), defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    pub cmd: String,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub role: String,
    pub port_definitions: Vec<PortDefinition>,
    pub health_checks: Vec<HealthCheck>,
    pub labels: BTreeMap<String, String>,
    pub constraints: Vec<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub upgrade_strategy: UpgradeStrategy,
    /// The user the tasks run as (`None`: the agent's default user, `nobody`
    /// unless configured). Apps stored before this field load as `None`;
    /// `None` is not written (stored apps and answers stay as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Bumped on every change of the definition (not on scaling).
    pub version: u64,
}

/// One port of the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// The service port (0 in a request: one is assigned from 10000–20000).
    pub port: u16,
    /// Marathon's text `tcp`, `udp`, `udp,tcp` or `tcp,udp` (one VIP per
    /// protocol), in the order written.
    #[serde(with = "protocol_list")]
    pub protocol: Vec<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `TCP` or `COMMAND` (`MESOS_HTTP` and `MESOS_TCP` are accepted
    /// as `HTTP` and `TCP`: the agent runs every check).
    pub protocol: HealthCheckProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub port_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    pub grace_period_seconds: f64,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub max_consecutive_failures: u32,
}

/// A port's protocols as Marathon writes them: comma-separated names.
mod protocol_list {
    use garrison_proto::Protocol;
    use serde::{Deserialize, Deserializer, Serializer};

    /// `udp,tcp` → `[Udp, Tcp]`; an empty or unknown name is an error.
    pub(super) fn parse(text: &str) -> Result<Vec<Protocol>, garrison_proto::UnknownName> {
        text.split(',').map(str::parse).collect()
    }

    pub(super) fn serialize<S: Serializer>(list: &[Protocol], s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = list.iter().map(|p| p.as_str()).collect();
        s.serialize_str(&names.join(","))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Protocol>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A COMMAND check's command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

/// How a new version replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    pub minimum_health_capacity: f64,
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// One invalid field: Marathon's `{"path": "/cpus", "errors": ["…"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub errors: Vec<String>,
}

/// Why a definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Object is not valid")]
pub struct InvalidApp {
    pub details: Vec<FieldError>,
}

/// A placement constraint this control understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// `["hostname", "UNIQUE"]`: at most one instance per agent.
    HostnameUnique,
    /// `["hostname", "CLUSTER", "h"]`: only on agent `h`.
    HostnameCluster(String),
}

impl App {
    /// The understood constraints (validation guarantees every one parses).
    pub fn constraints(&self) -> Vec<Constraint> {
        self.constraints
            .iter()
            .filter_map(|c| parse_constraint(c).ok())
            .collect()
    }

    /// VIP labels of each port: `(port index, label value)`.
    pub fn vip_labels(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, p) in self.port_definitions.iter().enumerate() {
            for (k, v) in &p.labels {
                if k.starts_with("VIP_") {
                    out.push((i, v.clone()));
                }
            }
        }
        out
    }

    /// The framework name its tasks are published under.
    pub fn framework(&self) -> &'static str {
        "marathon"
    }
}

fn parse_constraint(c: &[String]) -> Result<Constraint, String> {
    match c {
        [field, op] if field == "hostname" && op == "UNIQUE" => Ok(Constraint::HostnameUnique),
        [field, op, value] if field == "hostname" && op == "CLUSTER" => {
            Ok(Constraint::HostnameCluster(value.clone()))
        }
        [field, op, ..] if field != "hostname" => Err(format!(
            "constraint field {field:?} is not supported (only hostname) with operator {op}"
        )),
        [_, op, ..] => Err(format!(
            "constraint operator {op:?} is not supported (UNIQUE, CLUSTER)"
        )),
        _ => Err("a constraint is [field, operator] or [field, operator, value]".into()),
    }
}

/// Normalises an app id: leading `/`, no trailing `/`. Each segment is
/// Marathon's: lowercase letters, digits, `-` and `.`, not starting or ending
/// with `-`.
pub fn normalize_id(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let body = trimmed.trim_start_matches('/');
    if body.is_empty() {
        return Err("must not be empty".into());
    }
    for seg in body.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !seg.starts_with('-')
            && !seg.ends_with('-');
        if !ok {
            return Err(format!(
                "path segment {seg:?} must be lowercase letters, digits, '-' and '.', not starting or ending with '-'"
            ));
        }
    }
    Ok(format!("/{body}"))
}

/// Parses and validates a definition (`POST /v2/apps` body, or `PUT` with
/// `id` taken from the URL when absent). Unknown fields are ignored, as
/// Marathon does for fields it does not know.
pub fn parse_app(body: &[u8], id_from_path: Option<&str>) -> Result<App, InvalidApp> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| InvalidApp {
        details: vec![FieldError {
            path: "/".into(),
            errors: vec![format!("not valid JSON: {e}")],
        }],
    })?;
    let mut v = Validator::default();
    let Some(obj) = value.as_object() else {
        v.error("/", "expected a JSON object");
        return Err(v.finish().unwrap_err());
    };

    let raw_id = obj
        .get("id")
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .or_else(|| id_from_path.map(str::to_string));
    let id = match raw_id {
        None => {
            v.error("/id", "is required");
            String::new()
        }
        Some(raw) => match normalize_id(&raw) {
            Ok(id) => {
                if let Some(p) = id_from_path
                    && normalize_id(p).ok().as_deref() != Some(id.as_str())
                {
                    v.error("/id", format!("{id} does not match the URL's {p}"));
                }
                id
            }
            Err(e) => {
                v.error("/id", e);
                String::new()
            }
        },
    };
    let cmd = match obj.get("cmd") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => {
            v.error("/cmd", "must be a non-empty string");
            String::new()
        }
        None => {
            v.error("/cmd", "is required (containers are not supported)");
            String::new()
        }
    };
    let instances = v.uint(obj.get("instances"), "/instances", 1, 10_000) as u32;
    let cpus = v.number(obj.get("cpus"), "/cpus", 1.0, 0.01);
    let mem = v.number(obj.get("mem"), "/mem", 128.0, 4.0);
    let disk = v.number(obj.get("disk"), "/disk", 0.0, 0.0);
    let role = match obj.get("role") {
        None => "*".to_string(),
        Some(serde_json::Value::String(r))
            if r == "*" || crate::allocator::validate_role(r).is_ok() =>
        {
            r.clone()
        }
        Some(_) => {
            v.error(
                "/role",
                "must be * or a role name (a/b, letters, digits, . _ -)",
            );
            String::new()
        }
    };
    let labels = v.string_map(obj.get("labels"), "/labels");
    if let Err(errors) = super::autoscale::spec_from_labels(&labels) {
        for (key, why) in errors {
            v.error(&format!("/labels/{key}"), why);
        }
    }
    let env = v.string_map(obj.get("env"), "/env");
    let port_definitions = v.ports(obj.get("portDefinitions"));
    let health_checks = v.health_checks(obj.get("healthChecks"), port_definitions.len());
    let constraints = v.constraints(obj.get("constraints"));
    let upgrade_strategy = v.upgrade(obj.get("upgradeStrategy"));
    let user = v.user(obj.get("user"));
    for (i, p) in port_definitions.iter().enumerate() {
        for (k, val) in p.labels.iter().filter(|(k, _)| k.starts_with("VIP_")) {
            let path = format!("/portDefinitions({i})/labels/{k}");
            match parse_vip_label(val) {
                Err(_) => v.error(
                    &path,
                    format!("{val:?} is not a VIP: use /name:port or a.b.c.d:port"),
                ),
                Ok(VipLabel::Ip { ip, .. }) => {
                    if let Some(why) = unfit_vip_ip(ip) {
                        v.error(&path, format!("{val:?}: {ip} is {why} and cannot be a VIP (it would capture every agent's own connections to it)"));
                    }
                }
                Ok(VipLabel::Named { .. }) => {}
            }
        }
    }
    v.finish()?;
    Ok(App {
        id,
        cmd,
        instances,
        cpus,
        mem,
        disk,
        role,
        port_definitions,
        health_checks,
        labels,
        constraints,
        env,
        upgrade_strategy,
        user,
        version: 1,
    })
}

/// A VIP label value: named (`/web:80`) or an address (`10.1.2.3:80`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipLabel {
    Named { name: String, port: u16 },
    Ip { ip: std::net::Ipv4Addr, port: u16 },
}

/// Why `ip` cannot be a VIP address, if it cannot (the agents refuse the
/// same spaces, and their own addresses, again).
fn unfit_vip_ip(ip: std::net::Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Parses a `VIP_n` label value.
pub fn parse_vip_label(value: &str) -> Result<VipLabel, String> {
    let (host, port) = value
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?} has no :port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{value:?}: port must be 1 to 65535"))?;
    if let Ok(ip) = host.parse() {
        return Ok(VipLabel::Ip { ip, port });
    }
    let name = host.trim_start_matches('/');
    if garrison_proto::named::sanitize_label(name).is_empty() {
        return Err(format!("{value:?}: the name has no usable characters"));
    }
    Ok(VipLabel::Named {
        name: name.to_string(),
        port,
    })
}

#[derive(Default)]
struct Validator {
    details: BTreeMap<String, Vec<String>>,
}

impl Validator {
    fn error(&mut self, path: &str, why: impl Into<String>) {
        self.details
            .entry(path.to_string())
            .or_default()
            .push(why.into());
    }

    fn finish(self) -> Result<(), InvalidApp> {
        if self.details.is_empty() {
            return Ok(());
        }
        Err(InvalidApp {
            details: self
                .details
                .into_iter()
                .map(|(path, errors)| FieldError { path, errors })
                .collect(),
        })
    }

    fn number(&mut self, v: Option<&serde_json::Value>, path: &str, default: f64, min: f64) -> f64 {
        match v {
            None | Some(serde_json::Value::Null) => default,
            Some(x) => match x.as_f64() {
                Some(n) if n.is_finite() && n >= min => n,
                _ => {
                    self.error(path, format!("must be a number ≥ {min}"));
                    default
                }
            },
        }
    }

    fn uint(&mut self, v: Option<&serde_json::Value>, path: &str, default: u64, max: u64) -> u64 {
        match v {
            None | Some(serde_json::Value::Null) => default,
            Some(x) => match x.as_u64() {
                Some(n) if n <= max => n,
                _ => {
                    self.error(path, format!("must be a whole number from 0 to {max}"));
                    default
                }
            },
        }
    }

    fn string_map(
        &mut self,
        v: Option<&serde_json::Value>,
        path: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match v {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(m)) => {
                for (k, val) in m {
                    match val.as_str() {
                        Some(s) => {
                            out.insert(k.clone(), s.to_string());
                        }
                        None => self.error(&format!("{path}/{k}"), "must be a string"),
                    }
                }
            }
            Some(_) => self.error(path, "must be an object of strings"),
        }
        out
    }

    fn ports(&mut self, v: Option<&serde_json::Value>) -> Vec<PortDefinition> {
        let list = match v {
            None | Some(serde_json::Value::Null) => {
                return vec![PortDefinition {
                    port: 0,
                    protocol: vec![Protocol::Tcp],
                    name: None,
                    labels: BTreeMap::new(),
                }];
            }
            Some(serde_json::Value::Array(a)) => a,
            Some(_) => {
                self.error("/portDefinitions", "must be an array");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let path = format!("/portDefinitions({i})");
            let Some(o) = p.as_object() else {
                self.error(&path, "must be an object");
                continue;
            };
            let port = self.uint(o.get("port"), &format!("{path}/port"), 0, 65535) as u16;
            let text = o.get("protocol").and_then(|x| x.as_str()).unwrap_or("tcp");
            let protocol = match text {
                "tcp" => vec![Protocol::Tcp],
                "udp" => vec![Protocol::Udp],
                "udp,tcp" => vec![Protocol::Udp, Protocol::Tcp],
                "tcp,udp" => vec![Protocol::Tcp, Protocol::Udp],
                _ => {
                    self.error(&format!("{path}/protocol"), "must be tcp, udp or udp,tcp");
                    vec![Protocol::Tcp]
                }
            };
            let name = o.get("name").and_then(|x| x.as_str()).map(str::to_string);
            let labels = self.string_map(o.get("labels"), &format!("{path}/labels"));
            out.push(PortDefinition {
                port,
                protocol,
                name,
                labels,
            });
        }
        out
    }

    fn health_checks(&mut self, v: Option<&serde_json::Value>, ports: usize) -> Vec<HealthCheck> {
        let list = match v {
            None | Some(serde_json::Value::Null) => return Vec::new(),
            Some(serde_json::Value::Array(a)) => a,
            Some(_) => {
                self.error("/healthChecks", "must be an array");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, h) in list.iter().enumerate() {
            let path = format!("/healthChecks({i})");
            let Some(o) = h.as_object() else {
                self.error(&path, "must be an object");
                continue;
            };
            let protocol = o
                .get("protocol")
                .and_then(|x| x.as_str())
                .unwrap_or("HTTP")
                .to_ascii_uppercase();
            let protocol = match protocol.as_str() {
                "HTTP" | "MESOS_HTTP" => HealthCheckProtocol::Http,
                "TCP" | "MESOS_TCP" => HealthCheckProtocol::Tcp,
                "COMMAND" => HealthCheckProtocol::Command,
                _ => {
                    self.error(&format!("{path}/protocol"), "must be HTTP, TCP or COMMAND");
                    HealthCheckProtocol::Http
                }
            };
            let port_index =
                self.uint(o.get("portIndex"), &format!("{path}/portIndex"), 0, 1000) as usize;
            let command = o
                .get("command")
                .and_then(|c| c.get("value"))
                .and_then(|c| c.as_str())
                .map(|value| CommandCheck {
                    value: value.to_string(),
                });
            if protocol == HealthCheckProtocol::Command && command.is_none() {
                self.error(
                    &format!("{path}/command"),
                    "COMMAND checks need command.value",
                );
            }
            if protocol != HealthCheckProtocol::Command && port_index >= ports {
                self.error(
                    &format!("{path}/portIndex"),
                    format!("{port_index} is not an index of the app's {ports} ports"),
                );
            }
            let path_field = (protocol == HealthCheckProtocol::Http).then(|| {
                o.get("path")
                    .and_then(|x| x.as_str())
                    .unwrap_or("/")
                    .to_string()
            });
            let grace = self.number(
                o.get("gracePeriodSeconds"),
                &format!("{path}/gracePeriodSeconds"),
                300.0,
                0.0,
            );
            let interval = self.number(
                o.get("intervalSeconds"),
                &format!("{path}/intervalSeconds"),
                60.0,
                0.1,
            );
            let timeout = self.number(
                o.get("timeoutSeconds"),
                &format!("{path}/timeoutSeconds"),
                20.0,
                0.1,
            );
            let failures = self.uint(
                o.get("maxConsecutiveFailures"),
                &format!("{path}/maxConsecutiveFailures"),
                3,
                1_000_000,
            ) as u32;
            out.push(HealthCheck {
                protocol,
                path: path_field,
                port_index,
                command,
                grace_period_seconds: grace,
                interval_seconds: interval,
                timeout_seconds: timeout,
                max_consecutive_failures: failures,
            });
        }
        out
    }

    /// Marathon's `user`: absent or null for the agent's default, else a
    /// user name (the agent refuses names it does not know, and root unless
    /// it allows root tasks).
    fn user(&mut self, v: Option<&serde_json::Value>) -> Option<String> {
        match v {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(u)) if garrison_proto::is_plausible_user_name(u) => {
                Some(u.clone())
            }
            Some(other) => {
                self.error(
                    "/user",
                    format!(
                        "{other} is not a user name (1 to 32 of A-Z a-z 0-9 _ . -, starting with a letter or _)"
                    ),
                );
                None
            }
        }
    }

    fn constraints(&mut self, v: Option<&serde_json::Value>) -> Vec<Vec<String>> {
        let list = match v {
            None | Some(serde_json::Value::Null) => return Vec::new(),
            Some(serde_json::Value::Array(a)) => a,
            Some(_) => {
                self.error("/constraints", "must be an array");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let path = format!("/constraints({i})");
            let parts: Option<Vec<String>> = c
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or(None);
            match parts {
                None => self.error(&path, "must be an array of strings"),
                Some(parts) => match parse_constraint(&parts) {
                    Ok(_) => out.push(parts),
                    Err(e) => self.error(&path, e),
                },
            }
        }
        out
    }

    fn upgrade(&mut self, v: Option<&serde_json::Value>) -> UpgradeStrategy {
        let Some(o) = v.and_then(|x| x.as_object()) else {
            if v.is_some_and(|x| !x.is_null()) {
                self.error("/upgradeStrategy", "must be an object");
            }
            return UpgradeStrategy::default();
        };
        let mut s = UpgradeStrategy::default();
        for (key, field) in [
            ("minimumHealthCapacity", &mut s.minimum_health_capacity),
            ("maximumOverCapacity", &mut s.maximum_over_capacity),
        ] {
            if let Some(x) = o.get(key) {
                match x.as_f64() {
                    Some(n) if (0.0..=1.0).contains(&n) => *field = n,
                    _ => self.error(
                        &format!("/upgradeStrategy/{key}"),
                        "must be a number from 0 to 1",
                    ),
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_marathons() {
        let app = parse_app(
            br#"{"id":"web","cmd":"python3 -m http.server $PORT0"}"#,
            None,
        )
        .unwrap();
        assert_eq!(app.id, "/web");
        assert_eq!(
            (app.instances, app.cpus, app.mem, app.disk),
            (1, 1.0, 128.0, 0.0)
        );
        assert_eq!(app.role, "*");
        assert_eq!(app.port_definitions.len(), 1);
        assert_eq!(app.port_definitions[0].port, 0);
        assert_eq!(app.upgrade_strategy, UpgradeStrategy::default());
    }

    #[test]
    fn health_check_defaults() {
        let app = parse_app(
            br#"{"id":"/a/b","cmd":"x","healthChecks":[{"protocol":"HTTP"},{"protocol":"TCP","intervalSeconds":2}]}"#,
            None,
        )
        .unwrap();
        let h = &app.health_checks[0];
        assert_eq!(h.path.as_deref(), Some("/"));
        assert_eq!(
            (
                h.grace_period_seconds,
                h.interval_seconds,
                h.timeout_seconds,
                h.max_consecutive_failures
            ),
            (300.0, 60.0, 20.0, 3)
        );
        assert_eq!(app.health_checks[1].interval_seconds, 2.0);
        assert_eq!(app.health_checks[1].path, None);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = parse_app(
            br#"{"id":"Bad_Id","cpus":-1,"instances":"3","portDefinitions":[{"port":80,"labels":{"VIP_0":"nonsense"}}],
                "constraints":[["rack","GROUP_BY"]],"healthChecks":[{"protocol":"TCP","portIndex":4}]}"#,
            None,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.details.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/cmd",
                "/constraints(0)",
                "/cpus",
                "/healthChecks(0)/portIndex",
                "/id",
                "/instances",
                "/portDefinitions(0)/labels/VIP_0"
            ]
        );
        assert!(parse_app(b"[1,2]", None).is_err());
        assert!(parse_app(b"{not json", None).unwrap_err().details[0].errors[0].contains("JSON"));
    }

    #[test]
    fn vip_labels_in_reserved_space_are_refused_at_their_path() {
        let app = |vips: &str| {
            format!(
                r#"{{"id":"/web","cmd":"x","portDefinitions":[{{"port":0,"labels":{{"VIP_1":"11.1.2.3:80"}}}},{{"port":0,"labels":{vips}}}]}}"#
            )
        };
        for (value, why) in [
            ("127.0.0.1:5051", "loopback"),
            ("169.254.169.254:80", "link-local"),
            ("224.0.0.1:80", "multicast"),
            ("0.0.0.0:80", "unspecified"),
        ] {
            let err =
                parse_app(app(&format!(r#"{{"VIP_0":"{value}"}}"#)).as_bytes(), None).unwrap_err();
            assert_eq!(err.details.len(), 1, "{value}: {err:?}");
            assert_eq!(err.details[0].path, "/portDefinitions(1)/labels/VIP_0");
            let msg = &err.details[0].errors[0];
            assert!(msg.contains(value) && msg.contains(why), "{msg}");
        }
        assert!(parse_app(app(r#"{"VIP_0":"10.0.0.9:80"}"#).as_bytes(), None).is_ok());
        assert!(parse_app(app(r#"{"VIP_0":"/web:80"}"#).as_bytes(), None).is_ok());
    }

    #[test]
    fn ids_and_vip_labels() {
        assert_eq!(normalize_id("/web/frontend/").unwrap(), "/web/frontend");
        assert!(normalize_id("/web//x").is_err());
        assert!(normalize_id("-x").is_err());
        assert!(normalize_id("/a/../b").is_err());
        assert_eq!(
            parse_vip_label("/web:80").unwrap(),
            VipLabel::Named {
                name: "web".into(),
                port: 80
            }
        );
        assert_eq!(
            parse_vip_label("10.1.2.3:5000").unwrap(),
            VipLabel::Ip {
                ip: "10.1.2.3".parse().unwrap(),
                port: 5000
            }
        );
        assert!(parse_vip_label("/web:0").is_err());
        assert!(parse_vip_label("/web").is_err());
        assert!(parse_vip_label("/%%:80").is_err());
    }

    #[test]
    fn put_takes_the_id_from_the_url_and_refuses_a_mismatch() {
        assert_eq!(
            parse_app(br#"{"cmd":"x"}"#, Some("/web")).unwrap().id,
            "/web"
        );
        let err = parse_app(br#"{"id":"/other","cmd":"x"}"#, Some("/web")).unwrap_err();
        assert_eq!(err.details[0].path, "/id");
    }

    #[test]
    fn user_is_optional_and_must_be_a_name() {
        let app = |json: &str| parse_app(json.as_bytes(), None);
        assert_eq!(app(r#"{"id":"a","cmd":"x"}"#).unwrap().user, None);
        assert_eq!(
            app(r#"{"id":"a","cmd":"x","user":null}"#).unwrap().user,
            None
        );
        assert_eq!(
            app(r#"{"id":"a","cmd":"x","user":"www-data"}"#)
                .unwrap()
                .user
                .as_deref(),
            Some("www-data")
        );
        for bad in [r#""""#, "0", r#""1000""#, r#""a b""#, r#""-x""#, "[]"] {
            let err = app(&format!(r#"{{"id":"a","cmd":"x","user":{bad}}}"#)).unwrap_err();
            assert_eq!(err.details.len(), 1, "{bad}: {err:?}");
            assert_eq!(err.details[0].path, "/user", "{bad}");
        }
        // An app stored before the field existed still loads.
        let mut stored = serde_json::to_value(app(r#"{"id":"a","cmd":"x"}"#).unwrap()).unwrap();
        stored.as_object_mut().unwrap().remove("user");
        let back: App = serde_json::from_value(stored).unwrap();
        assert_eq!(back.user, None);
    }
}
