//! Argon2id password hashing with reused memory.
//!
//! Each argon2 run needs `m_cost` KiB of working memory (19 MiB at the default cost). Letting
//! the crate allocate it per call made glibc keep those blocks in every malloc arena the
//! blocking threads touched: after a burst of logins trackerd sat at 600–800 MiB RSS for good.
//! Here the blocks live in a small pool shared by all clones of the hasher; the service runs at
//! most one hash per core (`Service::blocking`), so the pool never holds more blocks than that.
//! Hashing and verifying use the crate's own primitives (`hash_password_into_with_memory`,
//! PHC parsing, constant-time `Output` comparison) on that memory; the tests check that hashes
//! made here and by the crate's `PasswordHasher`/`PasswordVerifier` verify in both directions.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
}

/// Blocks kept for reuse at most; more concurrent hashes than this just allocate and drop.
const POOL_MAX: usize = 8;

/// Argon2id with configurable cost. Verification reads the cost from the stored PHC string, so
/// hashes made with other parameters (e.g. after a cost increase) still verify.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    pool: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Default for PasswordHasher {
    /// The argon2 crate's default (OWASP-recommended) cost.
    fn default() -> Self {
        Self::from_params(Params::default())
    }
}

impl PasswordHasher {
    fn from_params(params: Params) -> Self {
        PasswordHasher {
            params,
            pool: Arc::default(),
        }
    }

    /// A deliberately cheap hasher for tests (8 KiB, 1 pass): never use it in production.
    pub fn insecure_fast() -> Self {
        Self::from_params(Params::new(8, 1, 1, None).expect("valid argon2 params"))
    }

    pub fn with_params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, AuthError> {
        let params = Params::new(m_cost_kib, t_cost, p_cost, None)
            .map_err(|e| AuthError::Params(e.to_string()))?;
        Ok(Self::from_params(params))
    }

    /// PHC string (`$argon2id$v=19$m=…`) with a fresh random salt. CPU-heavy: call it from
    /// `spawn_blocking`.
    pub fn hash(&self, password: &str) -> Result<String, AuthError> {
        let fail = |e: &dyn std::fmt::Display| AuthError::Hash(e.to_string());
        let salt = SaltString::generate(&mut OsRng);
        let len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let out = self
            .raw(&argon, &self.params, password, salt.as_salt(), len)
            .map_err(|e| fail(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| fail(&e))?,
            salt: Some(salt.as_salt()),
            hash: Some(out),
        };
        Ok(phc.to_string())
    }

    /// True if `password` matches the PHC string; a malformed stored hash never matches.
    /// CPU-heavy like [`Self::hash`].
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        self.try_verify(phc, password).unwrap_or(false)
    }

    fn try_verify(&self, phc: &str, password: &str) -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let expected = parsed.hash?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let argon = Argon2::new(algorithm, version, params.clone());
        let out = self
            .raw(&argon, &params, password, parsed.salt?, expected.len())
            .ok()?;
        // Output's equality is constant-time.
        Some(out == expected)
    }

    /// The raw argon2 output of `len` bytes for `password` and `salt`, computed on pooled
    /// working memory.
    fn raw(
        &self,
        argon: &Argon2,
        params: &Params,
        password: &str,
        salt: Salt,
        len: usize,
    ) -> password_hash::Result<Output> {
        let mut salt_buf = [0u8; Salt::MAX_LENGTH];
        let salt = salt.decode_b64(&mut salt_buf)?;
        Output::init_with(len, |out| {
            self.with_memory(params, |mem| {
                argon.hash_password_into_with_memory(password.as_bytes(), salt, out, mem)
            })
            .map_err(password_hash::Error::from)
        })
    }

    /// Run `f` on working memory for `params`: a pooled block when it is the configured cost
    /// (the common case), a one-off allocation for hashes stored with another cost.
    fn with_memory<T>(&self, params: &Params, f: impl FnOnce(&mut [Block]) -> T) -> T {
        let need = params.block_count();
        if need != self.params.block_count() {
            return f(&mut vec![Block::default(); need]);
        }
        let taken = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut mem = taken.unwrap_or_else(|| vec![Block::default(); need]);
        let r = f(&mut mem);
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(mem);
        }
        r
    }

    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.pool.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    #[test]
    fn hash_verifies_only_the_right_password() {
        let h = PasswordHasher::insecure_fast();
        let phc = h.hash("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(h.verify(&phc, "s3cret"));
        assert!(!h.verify(&phc, "s3creT"));
        assert!(!h.verify(&phc, ""));
        assert!(!h.verify("garbage", "s3cret"));
        assert!(!h.verify("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ", "s3cret"));
        assert_ne!(phc, h.hash("s3cret").unwrap(), "salt must be random");
    }

    #[test]
    fn agrees_with_the_argon2_crate_both_ways() {
        let ours = PasswordHasher::with_params(64, 2, 1).unwrap();
        let params = Params::new(64, 2, 1, None).unwrap();
        let crate_hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);

        let ours_phc = ours.hash("pässword").unwrap();
        let parsed = PasswordHash::new(&ours_phc).unwrap();
        assert!(Argon2::default()
            .verify_password("pässword".as_bytes(), &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"password", &parsed)
            .is_err());

        let salt = SaltString::generate(&mut OsRng);
        let theirs = crate_hasher
            .hash_password(b"hunter42", &salt)
            .unwrap()
            .to_string();
        assert!(ours.verify(&theirs, "hunter42"));
        assert!(!ours.verify(&theirs, "hunter43"));
    }

    #[test]
    fn hashes_made_with_another_cost_or_variant_still_verify() {
        let now = PasswordHasher::with_params(64, 1, 1).unwrap();
        let before = PasswordHasher::with_params(32, 3, 2).unwrap();
        let old = before.hash("pw").unwrap();
        assert!(now.verify(&old, "pw"));
        assert!(!now.verify(&old, "px"));
        assert_eq!(
            now.pooled(),
            0,
            "a one-off block for another cost is not pooled"
        );

        let salt = SaltString::generate(&mut OsRng);
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(16, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        assert!(argon2i.starts_with("$argon2i$v=16$"), "{argon2i}");
        assert!(now.verify(&argon2i, "pw"));
        assert!(!now.verify(&argon2i, "px"));
    }

    #[test]
    fn working_memory_is_reused_not_reallocated() {
        let h = PasswordHasher::with_params(64, 1, 1).unwrap();
        let clone = h.clone();
        for _ in 0..5 {
            let phc = h.hash("pw").unwrap();
            assert!(clone.verify(&phc, "pw"));
        }
        assert_eq!(h.pooled(), 1, "sequential hashes share one block");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| h.hash("pw").unwrap());
            }
        });
        assert!((1..=4).contains(&h.pooled()));
        assert!(h.pooled() <= POOL_MAX);
    }
}
