//! Conversation mode (`--conversations N`): which conversation a request is
//! for (Zipf-distributed over `N`, as users are in the per-user mode), which
//! of its `K` authors writes (uniform), the ids of both, and the check of a
//! backward read.
//!
//! Ids are derived from the indexes alone, so every run with the same prefix
//! addresses the same conversations and authors: conversation `c` is
//! `{prefix}{c}` and its author `a` (in `0..K`) is `{prefix}{c}-author-{a}`.
//! An author id names its conversation, and the payload checksum covers the
//! author id, so a message served from another conversation fails the check
//! even though its checksum is intact.

use rand::{Rng, RngExt};

use super::payload::verify_payload;
use super::users::UserPicker;

/// Picks (conversation, author) index pairs: conversations in `0..N` with a
/// Zipf distribution (index 0 is the hottest), authors uniformly in `0..K`.
#[derive(Debug, Clone)]
pub struct ConversationPicker {
    conversations: UserPicker,
    authors: u32,
    prefix: String,
}

impl ConversationPicker {
    /// `conversations` conversations with Zipf exponent `zipf` (0 = uniform),
    /// `authors` authors each, ids starting with `prefix`.
    ///
    /// # Errors
    /// No conversations, no authors, or `zipf` negative or not finite.
    pub fn new(
        conversations: u64,
        authors: u32,
        zipf: f64,
        prefix: &str,
    ) -> Result<ConversationPicker, String> {
        if conversations == 0 {
            return Err("--conversations must be at least 1 for conversation mode".into());
        }
        if authors == 0 {
            return Err("--authors-per-conversation must be at least 1".into());
        }
        // The user picker's only other refusal is about the exponent.
        let conversations = UserPicker::new(conversations, zipf)?;
        Ok(ConversationPicker {
            conversations,
            authors,
            prefix: prefix.to_owned(),
        })
    }

    /// How many conversations there are.
    pub fn conversations(&self) -> u64 {
        self.conversations.users()
    }

    /// Authors per conversation.
    pub fn authors(&self) -> u32 {
        self.authors
    }

    /// A conversation index in `0..conversations()` and an author index in
    /// `0..authors()`.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> (u64, u32) {
        let c = self.conversations.pick(rng);
        (c, rng.random_range(0..self.authors))
    }

    /// The id of conversation `c`.
    pub fn conversation_id(&self, c: u64) -> String {
        conversation_id(&self.prefix, c)
    }

    /// The user id of author `a` of conversation `c`.
    pub fn author_id(&self, c: u64, a: u32) -> String {
        author_id(&self.prefix, c, a)
    }

    /// Whether `author` is the id of one of conversation `c`'s authors. Any
    /// author index is accepted, not only those below [`authors()`](Self::authors),
    /// so an earlier run with more authors per conversation reads back clean.
    pub fn is_author(&self, c: u64, author: &[u8]) -> bool {
        // Author 0's id without its index: `{prefix}{c}-author-`.
        let own = author_id(&self.prefix, c, 0);
        let stem = &own.as_bytes()[..own.len() - 1];
        author
            .strip_prefix(stem)
            .and_then(|rest| std::str::from_utf8(rest).ok())
            .and_then(|rest| rest.parse::<u32>().ok().map(|a| (rest, a)))
            // Exactly the digits `author_id` writes: no sign, no leading zero.
            .is_some_and(|(rest, a)| a.to_string() == rest)
    }
}

/// The id of conversation `c`: `{prefix}{c}`.
pub fn conversation_id(prefix: &str, c: u64) -> String {
    format!("{prefix}{c}")
}

/// The user id of author `a` of conversation `c`: `{prefix}{c}-author-{a}`.
pub fn author_id(prefix: &str, c: u64, a: u32) -> String {
    format!("{prefix}{c}-author-{a}")
}

/// Checks a backward read of one conversation item by item: at most `limit`
/// items, newest first (seqs strictly decreasing, none 0), each message by
/// one of the conversation's authors with an intact payload for that author.
/// Tombstones (erased authors, redactions) are allowed anywhere.
#[derive(Debug)]
pub(super) struct BackReadCheck<'p> {
    picker: &'p ConversationPicker,
    conversation: u64,
    limit: u32,
    items: u32,
    last_seq: Option<u64>,
    /// Messages that verified.
    pub(super) good: u64,
    /// Messages that did not (damaged, foreign, another author's or another
    /// conversation's).
    pub(super) bad: u64,
    /// Tombstones returned.
    pub(super) tombstones: u64,
    /// The items broke the read's shape: out of order, a repeated or zero
    /// seq, more than `limit`, or a slot that is neither message nor
    /// tombstone.
    pub(super) malformed: bool,
}

impl<'p> BackReadCheck<'p> {
    pub(super) fn new(picker: &'p ConversationPicker, conversation: u64, limit: u32) -> Self {
        BackReadCheck {
            picker,
            conversation,
            limit,
            items: 0,
            last_seq: None,
            good: 0,
            bad: 0,
            tombstones: 0,
            malformed: false,
        }
    }

    fn slot(&mut self, seq: u64) {
        self.items = self.items.saturating_add(1);
        if seq == 0 || self.last_seq.is_some_and(|last| seq >= last) || self.items > self.limit {
            self.malformed = true;
        }
        self.last_seq = Some(seq);
    }

    /// A readable message at `seq`.
    pub(super) fn message(&mut self, seq: u64, author: &[u8], payload: &[u8]) {
        self.slot(seq);
        if self.picker.is_author(self.conversation, author)
            && verify_payload(author, payload).is_ok()
        {
            self.good += 1;
        } else {
            self.bad += 1;
        }
    }

