//! Short, stable digests for names AWS limits in length or character set (ECS `startedBy`,
//! DynamoDB sort keys). SHA-256, so distinct inputs never share a name in practice.

use sha2::{Digest, Sha256};

/// The first `len` lowercase hex digits (at most 64) of SHA-256 over `parts`, each part
/// followed by a NUL byte so that `["ab", "c"]` and `["a", "bc"]` differ.
pub fn hex(parts: &[&[u8]], len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    let mut out = String::with_capacity(64);
    for b in h.finalize().iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(len.min(64));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_hex_of_the_asked_length_and_separate_their_parts() {
        let a = hex(&[b"ab", b"c"], 30);
        assert_eq!(a.len(), 30);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(a, hex(&[b"ab", b"c"], 30));
        assert_ne!(a, hex(&[b"a", b"bc"], 30));
        assert_eq!(hex(&[], 64).len(), 64);
        assert_eq!(hex(&[b"x"], 100).len(), 64);
    }
}
