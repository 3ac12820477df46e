//! The control's token key: an RSA key pair in the data directory
//! (`auth/jwt-signing-key.pem`, PKCS#8, 0600), generated at first start.
//! Session and join tokens are JWTs signed RS256 with it, claims `uid`,
//! `exp` (Unix seconds) and `kind`. Service accounts' login tokens are
//! verified with their own public keys ([`verify_login_token`]).
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A logged-in account: the API.
    #[default]
    Session,
    /// An agent's first connection: exchange for the agent's own credential.
    Join,
}

/// The claims of Garrison's tokens (DC/OS's are `uid` and `exp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub uid: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    #[serde(default)]
    pub kind: TokenKind,
}

/// Why a key or token failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("token refused: {0}")]
    Token(String),
}

/// The control's signing key and its public half.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public key, PEM (for documentation and clients that verify).
    pub public_pem: String,
}

/// Where the key lives in a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("jwt-signing-key.pem")
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl SigningKey {
    /// Loads the key of `data_dir`, generating it (RSA 2048) when absent.
    pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, KeyError> {
        let path = key_path(data_dir);
        let file_err = |message: String| KeyError::File {
            path: path.clone(),
            message,
        };
        if !path.exists() {
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .map_err(|e| file_err(format!("generating an RSA key: {e}")))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| file_err(format!("encoding the key: {e}")))?;
            crate::files::write_private(&path, pem.as_bytes())
                .map_err(|e| file_err(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated the token signing key");
        }
        Self::load(&path)
    }

    /// Loads an existing key (PKCS#8 PEM).
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let file_err = |message: String| KeyError::File {
            path: path.to_path_buf(),
            message,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
            .map_err(|e| file_err(format!("not a PKCS#8 RSA private key: {e}")))?;
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| file_err(e.to_string()))?;
        Ok(SigningKey {
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| file_err(e.to_string()))?,
            decoding: DecodingKey::from_rsa_pem(public_pem.as_bytes())
                .map_err(|e| file_err(e.to_string()))?,
            public_pem,
        })
    }

    /// A token for `uid` of `kind`, valid until `exp` (Unix seconds).
    pub fn issue(&self, uid: &str, kind: TokenKind, exp: u64) -> String {
        let claims = Claims {
            uid: uid.to_string(),
            exp,
            kind,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.encoding)
            .expect("RS256 signing with a loaded key cannot fail")
    }

    /// The claims of a token this key signed, if it is unexpired and of `kind`.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, KeyError> {
        let mut v = Validation::new(Algorithm::RS256);
        // Our own tokens: no clock skew to allow for.
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| KeyError::Token(e.to_string()))?;
        if data.claims.kind != kind {
            return Err(KeyError::Token(format!(
                "a {:?} token is not accepted here",
                data.claims.kind
            )));
        }
        Ok(data.claims)
    }
}

/// A service account's login token (RS256 with its private key, claims
/// `uid` and `exp`): valid for `uid` when its signature verifies with
/// `public_pem`, its `uid` claim is `uid` and it has not expired (30 s of
/// clock skew allowed: it was made on another machine).
pub fn verify_login_token(token: &str, uid: &str, public_pem: &str) -> Result<(), KeyError> {
    #[derive(Deserialize)]
    struct LoginClaims {
        uid: String,
    }
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes())
        .map_err(|e| KeyError::Token(format!("the account's public key: {e}")))?;
    let mut v = Validation::new(Algorithm::RS256);
    v.leeway = 30;
    v.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<LoginClaims>(token, &key, &v)
        .map_err(|e| KeyError::Token(e.to_string()))?;
    if data.claims.uid != uid {
        return Err(KeyError::Token(format!(
            "the login token is for {:?}, not {uid:?}",
            data.claims.uid
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_kind_and_expiry_and_tampering_is_caught() {
        let dir = std::env::temp_dir().join(format!("garrison-keys-{}", std::process::id()));
        let key = SigningKey::load_or_create(&dir).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(key_path(&dir)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // The same key after a restart.
        let again = SigningKey::load_or_create(&dir).unwrap();
        assert_eq!(key.public_pem, again.public_pem);
        let now = unix_now();
        let t = key.issue("alice", TokenKind::Session, now + 60);
        assert_eq!(again.verify(&t, TokenKind::Session).unwrap().uid, "alice");
        assert!(key.verify(&t, TokenKind::Join).is_err());
        let expired = key.issue("alice", TokenKind::Session, now - 1);
        assert!(key.verify(&expired, TokenKind::Session).is_err());
        // Flip a character of the payload.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut payload: Vec<char> = parts[1].chars().collect();
        payload[3] = if payload[3] == 'A' { 'B' } else { 'A' };
        parts[1] = payload.into_iter().collect();
        assert!(key.verify(&parts.join("."), TokenKind::Session).is_err());
        assert!(key.verify("not.a.token", TokenKind::Session).is_err());
        // A service account's login token, checked with its public key.
        let login = key.issue("svc", TokenKind::Session, now + 60);
        verify_login_token(&login, "svc", &key.public_pem).unwrap();
        assert!(verify_login_token(&login, "other", &key.public_pem).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