    /// A tombstone at `seq`.
    pub(super) fn tombstone(&mut self, seq: u64) {
        self.slot(seq);
        self.tombstones += 1;
    }

    /// A slot at `seq` with neither a message nor a tombstone.
    pub(super) fn empty_slot(&mut self, seq: u64) {
        self.slot(seq);
        self.malformed = true;
    }

    /// Whether the read passed.
    pub(super) fn passed(&self) -> bool {
        self.bad == 0 && !self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::build_payload;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn conversations_are_zipf_and_authors_uniform() {
        let p = ConversationPicker::new(50, 4, 1.0, "c-").unwrap();
        assert_eq!((p.conversations(), p.authors()), (50, 4));
        let mut rng = SmallRng::seed_from_u64(3);
        let mut convs = [0u64; 50];
        let mut authors = [0u64; 4];
        for _ in 0..100_000 {
            let (c, a) = p.pick(&mut rng);
            convs[usize::try_from(c).unwrap()] += 1;
            authors[usize::try_from(a).unwrap()] += 1;
        }
        // P(rank 1) = 1/H(50) ~ 0.22.
        assert!((19_500..25_000).contains(&convs[0]), "{}", convs[0]);
        assert!(convs[0] > convs[1] && convs[1] > convs[9] && convs[9] > convs[49]);
        assert!(convs[49] > 0);
        assert!(
            authors.iter().all(|&n| (24_000..26_000).contains(&n)),
            "{authors:?}"
        );
        let uniform = ConversationPicker::new(5, 1, 0.0, "c-").unwrap();
        let mut seen = [0u64; 5];
        for _ in 0..50_000 {
            let (c, a) = uniform.pick(&mut rng);
            assert_eq!(a, 0);
            seen[usize::try_from(c).unwrap()] += 1;
        }
        assert!(
            seen.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{seen:?}"
        );
    }

    #[test]
    fn ids_are_derived_from_the_indexes_and_name_their_conversation() {
        let p = ConversationPicker::new(20, 3, 1.0, "load-conv-").unwrap();
        assert_eq!(p.conversation_id(7), "load-conv-7");
        assert_eq!(p.author_id(7, 2), "load-conv-7-author-2");
        assert_eq!(author_id("x", 1, 0), "x1-author-0");
        assert!(p.is_author(7, b"load-conv-7-author-2"));
        assert!(
            p.is_author(7, b"load-conv-7-author-11"),
            "an earlier run's K"
        );
        for foreign in [
            &b"load-conv-1-author-2"[..],
            b"load-conv-17-author-2",
            b"load-conv-7-author-",
            b"load-conv-7-author-02",
            b"load-conv-7-author-+2",
            b"load-conv-7-author-2x",
            b"load-user-7",
            b"",
        ] {
            assert!(
                !p.is_author(7, foreign),
                "{}",
                String::from_utf8_lossy(foreign)
            );
        }
        assert!(ConversationPicker::new(0, 5, 1.0, "c").is_err());
        assert!(ConversationPicker::new(5, 0, 1.0, "c").is_err());
        let e = ConversationPicker::new(5, 5, -1.0, "c").unwrap_err();
        assert!(e.contains("--zipf"), "{e}");
    }

    #[test]
    fn back_reads_are_checked_for_order_authors_and_payloads() {
        let p = ConversationPicker::new(3, 2, 1.0, "c-").unwrap();
        let mut rng = SmallRng::seed_from_u64(9);
        let a0 = p.author_id(1, 0);
        let a1 = p.author_id(1, 1);
        let other = p.author_id(2, 0);
        let msg =
            |author: &str, rng: &mut SmallRng| build_payload(author.as_bytes(), 32, rng).unwrap();
        let (m0, m1, mo) = (
            msg(&a0, &mut rng),
            msg(&a1, &mut rng),
            msg(&other, &mut rng),
        );

        let mut ok = BackReadCheck::new(&p, 1, 50);
        ok.message(9, a0.as_bytes(), &m0);
        ok.tombstone(7);
        ok.message(3, a1.as_bytes(), &m1);
        assert!(ok.passed(), "{ok:?}");
        assert_eq!((ok.good, ok.bad, ok.tombstones), (2, 0, 1));

        // Another author's payload, another conversation's intact message.
        let mut bad = BackReadCheck::new(&p, 1, 50);
        bad.message(5, a1.as_bytes(), &m0);
        bad.message(4, other.as_bytes(), &mo);
        assert!(!bad.passed());
        assert_eq!((bad.good, bad.bad), (0, 2));
        assert!(!bad.malformed);

        let shape = |seqs: &[u64], limit: u32| {
            let mut c = BackReadCheck::new(&p, 1, limit);
            for &s in seqs {
                c.message(s, a0.as_bytes(), &m0);
            }
            assert_eq!(c.bad, 0);
            c.passed()
        };
        assert!(shape(&[3, 2, 1], 3));
        assert!(shape(&[], 3));
        assert!(!shape(&[1, 2], 3), "oldest first");
        assert!(!shape(&[5, 5], 3), "a repeated seq");
        assert!(!shape(&[2, 0], 3), "seq 0");
        assert!(!shape(&[4, 3, 2, 1], 3), "more than the limit");
        let mut empty = BackReadCheck::new(&p, 1, 3);
        empty.empty_slot(2);
        assert!(!empty.passed());
    }
}
