//! The environment Marathon gives a task (pure).
use std::collections::BTreeMap;

use super::app::App;

/// `PORT0..n`, `PORT`, `PORTS`, `PORT_<NAME>`, `HOST`, `MARATHON_APP_ID`,
/// `MARATHON_APP_VERSION`, `MARATHON_APP_RESOURCE_*`, `MARATHON_APP_LABELS`
/// and `MARATHON_APP_LABEL_<NAME>`, then the app's own `env` (which wins, as in
/// Marathon).
pub fn task_env(app: &App, host: &str, ports: &[u16]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (i, p) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
        if let Some(name) = app.port_definitions.get(i).and_then(|d| d.name.as_deref()) {
            env.insert(format!("PORT_{}", env_name(name)), p.to_string());
        }
    }
    if let Some(first) = ports.first() {
        env.insert("PORT".into(), first.to_string());
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    env.insert("PORTS".into(), list.join(","));
    env.insert("HOST".into(), host.to_string());
    env.insert("MARATHON_APP_ID".into(), app.id.clone());
    env.insert("MARATHON_APP_VERSION".into(), app.version.to_string());
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string());
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string());
    env.insert("MARATHON_APP_RESOURCE_DISK".into(), app.disk.to_string());
    let names: Vec<String> = app.labels.keys().map(|k| env_name(k)).collect();
    env.insert("MARATHON_APP_LABELS".into(), names.join(" "));
    for (k, v) in &app.labels {
        env.insert(format!("MARATHON_APP_LABEL_{}", env_name(k)), v.clone());
    }
    for (k, v) in &app.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// Upper case, anything but letters, digits and `_` as `_`.
fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marathon::app::parse_app;

    #[test]
    fn ports_host_and_app_env() {
        let app = parse_app(
            br#"{"id":"/web/front","cmd":"x","labels":{"tier":"edge"},"env":{"PORT":"override"},
                "portDefinitions":[{"port":0,"name":"http"},{"port":0}]}"#,
            None,
        )
        .unwrap();
        let env = task_env(&app, "node1", &[31000, 31001]);
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env["PORT1"], "31001");
        assert_eq!(env["PORT_HTTP"], "31000");
        assert_eq!(env["PORTS"], "31000,31001");
        assert_eq!(env["PORT"], "override");
        assert_eq!(env["HOST"], "node1");
        assert_eq!(env["MARATHON_APP_ID"], "/web/front");
        assert_eq!(env["MARATHON_APP_LABEL_TIER"], "edge");
        assert_eq!(env["MARATHON_APP_LABELS"], "TIER");
    }
}
