//! Credential checks against salted, slow hashes: Argon2id in the PHC string format
//! (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`), as `followup hash-password` prints them.
//!
//! A plugin's users are a configuration value, never passwords in plain text: a
//! comma-separated list of `username:PHC-string` entries (the commas inside a PHC string's
//! parameters are told apart by what follows them: an entry starts with a name and `:$`).
//!
//! This one file is compiled into both the guest SDK (checking) and the host (the
//! `hash-password` command), so both read and write the same format.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// The users a plugin knows, with the hash of each one's password.
#[derive(Debug, Clone, Default)]
pub struct Users {
    entries: Vec<(String, String)>,
}

impl Users {
    /// Parses `username:PHC,username:PHC`. An error names the entry, never a hash.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for piece in text.split(',') {
            if piece.trim().is_empty() {
                continue;
            }
            let starts_entry = piece
                .split_once(":$")
                .is_some_and(|(name, _)| !name.contains('$'));
            match entries.last_mut() {
                Some((_, phc)) if !starts_entry => {
                    phc.push(',');
                    phc.push_str(piece);
                }
                _ => {
                    let Some((name, phc)) = piece.split_once(':') else {
                        return Err(format!(
                            "entry {} is not username:PHC-string",
                            entries.len() + 1
                        ));
                    };
                    entries.push((name.trim().to_string(), phc.trim().to_string()));
                }
            }
        }
        for (i, (name, phc)) in entries.iter().enumerate() {
            if name.is_empty() {
                return Err(format!("entry {} has no username", i + 1));
            }
            let parsed = PasswordHash::new(phc)
                .map_err(|e| format!("user {name}: not a PHC string ({e})"))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(format!(
                    "user {name}: {} hashes are not accepted; use argon2id",
                    parsed.algorithm
                ));
            }
        }
        Ok(Users { entries })
    }

    /// Whether `password` is `username`'s. An unknown username costs the same time as a
    /// known one (it is checked against another user's hash), so the answer's timing does
    /// not tell which usernames exist.
    pub fn check(&self, username: &str, password: &str) -> bool {
        match self.entries.iter().find(|(name, _)| name == username) {
            Some((_, phc)) => verify(phc, password),
            None => {
                if let Some((_, phc)) = self.entries.first() {
                    verify(phc, password);
                }
                false
            }
        }
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `password` matches the PHC string `phc` (compared in constant time).
pub fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// The Argon2id PHC string of `password` with `salt` (16 random bytes), with the default
/// parameters (19 MiB, 2 passes, 1 lane: the OWASP minimum for Argon2id).
pub fn hash(password: &str, salt: &[u8]) -> Result<String, String> {
    let salt = SaltString::encode_b64(salt).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hash: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_with_commas_inside_the_hashes_and_check() {
        let ann = hash("correct horse", &[7; 16]).unwrap();
        let bob = hash("battery staple", &[9; 16]).unwrap();
        assert!(ann.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ann}");
        let users = Users::parse(&format!("ann:{ann}, bob:{bob}")).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.check("ann", "correct horse"));
        assert!(users.check("bob", "battery staple"));
        assert!(!users.check("ann", "battery staple"));
        assert!(!users.check("carol", "correct horse"));
        assert!(!users.check("ANN", "correct horse"));
    }

    #[test]
    fn plain_text_and_weak_hashes_are_refused() {
        let err = Users::parse("ann:hunter2").unwrap_err();
        assert!(err.contains("ann") && !err.contains("hunter2"), "{err}");
        assert!(Users::parse("ann").is_err());
        assert!(Users::parse(":$argon2id$v=19$m=19456,t=2,p=1$AAAA$BBBB").is_err());
        assert!(Users::parse("").unwrap().is_empty());
        assert_eq!(
            Users::parse(&format!("ann:{},", hash("x", &[1; 16]).unwrap()))
                .unwrap()
                .len(),
            1
        );
    }
}
