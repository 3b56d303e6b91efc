//! A chunk's manifest: the source listing of the chunk, written by the lister into the chunk's
//! item so that the task copying it does not list the source again. Compact (sorted keys are
//! front-coded: each key stores only what differs from the previous one) and bounded: a listing
//! whose encoding would not fit comfortably in a DynamoDB item (400 KB) is not stored, and the
//! copier lists the chunk's range itself. Pure: no IO.

use super::plan::Entry;

/// Largest encoding stored with a chunk; DynamoDB items hold at most 400 KB in all.
pub const MAX_BYTES: usize = 256 * 1024;

/// Format version, the first byte.
const VERSION: u8 = 1;

/// Why a stored manifest could not be read (the copier then lists the range instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("unknown manifest version {0}")]
    Version(u8),
    #[error("manifest is truncated or corrupt")]
    Corrupt,
    #[error("manifest key is not UTF-8")]
    NotUtf8,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// An ETag: a quoted lowercase MD5 (the common case) as its 16 bytes, anything else verbatim.
fn put_etag(out: &mut Vec<u8>, etag: &str) {
    let hex = etag
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .filter(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    match hex {
        Some(h) => {
            out.push(1);
            for pair in h.as_bytes().chunks(2) {
                let nibble = |b: u8| {
                    if b.is_ascii_digit() {
                        b - b'0'
                    } else {
                        b - b'a' + 10
                    }
                };
                out.push(nibble(pair[0]) << 4 | nibble(pair[1]));
            }
        }
        None => {
            out.push(0);
            put_bytes(out, etag.as_bytes());
        }
    }
}

/// Encodes a sorted listing; `None` if the encoding exceeds `max` bytes.
pub fn encode(entries: &[Entry], max: usize) -> Option<Vec<u8>> {
    let mut out = vec![VERSION];
    put_varint(&mut out, entries.len() as u64);
    let mut prev: &[u8] = &[];
    for e in entries {
        let key = e.rel.as_bytes();
        let shared = prev.iter().zip(key).take_while(|(a, b)| a == b).count();
        put_varint(&mut out, shared as u64);
        put_bytes(&mut out, &key[shared..]);
        put_varint(&mut out, e.size);
        put_etag(&mut out, &e.etag);
        match &e.storage_class {
            None => put_varint(&mut out, 0),
            Some(c) => {
                put_varint(&mut out, c.len() as u64 + 1);
                out.extend_from_slice(c.as_bytes());
            }
        }
        if out.len() > max {
            return None;
        }
        prev = key;
    }
    Some(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ManifestError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.at).ok_or(ManifestError::Corrupt)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ManifestError::Corrupt)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ManifestError> {
        let n = usize::try_from(n).map_err(|_| ManifestError::Corrupt)?;
        let end = self.at.checked_add(n).ok_or(ManifestError::Corrupt)?;
        let b = self.buf.get(self.at..end).ok_or(ManifestError::Corrupt)?;
        self.at = end;
        Ok(b)
    }

    fn string(&mut self, n: u64) -> Result<String, ManifestError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| ManifestError::NotUtf8)
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode(buf: &[u8]) -> Result<Vec<Entry>, ManifestError> {
    let mut r = Reader { buf, at: 0 };
    let version = *buf.first().ok_or(ManifestError::Corrupt)?;
    if version != VERSION {
        return Err(ManifestError::Version(version));
    }
    r.at = 1;
    let count = r.varint()?;
    let mut entries = Vec::with_capacity(usize::try_from(count.min(10_000)).unwrap_or(0));
    let mut key: Vec<u8> = Vec::new();
    for _ in 0..count {
        let shared = usize::try_from(r.varint()?).map_err(|_| ManifestError::Corrupt)?;
        if shared > key.len() {
            return Err(ManifestError::Corrupt);
        }
        key.truncate(shared);
        let len = r.varint()?;
        key.extend_from_slice(r.take(len)?);
        let size = r.varint()?;
        let etag = match r.take(1)?[0] {
            0 => {
                let len = r.varint()?;
                r.string(len)?
            }
            1 => {
                let md5: String = r.take(16)?.iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{md5}\"")
            }
            _ => return Err(ManifestError::Corrupt),
        };
        let storage_class = match r.varint()? {
            0 => None,
            n => Some(r.string(n - 1)?),
        };
        entries.push(Entry {
            rel: String::from_utf8(key.clone()).map_err(|_| ManifestError::NotUtf8)?,
            size,
            etag,
            storage_class,
        });
    }
    if r.at != buf.len() {
        return Err(ManifestError::Corrupt);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(rel: &str, size: u64, etag: &str, class: Option<&str>) -> Entry {
        Entry {
            rel: rel.into(),
            size,
            etag: etag.into(),
            storage_class: class.map(String::from),
        }
    }

    #[test]
    fn a_listing_survives_encoding_unchanged() {
        let long = "k".repeat(1024);
        let cases: Vec<Vec<Entry>> = vec![
            vec![],
            vec![e("", 0, "", None)],
            vec![
                e(
                    "a b+c%d#e?f",
                    0,
                    "\"d41d8cd98f00b204e9800998ecf8427e\"",
                    None,
                ),
                e(
                    "a b+c%d#e?g",
                    0,
                    "\"D41D8CD98F00B204E9800998ECF8427E\"",
                    None,
                ),
                e("a b+c%d#e?h", 0, "d41d8cd98f00b204e9800998ecf8427e", None),
                e("dir/", 1, "\"x-2\"", Some("STANDARD_IA")),
                e("dir/é/日本", u64::MAX, "", Some("")),
                e("dir/é/日本語", 300 << 30, "\"e\"", Some("GLACIER")),
                e(&long, 5, "\"f\"", None),
            ],
        ];
        for entries in cases {
            let bytes = encode(&entries, MAX_BYTES).expect("fits");
            assert_eq!(decode(&bytes), Ok(entries));
        }
    }

    #[test]
    fn shared_key_prefixes_are_stored_once() {
        let entries: Vec<Entry> = (0..1000)
            .map(|i| {
                e(
                    &format!("logs/2026/11/28/host-{i:06}.json.gz"),
                    4096,
                    "\"0123456789abcdef0123456789abcdef\"",
                    None,
                )
            })
            .collect();
        let raw: usize = entries.iter().map(|e| e.rel.len() + e.etag.len()).sum();
        let bytes = encode(&entries, MAX_BYTES).expect("fits");
        assert!(bytes.len() * 3 < raw * 2, "{} of {raw}", bytes.len());
    }

    #[test]
    fn a_listing_too_large_for_an_item_is_not_encoded() {
        let entries: Vec<Entry> = (0..1000)
            .map(|i| e(&format!("{i:04}{}", "x".repeat(1020)), 1, "\"e\"", None))
            .collect();
        assert_eq!(encode(&entries, MAX_BYTES), None);
        assert!(encode(&entries[..10], MAX_BYTES).is_some());
    }

    #[test]
    fn damaged_manifests_are_rejected_not_misread() {
        let bytes =
            encode(&[e("a", 1, "\"e\"", None), e("ab", 2, "", None)], MAX_BYTES).expect("fits");
        assert_eq!(decode(&[]), Err(ManifestError::Corrupt));
        assert_eq!(decode(&[9, 0]), Err(ManifestError::Version(9)));
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(ManifestError::Corrupt));
    }
}
