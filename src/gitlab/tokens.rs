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
use std::sync::{LazyLock, Mutex};

/// A string stored once per process (see the module docs). Compares and hashes as its handle,
/// orders as its text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(NonZeroU16);

/// How many distinct strings are stored at most, [`OVERFLOW`] included.
pub const MAX_TOKENS: usize = 4096;

/// What a string past [`MAX_TOKENS`] reads as.
pub const OVERFLOW: &str = "other";

#[derive(Default)]
struct Registry {
    /// By handle minus one.
    texts: Vec<&'static str>,
    handles: HashMap<&'static str, Token>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

impl Registry {
    fn token(&mut self, text: &str) -> Token {
        if let Some(token) = self.handles.get(text) {
            return *token;
        }
        if self.texts.len() + 1 >= MAX_TOKENS && text != OVERFLOW {
            return self.token(OVERFLOW);
        }
        // Stored for the life of the process, and at most MAX_TOKENS of them: see the module
        // docs.
        let text: &'static str = Box::leak(text.into());
        self.texts.push(text);
        let handle = u16::try_from(self.texts.len()).expect("at most MAX_TOKENS handles");
        let token = Token(NonZeroU16::new(handle).expect("a handle counts from one"));
        self.handles.insert(text, token);
        token
    }
}

impl Token {
    /// The token of `text`, stored on first use.
    pub fn new(text: &str) -> Token {
        lock(&REGISTRY).token(text)
    }

    /// The text.
    pub fn as_str(self) -> &'static str {
        lock(&REGISTRY).texts[usize::from(self.0.get()) - 1]
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
        let mut registry = Registry::default();
        let tokens: Vec<Token> = (0..MAX_TOKENS + 10)
            .map(|i| registry.token(&format!("reason_{i}")))
            .collect();
        assert_eq!(registry.texts.len(), MAX_TOKENS);
        let last = tokens[MAX_TOKENS + 9];
        assert_eq!(registry.texts[usize::from(last.0.get()) - 1], OVERFLOW);
        assert_eq!(registry.texts[0], "reason_0");
    }
}
