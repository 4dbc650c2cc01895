//! The filter's cryptographic primitives, each a thin wrapper over RustCrypto
//! (`sha2`, `hmac`, `aes-gcm`): nothing here is hand-rolled. Randomness comes in as [`Random`] so the core stays pure.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::KeyEntry;
use crate::env::Random;
use crate::secret::constant_time_eq;

/// AES-GCM's recommended nonce size (NIST SP 800-38D 8.2: 96-bit IVs).
const NONCE_BYTES: usize = 12;
/// GCM's full-length authentication tag.
const TAG_BYTES: usize = 16;

/// `n` bytes from the host's randomness.
pub fn random_bytes(random: &mut dyn Random, n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    random.fill(&mut bytes);
    bytes
}

/// A random token of `n_bytes` bytes, base64url without padding (RFC 4648 5),
/// so it goes into URLs, form bodies and headers unescaped.
pub fn random_token(random: &mut dyn Random, n_bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(random, n_bytes))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256, base64url without padding: the form PKCE (RFC 7636 4.2) uses,
/// and the form store ids derived from secrets take.
pub fn sha256_b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha256(data))
}

/// HMAC-SHA-256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        // Unreachable: HMAC takes keys of any length (RFC 2104 2), and
        // hmac's `new_from_slice` never fails. Should it ever, this still
        // answers a MAC under a key derived from `key` (H(K) zero-padded to
        // the block, RFC 2104 2's own rule for long keys), never one a
        // forger could compute, and it is the same on every call.
        Err(_) => {
            let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
            block[..32].copy_from_slice(&sha256(key));
            <Hmac<Sha256> as KeyInit>::new(&block)
        }
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// RFC 7636 4.1 and 4.6: `verifier` is 43 to 128 characters of
/// `[A-Za-z0-9-._~]` and BASE64URL(SHA256(verifier)) equals `challenge`,
/// compared in constant time.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed
        && constant_time_eq(
            sha256_b64url(verifier.as_bytes()).as_bytes(),
            challenge.as_bytes(),
        )
}

