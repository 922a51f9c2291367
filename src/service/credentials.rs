//! The credentials of jobs' URIs, sealed for the job history (`serve --credentials-key-file`).
//!
//! In: a job's spec as posted (its URIs with passwords or other secrets) and the operator's key.
//! Out: `sealed`, kept in the job's record beside the redacted spec: `v1:` and the base64 of a
//! random nonce and the ChaCha20-Poly1305 ciphertext of the two URIs. A service with the same key
//! (after a restart, or another node on the same MongoDB state) opens it to run the job; without
//! it the job stays what it was before: a redacted spec that cannot run.
//!
//! The key is derived from the key text (surrounding whitespace left out) with PBKDF2-HMAC-SHA256,
//! [`ITERATIONS`] rounds, once as the service starts: a guess at a weak key costs as much. The
//! job's id and its whole redacted spec are the ciphertext's associated data, so a sealed value
//! moved to another job, or a spec changed in the history (another mode, other namespaces, another
//! destination), does not open. Nothing here is ever logged, shown by the API or written in
//! clear; the history holds it sealed, so the history's readers cannot use it without the key.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::job::JobId;
use crate::spec::JobSpec;

/// Shorter keys are refused: the key guards every password the history holds.
pub const MIN_KEY_LEN: usize = 16;

/// PBKDF2 rounds deriving the sealing key from the key text.
pub const ITERATIONS: u32 = 100_000;

/// PBKDF2's salt: fixed, so that every node derives the same key from the same text.
const SALT: &[u8] = b"mongoferry credentials key v1";

const PREFIX: &str = "v1:";

/// Why a key cannot be used. The messages never quote it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key is {0} characters long; use at least {MIN_KEY_LEN}")]
    TooShort(usize),
}

/// The key that seals and opens jobs' credentials.
pub struct CredentialsKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialsKey(***)")
    }
}

/// What is sealed: the URIs as posted.
#[derive(Serialize, Deserialize)]
struct Uris {
    from: String,
    to: String,
}

impl CredentialsKey {
    /// A key from the text of a key file or variable.
    pub fn new(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.chars().count() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(text.chars().count()));
        }
        let mut derived = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(ITERATIONS).expect("non-zero"),
            SALT,
            text.as_bytes(),
            &mut derived,
        );
        let key = UnboundKey::new(&CHACHA20_POLY1305, &derived).expect("a 32-byte key");
        Ok(CredentialsKey {
            key: LessSafeKey::new(key),
        })
    }

    /// The sealed credentials of `spec`, job `id`'s spec as posted; `None` when its URIs hold no
    /// secret (its redacted spec can run as it is).
    pub fn seal(&self, id: JobId, spec: &JobSpec) -> Option<String> {
        let redacted = spec.redacted();
        if !redacted.is_redacted() {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        if SystemRandom::new().fill(&mut nonce).is_err() {
            tracing::error!("job {id}: no random nonce to seal its credentials; they are not kept");
            return None;
        }
        let uris = Uris {
            from: spec.endpoints.from.clone(),
            to: spec.endpoints.to.clone(),
        };
        let mut sealed = serde_json::to_vec(&uris).expect("URIs serialise");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(id, &redacted)),
                &mut sealed,
            )
            .ok()?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Some(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// Job `id`'s redacted spec with its credentials back, if `sealed` opens with this key and
    /// belongs to that job; `None` otherwise.
    pub fn open(&self, id: JobId, redacted: &JobSpec, sealed: &str) -> Option<JobSpec> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed.strip_prefix(PREFIX)?)
            .ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let mut sealed = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(associated(id, redacted)), &mut sealed)
            .ok()?;
        let uris: Uris = serde_json::from_slice(plain).ok()?;
        let mut spec = redacted.clone();
        spec.endpoints.from = uris.from;
        spec.endpoints.to = uris.to;
        // The URIs must be the ones the record shows, secrets aside.
        (spec.redacted().endpoints == redacted.endpoints).then_some(spec)
    }
}

/// What binds a sealed value to its job: the id and the whole redacted spec, as the history
/// keeps it.
fn associated(id: JobId, redacted: &JobSpec) -> Vec<u8> {
    let spec = serde_json::to_string(redacted).expect("specs serialise");
    format!("mongoferry job {id}\n{spec}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(from: &str, to: &str) -> JobSpec {
        JobSpec::new(from, to, &["a.b"])
    }

    #[test]
    fn seals_and_opens_only_with_the_key_and_for_the_job() {
        let key = CredentialsKey::new("  a key of sufficient length\n").unwrap();
        let posted = spec(
            "mongodb://reader:s3cret@src:27017/",
            "mongodb://h:2/?tlsCertificateKeyFilePassword=tls-key-passw0rd",
        );
        let sealed = key.seal(JobId(7), &posted).expect("secrets to seal");
        assert!(sealed.starts_with(PREFIX));
        assert!(
            !sealed.contains("s3cret") && !sealed.contains("tls-key-passw0rd"),
            "{sealed}"
        );
        let redacted = posted.redacted();
        assert_eq!(key.open(JobId(7), &redacted, &sealed), Some(posted.clone()));
        // Another job, another key, another URI, a damaged value: nothing opens.
        assert_eq!(key.open(JobId(8), &redacted, &sealed), None);
        let other = CredentialsKey::new("another key of sufficient length").unwrap();
        assert_eq!(other.open(JobId(7), &redacted, &sealed), None);
        let moved = spec(
            "mongodb://reader:***@elsewhere:27017/",
            &redacted.endpoints.to,
        );
        assert_eq!(key.open(JobId(7), &moved, &sealed), None);
        let mut changed = redacted.clone();
        changed.mode = Some(crate::spec::Mode::Move);
        assert_eq!(key.open(JobId(7), &changed, &sealed), None, "another mode");
        // The spec as the history reads it back opens it.
        let kept: JobSpec =
            serde_json::from_str(&serde_json::to_string(&redacted).unwrap()).unwrap();
        assert_eq!(key.open(JobId(7), &kept, &sealed), Some(posted.clone()));
        let mut damaged = sealed.clone();
        damaged.insert(10, 'A');
        assert_eq!(key.open(JobId(7), &redacted, &damaged), None);
        assert_eq!(key.open(JobId(7), &redacted, "v1:"), None);
        // Nothing to seal without a secret; short keys are refused.
        assert_eq!(
            key.seal(JobId(7), &spec("mongodb://a/", "mongodb://b/")),
            None
        );
        assert_eq!(
            CredentialsKey::new("short").unwrap_err(),
            KeyError::TooShort(5)
        );
        assert_eq!(format!("{key:?}"), "CredentialsKey(***)");
    }
}
