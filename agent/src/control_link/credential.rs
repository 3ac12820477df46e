//! The agent's credential at the control: how the stream authenticates
//! (`Authorization: agent <id>:<secret>` once joined, `token=<join token>`
//! before), and the file it is kept in (`<state_dir>/control-credential.json`,
//! 0600, written atomically when the control sends it).
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the control gave this agent when it joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCredential {
    pub agent_id: String,
    pub secret: String,
}

/// Why there is nothing to authenticate with.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no credential for agent {agent_id:?} in {path} and no join token: give --join-token (garrison-control token create --join)"
    )]
    Nothing { agent_id: String, path: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// The credential in `path`, if it is there and is `agent_id`'s.
pub fn load(path: &Path, agent_id: &str) -> Result<Option<AgentCredential>, CredentialError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    let c: AgentCredential = serde_json::from_str(&text).map_err(|e| CredentialError::File {
        path: path.display().to_string(),
        message: format!("not a credential: {e}"),
    })?;
    if c.agent_id != agent_id {
        tracing::warn!(path = %path.display(), stored = %c.agent_id, agent_id, "the stored credential is another agent id's; ignored");
        return Ok(None);
    }
    Ok(Some(c))
}

/// Keeps `c` in `path` (0600, atomically).
pub fn store(path: &Path, c: &AgentCredential) -> Result<(), CredentialError> {
    let err = |e: std::io::Error| CredentialError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(serde_json::to_string(c).expect("serialisable").as_bytes())
        .map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The `Authorization` value for the stream: the agent's credential when
/// it has one, else the join token.
pub fn authorization(
    stored: Option<&AgentCredential>,
    join_token: Option<&str>,
    agent_id: &str,
    path: &Path,
) -> Result<String, CredentialError> {
    match (stored, join_token) {
        (Some(c), _) => Ok(format!("agent {}:{}", c.agent_id, c.secret)),
        (None, Some(t)) => Ok(format!("token={t}")),
        (None, None) => Err(CredentialError::Nothing {
            agent_id: agent_id.to_string(),
            path: path.display().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_credential_wins_over_the_join_token_and_is_kept_private() {
        let dir = std::env::temp_dir().join(format!("garrison-cred-{}", std::process::id()));
        let path = dir.join("control-credential.json");
        assert_eq!(load(&path, "a1").unwrap(), None);
        assert_eq!(
            authorization(None, Some("J"), "a1", &path).unwrap(),
            "token=J"
        );
        assert!(authorization(None, None, "a1", &path).is_err());
        let c = AgentCredential {
            agent_id: "a1".into(),
            secret: "s3".into(),
        };
        store(&path, &c).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = load(&path, "a1").unwrap().unwrap();
        assert_eq!(
            authorization(Some(&back), Some("J"), "a1", &path).unwrap(),
            "agent a1:s3"
        );
        // Another id's credential is not used.
        assert_eq!(load(&path, "a2").unwrap(), None);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load(&path, "a1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