/// Encrypts with AES-256-GCM under `key` and a fresh random 96-bit nonce.
///
/// Output: 1 byte key-id length, the key id, the 12-byte nonce, then
/// ciphertext and 16-byte tag. The key id lets [`open`] find the key after a
/// rotation. `aad` binds the value to its context (the store passes the full
/// storage key), so a value copied elsewhere does not open.
///
/// Random nonces are safe for up to 2^32 messages per key (NIST SP 800-38D
/// 8.3); rotate the key well before that.
///
/// Returns an empty vector, which [`open`] refuses, if `key` is unusable:
/// not 32 bytes or an id over 255 bytes. The configuration refuses the
/// first; a caller storing or sending the result must treat empty as a
/// failure, which fails closed (an empty stored value reads as absent, an
/// empty token never verifies).
pub fn seal(key: &KeyEntry, aad: &[u8], plaintext: &[u8], random: &mut dyn Random) -> Vec<u8> {
    let id = key.id.as_bytes();
    let (Ok(id_len), Ok(cipher)) = (
        u8::try_from(id.len()),
        Aes256Gcm::new_from_slice(key.key.expose()),
    ) else {
        return Vec::new();
    };
    let mut nonce = [0u8; NONCE_BYTES];
    random.fill(&mut nonce);
    let Ok(ciphertext) = cipher.encrypt(
        &Nonce::from(nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) else {
        // Only for plaintexts over 64 GiB (SP 800-38D 5.2.1.1).
        return Vec::new();
    };
    let mut out = Vec::with_capacity(1 + id.len() + NONCE_BYTES + ciphertext.len());
    out.push(id_len);
    out.extend_from_slice(id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Decrypts what [`seal`] produced, with the key whose id the value names
/// among `keys` (so values sealed with a retired-but-listed key still open).
/// `None` on any failure: malformed input, unknown key id, wrong `aad`, or
/// any change to the bytes. The tag covers nonce, ciphertext and `aad`; the
/// key id is outside it, but changing the id picks another key (or none),
/// under which the tag fails.
pub fn open(keys: &[KeyEntry], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (id, rest) = split_key_id(sealed)?;
    let (nonce, ciphertext) = rest.split_at_checked(NONCE_BYTES)?;
    if ciphertext.len() < TAG_BYTES {
        return None;
    }
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
    let key = keys.iter().find(|k| k.id.as_bytes() == id)?;
    let cipher = Aes256Gcm::new_from_slice(key.key.expose()).ok()?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

/// The id of the key a sealed value was made with, and the rest.
fn split_key_id(sealed: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&id_len, rest) = sealed.split_first()?;
    rest.split_at_checked(usize::from(id_len))
}

/// Whether one of `keys` made this sealed value (without opening it).
pub fn sealed_with_one_of(keys: &[KeyEntry], sealed: &[u8]) -> bool {
    split_key_id(sealed).is_some_and(|(id, _)| keys.iter().any(|k| k.id.as_bytes() == id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::TestRandom;
    use crate::secret::Secret;

    fn key(id: &str, byte: u8) -> KeyEntry {
        KeyEntry {
            id: id.to_string(),
            key: Secret::new(vec![byte; 32]),
        }
    }

    #[test]
    fn sha256_and_hmac_known_answers() {
        // FIPS 180-2 B.1.
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_b64url(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        // RFC 4231 4.3 (test case 2).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 4231 4.7 (test case 6): a key longer than the block.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn random_tokens_are_base64url_without_padding() {
        let mut r = TestRandom::new(1);
        let t = random_token(&mut r, 32);
        assert_eq!(t.len(), 43);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(t, random_token(&mut r, 32));
        assert_eq!(random_bytes(&mut r, 5).len(), 5);
    }

    #[test]
    fn pkce_rfc7636_appendix_b() {
        // RFC 7636 Appendix B: the verifier is BASE64URL of the octets
        // 116, 24, 223, ... 141, 121 listed there.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!pkce_s256_matches(verifier, &challenge[..42]));
        assert!(!pkce_s256_matches(verifier, ""));
        // A well-formed pair whose challenge is not the verifier's hash.
        assert!(!pkce_s256_matches(
            "dBjftJeZ4CVP-mJ0kXxKzTpW7jNeYJrxcMLMEYJdLxI",
            "E9Melhoa2OwvFrEXQW_ax1KMcMwsGqcpyTuz2_YnSPc"
        ));
        // The plain method's comparison (challenge == verifier) is not S256.
        assert!(!pkce_s256_matches(verifier, verifier));
    }

    #[test]
    fn pkce_refuses_malformed_verifiers() {
        let check = |v: &str| pkce_s256_matches(v, &sha256_b64url(v.as_bytes()));
        assert!(check(&"a".repeat(43)));
        assert!(check(&"a".repeat(128)));
        assert!(check(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
        ));
        assert!(!check(&"a".repeat(42)), "too short");
        assert!(!check(&"a".repeat(129)), "too long");
        for bad in ['+', '/', '=', ' ', '%', 'é', '\0'] {
            let v = format!("{}{bad}", "a".repeat(44));
            assert!(!check(&v), "{bad:?} is outside the unreserved set");
        }
    }

    #[test]
    fn seal_open_round_trip_and_layout() {
        let mut r = TestRandom::new(2);
        let k = key("enc-1", 7);
        let sealed = seal(&k, b"ctx", b"hello", &mut r);
        assert_eq!(sealed[0], 5);
        assert_eq!(&sealed[1..6], b"enc-1");
        assert_eq!(sealed.len(), 1 + 5 + NONCE_BYTES + 5 + TAG_BYTES);
        assert_eq!(
            open(std::slice::from_ref(&k), b"ctx", &sealed).as_deref(),
            Some(&b"hello"[..])
        );
        // Fresh nonce every time: sealing twice gives different bytes.
        assert_ne!(seal(&k, b"ctx", b"hello", &mut r), sealed);
        let empty = seal(&k, b"", b"", &mut r);
        assert_eq!(open(&[k], b"", &empty), Some(Vec::new()));
    }

    #[test]
    fn any_flipped_byte_fails() {
        let mut r = TestRandom::new(3);
        let k = key("enc-1", 7);
        let sealed = seal(&k, b"ctx", b"secret value", &mut r);
        for i in 0..sealed.len() {
            for bit in [0x01, 0x80] {
                let mut t = sealed.clone();
                t[i] ^= bit;
                assert_eq!(
                    open(std::slice::from_ref(&k), b"ctx", &t),
                    None,
                    "byte {i} bit {bit:#x}"
                );
            }
        }
        for n in 0..sealed.len() {
            assert_eq!(
                open(std::slice::from_ref(&k), b"ctx", &sealed[..n]),
                None,
                "truncated to {n}"
            );
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(open(&[k], b"ctx", &longer), None);
    }

    #[test]
    fn wrong_aad_or_unknown_key_fails() {
        let mut r = TestRandom::new(4);
        let k = key("enc-1", 7);
        let sealed = seal(&k, b"store/a", b"v", &mut r);
        assert_eq!(open(std::slice::from_ref(&k), b"store/b", &sealed), None);
        assert_eq!(open(std::slice::from_ref(&k), b"", &sealed), None);
        assert_eq!(
            open(&[key("enc-2", 7)], b"store/a", &sealed),
            None,
            "same bytes, other id"
        );
        assert_eq!(
            open(&[key("enc-1", 8)], b"store/a", &sealed),
            None,
            "same id, other bytes"
        );
        assert_eq!(open(&[], b"store/a", &sealed), None);
    }

    #[test]
    fn rotation_old_keys_still_open() {
        let mut r = TestRandom::new(5);
        let (old, new) = (key("2024", 1), key("2025", 2));
        let sealed_old = seal(&old, b"a", b"before", &mut r);
        let sealed_new = seal(&new, b"a", b"after", &mut r);
        let keys = [new.clone(), old.clone()];
        assert_eq!(
            open(&keys, b"a", &sealed_old).as_deref(),
            Some(&b"before"[..])
        );
        assert_eq!(
            open(&keys, b"a", &sealed_new).as_deref(),
            Some(&b"after"[..])
        );
        // Once the old key is dropped from the list, its values no longer open.
        assert_eq!(open(&[new], b"a", &sealed_old), None);
    }

    #[test]
    fn unusable_keys_seal_to_empty() {
        let mut r = TestRandom::new(6);
        let short = KeyEntry {
            id: "k".into(),
            key: Secret::new(vec![1; 16]),
        };
        assert!(seal(&short, b"", b"x", &mut r).is_empty());
        assert!(seal(&key(&"k".repeat(256), 1), b"", b"x", &mut r).is_empty());
        let max_id = key(&"k".repeat(255), 1);
        let sealed = seal(&max_id, b"", b"x", &mut r);
        assert_eq!(open(&[max_id], b"", &sealed).as_deref(), Some(&b"x"[..]));
        assert_eq!(open(&[short], b"", &[]), None);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
