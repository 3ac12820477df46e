//! Accounts: users (a password, stored as an Argon2id hash) and service
//! accounts (an RSA public key; they log in with a JWT signed by their
//! private key), as DC/OS IAM keeps them. Pure: validation and the stored
//! record; the store persists them and [`super::Auth`] serves them.
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

/// A stored account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub uid: String,
    #[serde(default)]
    pub description: String,
    pub secret: AccountSecret,
}

/// How an account proves who it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountSecret {
    /// An Argon2id PHC string.
    PasswordHash(String),
    /// An RSA public key (PEM); the account is a service account.
    PublicKey(String),
}

/// `PUT /acs/api/v1/users/{uid}` as DC/OS takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub public_key: Option<String>,
}

/// Why an account request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("uid {0:?}: expected 2 to 96 characters of a-z, A-Z, 0-9, '.', '_', '-', '@'")]
    BadUid(String),
    #[error("account {0:?}: give exactly one of \"password\" and \"public_key\"")]
    NeedOneSecret(String),
    #[error("account {0:?}: the password needs at least 8 characters")]
    ShortPassword(String),
    #[error("account {uid:?}: public_key is not an RSA public key in PEM: {reason}")]
    BadPublicKey { uid: String, reason: String },
    #[error("account {0:?}: hashing the password failed: {1}")]
    Hash(String, String),
}

/// Whether `uid` is an acceptable account name.
pub fn valid_uid(uid: &str) -> bool {
    (2..=96).contains(&uid.len())
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl Account {
    /// Builds the stored account from a request (hashes the password: slow,
    /// call it off the async runtime).
    pub fn from_request(uid: &str, req: AccountRequest) -> Result<Account, AccountError> {
        if !valid_uid(uid) {
            return Err(AccountError::BadUid(uid.to_string()));
        }
        let secret = match (req.password, req.public_key) {
            (Some(p), None) => {
                if p.chars().count() < 8 {
                    return Err(AccountError::ShortPassword(uid.to_string()));
                }
                AccountSecret::PasswordHash(
                    hash_password(&p).map_err(|e| AccountError::Hash(uid.to_string(), e))?,
                )
            }
            (None, Some(k)) => {
                jsonwebtoken::DecodingKey::from_rsa_pem(k.as_bytes()).map_err(|e| {
                    AccountError::BadPublicKey {
                        uid: uid.to_string(),
                        reason: e.to_string(),
                    }
                })?;
                AccountSecret::PublicKey(k)
            }
            _ => return Err(AccountError::NeedOneSecret(uid.to_string())),
        };
        Ok(Account {
            uid: uid.to_string(),
            description: req.description.unwrap_or_default(),
            secret,
        })
    }

    /// Whether this is a service account.
    pub fn is_service(&self) -> bool {
        matches!(self.secret, AccountSecret::PublicKey(_))
    }

    /// Checks a password (slow on purpose: call it off the async runtime).
    /// A service account has no password.
    pub fn password_matches(&self, password: &str) -> bool {
        let AccountSecret::PasswordHash(phc) = &self.secret else {
            return false;
        };
        PasswordHash::new(phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    }

    /// The account as `GET /acs/api/v1/users/{uid}` shows it (no secrets).
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "uid": self.uid,
            "description": self.description,
            "is_service": self.is_service(),
            "url": format!("/acs/api/v1/users/{}", self.uid),
        });
        if let AccountSecret::PublicKey(k) = &self.secret {
            v["public_key"] = k.clone().into();
        }
        v
    }
}

/// An Argon2id PHC string of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(password: Option<&str>, key: Option<&str>) -> AccountRequest {
        AccountRequest {
            description: Some("d".into()),
            password: password.map(str::to_string),
            public_key: key.map(str::to_string),
        }
    }

    #[test]
    fn users_are_checked_by_password_hash() {
        let a = Account::from_request("alice", req(Some("correct horse"), None)).unwrap();
        assert!(!a.is_service());
        assert!(a.password_matches("correct horse"));
        assert!(!a.password_matches("correct hors"));
        assert!(!serde_json::to_string(&a).unwrap().contains("correct horse"));
        assert!(a.view().get("public_key").is_none());
        let back: Account = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert!(back.password_matches("correct horse"));
    }

    #[test]
    fn bad_requests_name_the_account_and_the_problem() {
        assert_eq!(
            Account::from_request("a/b", req(Some("longenough"), None)).unwrap_err(),
            AccountError::BadUid("a/b".into())
        );
        assert_eq!(
            Account::from_request("bob", req(Some("short"), None)).unwrap_err(),
            AccountError::ShortPassword("bob".into())
        );
        assert_eq!(
            Account::from_request("bob", req(None, None)).unwrap_err(),
            AccountError::NeedOneSecret("bob".into())
        );
        assert_eq!(
            Account::from_request("bob", req(Some("longenough"), Some("k"))).unwrap_err(),
            AccountError::NeedOneSecret("bob".into())
        );
        assert!(matches!(
            Account::from_request("svc", req(None, Some("not a key"))).unwrap_err(),
            AccountError::BadPublicKey { .. }
        ));
        assert!(valid_uid("svc.marathon-lb@x") && !valid_uid("x") && !valid_uid("a b"));
    }
}
