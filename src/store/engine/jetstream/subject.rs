//! Where a record lives in JetStream: the partition stream of a key and its
//! subject (`docs/format.md`, "JetStream layout").
//!
//! Every record is one subject, so a key's current value is the last message
//! on its subject and a write can be made conditional on that subject's last
//! sequence. Keys are hex-encoded into subject tokens (lowercase hex sorts
//! like the bytes it encodes, so sorting subjects' keys gives key order):
//!
//! ```text
//! <ns>.<p>.<cf>.<hex handle>.k<hex rest of key>   column families keyed by handle
//! <ns>.<p>.<cf>.k<hex key>                        meta, audit, changes (partition 0)
//! ```

use super::super::Cf;
use crate::types::Handle;

/// Whether `cf`'s keys start with a user's or a conversation's handle (and
/// so are spread over the partitions by it).
pub(crate) fn keyed_by_handle(cf: Cf) -> bool {
    !matches!(cf, Cf::Meta | Cf::Audit | Cf::Changes)
}

/// The partition of a handle: its first four bytes, big-endian, modulo the
/// partition count.
pub(crate) fn partition_of_handle(handle: &[u8], partitions: u32) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&handle[..4]);
    u32::from_be_bytes(b) % partitions
}

/// The layout of one store in one cluster: its namespace (the first subject
/// token and the stream names' prefix) and its partition count.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) namespace: String,
    pub(crate) partitions: u32,
}

/// A key's place: its partition and its subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Place {
    pub(crate) partition: u32,
    pub(crate) subject: String,
}

impl Layout {
    /// The stream of partition `p`.
    pub(crate) fn stream(&self, p: u32) -> String {
        format!("{}_{p}", self.namespace.to_ascii_uppercase())
    }

    /// The subjects of partition `p`'s stream.
    pub(crate) fn stream_subjects(&self, p: u32) -> String {
        format!("{}.{p}.>", self.namespace)
    }

    /// Where `key` of `cf` lives. `None` for a key too short to hold the
    /// handle its column family is keyed by.
    pub(crate) fn place(&self, cf: Cf, key: &[u8]) -> Option<Place> {
        if keyed_by_handle(cf) {
            if key.len() < Handle::LEN {
                return None;
            }
            let (handle, rest) = key.split_at(Handle::LEN);
            let p = partition_of_handle(handle, self.partitions);
            Some(Place {
                partition: p,
                subject: format!(
                    "{}.{p}.{}.{}.k{}",
                    self.namespace,
                    cf.name(),
                    hex(handle),
                    hex(rest)
                ),
            })
        } else {
            Some(Place {
                partition: 0,
                subject: format!("{}.0.{}.k{}", self.namespace, cf.name(), hex(key)),
            })
        }
    }

    /// The partition and a subject filter covering every key of `cf` that
    /// starts with `handle` (for the column families not keyed by handle,
    /// the whole column family: the caller keeps the keys with the prefix).
    pub(crate) fn handle_filter(&self, cf: Cf, handle: &Handle) -> (u32, String) {
        if keyed_by_handle(cf) {
            let p = partition_of_handle(handle.as_bytes(), self.partitions);
            let f = format!(
                "{}.{p}.{}.{}.>",
                self.namespace,
                cf.name(),
                hex(handle.as_bytes())
            );
            (p, f)
        } else {
            (0, format!("{}.0.{}.>", self.namespace, cf.name()))
        }
    }

    /// The partitions holding `cf` and the subject filter of all its keys in
    /// partition `p`.
    pub(crate) fn cf_filters(&self, cf: Cf) -> Vec<(u32, String)> {
        let parts = if keyed_by_handle(cf) {
            0..self.partitions
        } else {
            0..1
        };
        parts
            .map(|p| (p, format!("{}.{p}.{}.>", self.namespace, cf.name())))
            .collect()
    }

    /// The key a subject of `cf` encodes, `None` if it is not one of this
    /// layout's subjects of `cf`.
    pub(crate) fn key_of(&self, cf: Cf, subject: &str) -> Option<Vec<u8>> {
        let mut tokens = subject.split('.');
        if tokens.next()? != self.namespace {
            return None;
        }
        let p: u32 = tokens.next()?.parse().ok()?;
        if p >= self.partitions || tokens.next()? != cf.name() {
            return None;
        }
        let mut key = Vec::with_capacity(40);
        if keyed_by_handle(cf) {
            key.extend(unhex(tokens.next()?)?);
            if key.len() != Handle::LEN {
                return None;
            }
        }
        key.extend(unhex(tokens.next()?.strip_prefix('k')?)?);
        if tokens.next().is_some() {
            return None;
        }
        Some(key)
    }
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 0xf) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(p: u32) -> Layout {
        Layout {
            namespace: "shred".into(),
            partitions: p,
        }
    }

    #[test]
    fn subjects_round_trip_to_keys() {
        let l = layout(4);
        let mut key = vec![0xab; Handle::LEN];
        key.extend(7u64.to_be_bytes());
        let place = l.place(Cf::Messages, &key).unwrap();
        assert_eq!(place.partition, 0xabab_abab % 4);
        assert_eq!(
            place.subject,
            format!("shred.3.messages.{}.k0000000000000007", "ab".repeat(16))
        );
        assert_eq!(l.key_of(Cf::Messages, &place.subject), Some(key.clone()));
        // The key record is the handle alone.
        let place = l.place(Cf::Keys, &key[..Handle::LEN]).unwrap();
        assert!(place.subject.ends_with(".k"));
        assert_eq!(
            l.key_of(Cf::Keys, &place.subject).as_deref(),
            Some(&key[..Handle::LEN])
        );
        // Meta lives in partition 0 whatever the count.
        let place = l.place(Cf::Meta, b"format_version").unwrap();
        assert_eq!(place.partition, 0);
        assert_eq!(
            l.key_of(Cf::Meta, &place.subject).as_deref(),
            Some(&b"format_version"[..])
        );
        // Not of this cf, namespace or partition count.
        assert_eq!(
            l.key_of(Cf::Keys, &format!("shred.3.messages.{}.k", "ab".repeat(16))),
            None
        );
        assert_eq!(layout(2).key_of(Cf::Messages, "shred.3.messages.x.k"), None);
        assert_eq!(l.key_of(Cf::Meta, "other.0.meta.k00"), None);
        assert_eq!(l.key_of(Cf::Meta, "shred.0.meta.kzz"), None);
        // Too short for a handle-keyed cf.
        assert_eq!(l.place(Cf::Keys, &[1, 2, 3]), None);
    }

    #[test]
    fn hex_sorts_like_bytes() {
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 1],
            vec![1],
            vec![0x0f],
            vec![0x10],
            vec![0xff, 0],
            vec![0xff],
        ];
        keys.sort();
        let mut hexes: Vec<String> = keys.iter().map(|k| hex(k)).collect();
        hexes.sort();
        let back: Vec<Vec<u8>> = hexes.iter().map(|h| unhex(h).unwrap()).collect();
        assert_eq!(back, keys);
    }
}
