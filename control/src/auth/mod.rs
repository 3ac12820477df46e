//! Who may use the control, DC/OS-compatible (Admin Router + IAM's roles).
//!
//! - [`accounts`]: users (Argon2id password hashes) and service accounts
//!   (RSA public keys), validation and views (pure).
//! - [`keys`]: the control's RS256 key (`DATA_DIR/auth/jwt-signing-key.pem`),
//!   session and join tokens, service accounts' login tokens.
//! - [`cache`]: verified tokens kept 60 s (revocation by account deletion is
//!   immediate; the TTL bounds anything else).
//! - [`secrets`]: random secrets, SHA-256, constant-time comparison.
//! - this file: [`Auth`], the accounts and agent credentials in memory,
//!   backed by the store (written through, fsynced, before the caller is
//!   answered).
//!
//! Every authenticated account may do everything (DC/OS 1.8 open edition:
//! no per-route permissions). Agents are not accounts: they join with a join
//! token and then hold a per-agent secret (stored as its SHA-256) bound to
//! their agent id.
//!
//! Locks: `accounts`, `agents` and `cache` are independent and never held
//! together nor across an `.await`; a poisoned lock is taken over (the data
//! behind each is replaced whole on every write, never left half-changed).
pub mod accounts;
pub mod cache;
pub mod keys;
pub mod secrets;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};
use accounts::{Account, AccountError, AccountRequest, AccountSecret};
use cache::TokenCache;
use keys::{KeyError, SigningKey, TokenKind, unix_now};

/// A session token's default lifetime (DC/OS: 5 days).
pub const SESSION_SECS: u64 = 5 * 24 * 3600;
/// A join token's default lifetime.
pub const JOIN_SECS: u64 = 3600;
/// The account made at first start.
pub const BOOTSTRAP_UID: &str = "bootstrap";
/// The cookie DC/OS clients read and send.
pub const COOKIE: &str = "dcos-acs-auth-cookie";

/// Where the first start writes the bootstrap credentials.
pub fn bootstrap_path(data_dir: &Path) -> PathBuf {
    data_dir.join("bootstrap-credentials.json")
}

/// An agent's stored credential: the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCredential {
    pub agent_id: String,
    pub secret_sha256: String,
    /// Unix seconds.
    pub issued: u64,
}

/// Why authentication or an account change failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing token: send Authorization: token=<JWT> (or Bearer <JWT>, or the {COOKIE} cookie); log in at POST /acs/api/v1/auth/login"
    )]
    Missing,
    #[error("{0}")]
    Refused(String),
    #[error("login failed for {0:?}: unknown account or wrong credentials")]
    BadCredentials(String),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("account {0:?} exists")]
    Exists(String),
    #[error("account {0:?} does not exist")]
    NoSuchAccount(String),
    #[error(
        "agent {0:?} already holds a credential; revoke it first (garrison-control agent revoke {0})"
    )]
    AgentHasCredential(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// A user nobody can log in as, checked when the uid is unknown.
fn unknown_account() -> &'static Account {
    static UNKNOWN: std::sync::OnceLock<Account> = std::sync::OnceLock::new();
    UNKNOWN.get_or_init(|| Account {
        uid: "unknown".into(),
        description: String::new(),
        secret: AccountSecret::PasswordHash(
            accounts::hash_password(&secrets::random_hex(16)).unwrap_or_default(),
        ),
    })
}

/// Accounts, agent credentials and the token key of a running control.
pub struct Auth {
    key: SigningKey,
    store: Arc<Store>,
    accounts: RwLock<BTreeMap<String, Account>>,
    agents: RwLock<HashMap<String, AgentCredential>>,
    cache: Mutex<TokenCache>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    /// Loads the key (made at first start), the accounts and the agents'
    /// credentials; with no account at all, creates `bootstrap` with a
    /// random password written to [`bootstrap_path`] (0600).
    pub fn open(data_dir: &Path, store: Arc<Store>) -> Result<Auth, AuthError> {
        let key = SigningKey::load_or_create(data_dir)?;
        let accounts: BTreeMap<String, Account> = store
            .load_accounts()?
            .into_iter()
            .map(|a| (a.uid.clone(), a))
            .collect();
        let agents = store
            .load_agent_credentials()?
            .into_iter()
            .map(|c| (c.agent_id.clone(), c))
            .collect();
        let auth = Auth {
            key,
            store,
            accounts: RwLock::new(accounts),
            agents: RwLock::new(agents),
            cache: Mutex::new(TokenCache::default()),
        };
        if read(&auth.accounts).is_empty() {
            auth.bootstrap(data_dir)?;
        }
        Ok(auth)
    }

    fn bootstrap(&self, data_dir: &Path) -> Result<(), AuthError> {
        let password = secrets::random_hex(16);
        let account = Account::from_request(
            BOOTSTRAP_UID,
            AccountRequest {
                description: Some("made at first start; replace it".into()),
                password: Some(password.clone()),
                public_key: None,
            },
        )?;
        let path = bootstrap_path(data_dir);
        let text = serde_json::json!({"uid": BOOTSTRAP_UID, "password": password});
        crate::files::write_private(&path, format!("{text}\n").as_bytes()).map_err(|e| {
            AuthError::File {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        self.store.put_account(&account)?;
        write(&self.accounts).insert(account.uid.clone(), account);
        tracing::warn!(path = %path.display(), uid = BOOTSTRAP_UID, "no accounts: created the bootstrap account; its password is in this file (0600)");
        Ok(())
    }

    /// The signing key (for minting tokens from the CLI and tests).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Who a session token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<String, AuthError> {
        let now = Instant::now();
        let unix = unix_now();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(uid) = cache.get(token, now, unix) {
                return Ok(uid.to_string());
            }
        }
        let claims = self
            .key
            .verify(token, TokenKind::Session)
            .map_err(|e| AuthError::Refused(e.to_string()))?;
        if !read(&self.accounts).contains_key(&claims.uid) {
            return Err(AuthError::Refused(format!(
                "the account {:?} of this token no longer exists",
                claims.uid
            )));
        }
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).put(
            token,
            &claims.uid,
            claims.exp,
            now,
        );
        Ok(claims.uid)
    }

