//! The API's credentials on disk (effects): the token file and the Unix
//! socket.
//!
//! - The token file (`api_token_file`, default `<state_dir>/api-token`) holds
//!   one line: 64 hex digits, 32 bytes from `getrandom(2)`, written 0600 at
//!   the agent's first start and reused after. An existing file must belong
//!   to the agent's user and be unreadable to others; the agent refuses to
//!   start otherwise, naming the file.
//! - The socket (`api_socket`, default `<state_dir>/agent.sock`) is created
//!   0600; a stale socket file from an earlier run is replaced, a live one
//!   (another agent answering) is an error. The mode is defence in depth:
//!   what lets a request mutate without the token is the peer's uid 0
//!   (`SO_PEERCRED`), checked per connection.
use std::{
    io::Write as _,
    os::unix::fs::{
        DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _,
        PermissionsExt as _,
    },
    path::{Path, PathBuf},
};

/// Why the token file or the socket cannot be used. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: mode {mode:04o} lets others read the API token; chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "{path}: owned by uid {owner}, not by the agent's uid {agent}; a token file another user owns can be replaced by them"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        agent: u32,
    },
    #[error(
        "{path}: not a token: expected one line of at least 32 visible characters (delete the file and the agent writes a new one)"
    )]
    Malformed { path: PathBuf },
    #[error("{path}: exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error(
        "{path}: another process answers on this socket (is another agent running with the same state directory?)"
    )]
    InUse { path: PathBuf },
}

fn io_error(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> CredentialError {
    let path = path.to_path_buf();
    move |source| CredentialError::Io { path, what, source }
}

/// The shortest token accepted from an existing file.
const MIN_TOKEN_LEN: usize = 32;

/// 32 bytes from the kernel's CSPRNG, as 64 lower-case hex digits.
fn random_token() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn create_dir(dir: &Path) -> Result<(), CredentialError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir, "creating the directory"))
}

/// A token file's text checked: one line of visible ASCII, long enough.
pub fn parse_token(path: &Path, text: &str) -> Result<String, CredentialError> {
    let token = text.trim();
    let ok = token.len() >= MIN_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(CredentialError::Malformed {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

/// Reads the token in `path`, or writes a new one there if there is none.
/// Returns the token and whether it was created now.
pub fn load_or_create_token(path: &Path) -> Result<(String, bool), CredentialError> {
    match std::fs::metadata(path) {
        Ok(meta) => return read_token(path, &meta).map(|t| (t, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path, "reading")(e)),
    }
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let token = random_token().map_err(io_error(path, "getrandom"))?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let mut file = match created {
        Ok(f) => f,
        // Another process wrote it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path).map_err(io_error(path, "reading"))?;
            return read_token(path, &meta).map(|t| (t, false));
        }
        Err(e) => return Err(io_error(path, "creating")(e)),
    };
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path, "writing"))?;
    Ok((token, true))
}

fn read_token(path: &Path, meta: &std::fs::Metadata) -> Result<String, CredentialError> {
    // SAFETY: geteuid has no preconditions.
    let agent = unsafe { libc::geteuid() };
    if meta.uid() != agent {
        return Err(CredentialError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            agent,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io_error(path, "reading"))?;
    parse_token(path, &text)
}

/// Binds the API's Unix socket at `path`, mode 0600 (see the module
/// documentation for a socket file left by an earlier run).
pub fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, CredentialError> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(CredentialError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(CredentialError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(io_error(path, "removing the stale socket"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path, "reading")(e)),
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(io_error(path, "binding the API socket"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(path, "chmod 600"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("garrison-cred-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_token_is_created_once_private_and_reused() {
        let dir = scratch("token");
        let path = dir.join("state/api-token");
        let (t1, created) = load_or_create_token(&path).unwrap();
        assert!(created);
        assert_eq!(t1.len(), 64);
        assert!(t1.bytes().all(|b| b.is_ascii_hexdigit()), "{t1}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (t2, created) = load_or_create_token(&path).unwrap();
        assert_eq!((t2.as_str(), created), (t1.as_str(), false), "reused");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_token(&path).unwrap_err().to_string();
        assert!(e.contains("api-token") && e.contains("0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short\n").unwrap();
        let e = load_or_create_token(&path).unwrap_err().to_string();
        assert!(e.contains("api-token") && e.contains("not a token"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(random_token().unwrap(), random_token().unwrap());
    }
}
