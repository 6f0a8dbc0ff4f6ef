//! Strings from GitLab that name one of a few values (a failure reason, a status newer than
//! this build), each stored once for the life of the process and held as a 2-byte [`Token`].
//!
//! A job record names its failure reason, and a status this build does not know, by a token:
//! the many records kept at fleet scale then take 2 bytes for them, not an 8-byte pointer. There
//! are a few dozen failure reasons and, from a newer GitLab, a handful of new statuses; at most
//! [`MAX_TOKENS`] distinct strings are stored, and any further one (which only a GitLab sending
//! garbage would produce) is read as [`OVERFLOW`].

use crate::sync::lock;
use std::collections::HashMap;
use std::num::NonZeroU16;
use std::sync::{LazyLock, Mutex, OnceLock};

/// A string stored once per process (see the module docs). Compares and hashes as its handle,
/// orders as its text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(NonZeroU16);

/// How many distinct strings are stored at most, [`OVERFLOW`] included.
pub const MAX_TOKENS: usize = 4096;

/// What a string past [`MAX_TOKENS`] reads as.
pub const OVERFLOW: &str = "other";

/// The texts by handle minus one: read without a lock (a text is set once, before its token
/// exists), written under the registry's.
type Texts = [OnceLock<&'static str>; MAX_TOKENS];

static TEXTS: Texts = [const { OnceLock::new() }; MAX_TOKENS];

/// The handles by text, and where their texts are kept.
struct Registry {
    texts: &'static Texts,
    handles: HashMap<&'static str, Token>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    Mutex::new(Registry {
        texts: &TEXTS,
        handles: HashMap::new(),
    })
});

impl Registry {
    fn token(&mut self, text: &str) -> Token {
        if let Some(token) = self.handles.get(text) {
            return *token;
        }
        if self.handles.len() + 1 >= MAX_TOKENS && text != OVERFLOW {
            return self.token(OVERFLOW);
        }
        // Stored for the life of the process, and at most MAX_TOKENS of them: see the module
        // docs.
        let text: &'static str = Box::leak(text.into());
        let index = self.handles.len();
        let _ = self.texts[index].set(text);
        let handle = u16::try_from(index + 1).expect("at most MAX_TOKENS handles");
        let token = Token(NonZeroU16::new(handle).expect("a handle counts from one"));
        self.handles.insert(text, token);
        token
    }

    fn text(texts: &Texts, token: Token) -> &'static str {
        texts[usize::from(token.0.get()) - 1]
            .get()
            .copied()
            .unwrap_or(OVERFLOW)
    }
}

impl Token {
    /// The token of `text`, stored on first use.
    pub fn new(text: &str) -> Token {
        lock(&REGISTRY).token(text)
    }

    /// The text (no lock taken: records are read far more often than made).
    pub fn as_str(self) -> &'static str {
        Registry::text(&TEXTS, self)
    }
}

impl From<&str> for Token {
    fn from(text: &str) -> Token {
        Token::new(text)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialOrd for Token {
    fn partial_cmp(&self, other: &Token) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Token {
    fn cmp(&self, other: &Token) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_is_stored_once_and_read_back() {
        let a = Token::new("runner_system_failure");
        let b = Token::from("runner_system_failure");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "runner_system_failure");
        assert_ne!(a, Token::new("script_failure"));
        assert!(Token::new("a_reason") < Token::new("b_reason"));
        assert_eq!(std::mem::size_of::<Option<Token>>(), 2);
    }

    #[test]
    fn strings_past_the_bound_read_as_overflow() {
        let texts: &'static Texts = Box::leak(Box::new([const { OnceLock::new() }; MAX_TOKENS]));
        let mut registry = Registry {
            texts,
            handles: HashMap::new(),
        };
        let tokens: Vec<Token> = (0..MAX_TOKENS + 10)
            .map(|i| registry.token(&format!("reason_{i}")))
            .collect();
        assert_eq!(registry.handles.len(), MAX_TOKENS);
        assert_eq!(Registry::text(texts, tokens[MAX_TOKENS + 9]), OVERFLOW);
        assert_eq!(Registry::text(texts, tokens[0]), "reason_0");
        assert_eq!(
            tokens[MAX_TOKENS + 9],
            tokens[MAX_TOKENS - 1],
            "one overflow token"
        );
    }
}