    /// A new session token for `uid` (expiring at `exp`, or in 5 days).
    fn session(&self, uid: &str, exp: Option<u64>) -> (String, u64) {
        let exp = exp
            .filter(|e| *e > unix_now())
            .unwrap_or_else(|| unix_now() + SESSION_SECS);
        (self.key.issue(uid, TokenKind::Session, exp), exp)
    }

    /// `{"uid","password"}`: slow (Argon2), call it off the async runtime.
    pub fn login_password(&self, uid: &str, password: &str) -> Result<(String, u64), AuthError> {
        let account = read(&self.accounts).get(uid).cloned();
        match account {
            Some(a) if a.password_matches(password) => Ok(self.session(uid, None)),
            Some(_) => Err(AuthError::BadCredentials(uid.to_string())),
            None => {
                // As slow as a wrong password: the answer's time must not
                // tell which accounts exist.
                let _ = unknown_account().password_matches(password);
                Err(AuthError::BadCredentials(uid.to_string()))
            }
        }
    }

    /// `{"uid","token"[,"exp"]}`: a service account's login token.
    pub fn login_service(
        &self,
        uid: &str,
        login_token: &str,
        exp: Option<u64>,
    ) -> Result<(String, u64), AuthError> {
        let key = match read(&self.accounts).get(uid).map(|a| a.secret.clone()) {
            Some(AccountSecret::PublicKey(k)) => k,
            _ => return Err(AuthError::BadCredentials(uid.to_string())),
        };
        keys::verify_login_token(login_token, uid, &key).map_err(|e| {
            tracing::info!(%uid, error = %e, "service account login refused");
            AuthError::BadCredentials(uid.to_string())
        })?;
        Ok(self.session(uid, exp))
    }

    /// Creates an account (hashes a password: call it off the async runtime).
    pub fn create_account(&self, uid: &str, req: AccountRequest) -> Result<Account, AuthError> {
        if read(&self.accounts).contains_key(uid) {
            return Err(AuthError::Exists(uid.to_string()));
        }
        let account = Account::from_request(uid, req)?;
        // Checked and written under the lock: of two creations at once, the
        // one refused must not overwrite the other's record in the store.
        let mut accounts = write(&self.accounts);
        if accounts.contains_key(uid) {
            return Err(AuthError::Exists(uid.to_string()));
        }
        self.store.put_account(&account)?;
        accounts.insert(uid.to_string(), account.clone());
        Ok(account)
    }

    pub fn account(&self, uid: &str) -> Option<Account> {
        read(&self.accounts).get(uid).cloned()
    }

    pub fn accounts(&self) -> Vec<Account> {
        read(&self.accounts).values().cloned().collect()
    }

    /// Deletes an account; its tokens stop working at once.
    pub fn delete_account(&self, uid: &str) -> Result<(), AuthError> {
        if !read(&self.accounts).contains_key(uid) {
            return Err(AuthError::NoSuchAccount(uid.to_string()));
        }
        self.store.delete_account(uid)?;
        write(&self.accounts).remove(uid);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_uid(uid);
        Ok(())
    }

    /// A join token valid for `ttl_secs`.
    pub fn join_token(&self, ttl_secs: u64) -> String {
        self.key
            .issue("agent-join", TokenKind::Join, unix_now() + ttl_secs)
    }

    /// Whether `token` is a valid join token.
    pub fn verify_join(&self, token: &str) -> Result<(), AuthError> {
        self.key
            .verify(token, TokenKind::Join)
            .map(|_| ())
            .map_err(|e| AuthError::Refused(e.to_string()))
    }

    /// Whether `secret` is agent `id`'s credential.
    pub fn agent_secret_ok(&self, id: &str, secret: &str) -> bool {
        let digest = secrets::sha256_hex(secret);
        read(&self.agents)
            .get(id)
            .is_some_and(|c| secrets::constant_time_eq(&c.secret_sha256, &digest))
    }

    /// Issues agent `id`'s credential (refused while it holds one).
    pub fn issue_agent_credential(&self, id: &str) -> Result<String, AuthError> {
        // Checked and written under the lock: two joins at once get one credential.
        let mut agents = write(&self.agents);
        if agents.contains_key(id) {
            return Err(AuthError::AgentHasCredential(id.to_string()));
        }
        let secret = secrets::random_hex(32);
        let credential = AgentCredential {
            agent_id: id.to_string(),
            secret_sha256: secrets::sha256_hex(&secret),
            issued: unix_now(),
        };
        self.store.put_agent_credential(&credential)?;
        agents.insert(id.to_string(), credential);
        Ok(secret)
    }

    /// Revokes agent `id`'s credential; whether it had one.
    pub fn revoke_agent(&self, id: &str) -> Result<bool, AuthError> {
        if !read(&self.agents).contains_key(id) {
            return Ok(false);
        }
        self.store.delete_agent_credential(id)?;
        write(&self.agents).remove(id);
        Ok(true)
    }

    /// Agents holding a credential.
    pub fn agent_credentials(&self) -> Vec<AgentCredential> {
        read(&self.agents).values().cloned().collect()
    }
}
