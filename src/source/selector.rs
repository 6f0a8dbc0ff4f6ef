//! `--selector key=value[,key2=value2]`: run only the JobPolicies whose labels match (Flux's
//! label-selector sharding of policies, for separate controller sets per team). Cluster mode
//! hands it to the apiserver (`labelSelector` of the list and watch); file mode compares it
//! with each manifest's `metadata.labels`. Every pair must match (equality only).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Labels a policy must carry, each with the given value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    required: BTreeMap<String, String>,
}

/// Why a `--selector` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("--selector is empty: give key=value[,key2=value2]")]
    Empty,
    #[error("--selector: `{0}` is not key=value")]
    NotAPair(String),
    #[error(
        "--selector: `{0}` is not a label key (an optional DNS-subdomain prefix and `/`, then at \
         most 63 letters, digits, `-`, `_` or `.`, beginning and ending with a letter or digit)"
    )]
    InvalidKey(String),
    #[error(
        "--selector: `{value}` (for {key}) is not a label value (at most 63 letters, digits, \
         `-`, `_` or `.`, beginning and ending with a letter or digit)"
    )]
    InvalidValue { key: String, value: String },
    #[error("--selector names {0} twice")]
    Repeated(String),
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<LabelSelector, SelectorError> {
        if text.trim().is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut required = BTreeMap::new();
        for term in text.split(',').map(str::trim) {
            let (key, value) = term
                .split_once('=')
                .ok_or_else(|| SelectorError::NotAPair(term.to_owned()))?;
            let (key, value) = (key.trim(), value.trim());
            if !is_label_key(key) {
                return Err(SelectorError::InvalidKey(key.to_owned()));
            }
            if !is_label_value(value) {
                return Err(SelectorError::InvalidValue {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
            if required.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(SelectorError::Repeated(key.to_owned()));
            }
        }
        Ok(LabelSelector { required })
    }
}

impl LabelSelector {
    /// Whether `labels` (a policy's `metadata.labels`) carry every required label and value.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.required
            .iter()
            .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
    }
}

impl fmt::Display for LabelSelector {
    /// The selector as the apiserver's `labelSelector` takes it: `key=value,key2=value2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .required
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        f.write_str(&terms.join(","))
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain (at most 253 characters).
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// A label value (also a key's name): empty, or at most 63 characters of `[-_.A-Za-z0-9]`
/// beginning and ending with an alphanumeric.
fn is_label_value(value: &str) -> bool {
    let edge_ok = |b: Option<u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && edge_ok(value.bytes().next())
        && edge_ok(value.bytes().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_pair_must_match() {
        let selector: LabelSelector = "team=platform, tier=prod".parse().expect("valid");
        assert_eq!(selector.to_string(), "team=platform,tier=prod");
        assert!(selector.matches(Some(&labels(&[
            ("team", "platform"),
            ("tier", "prod"),
            ("extra", "x")
        ]))));
        assert!(!selector.matches(Some(&labels(&[("team", "platform")]))));
        assert!(!selector.matches(Some(&labels(&[("team", "web"), ("tier", "prod")]))));
        assert!(!selector.matches(None));
    }

    #[test]
    fn prefixed_keys_and_empty_values_are_labels() {
        let selector: LabelSelector = "jobwarden.dev/shard=a,empty=".parse().expect("valid");
        assert!(selector.matches(Some(&labels(&[
            ("jobwarden.dev/shard", "a"),
            ("empty", "")
        ]))));
    }

    #[test]
    fn what_is_not_a_selector_is_refused_naming_the_flag() {
        let refused = [
            ("", SelectorError::Empty),
            ("team", SelectorError::NotAPair("team".into())),
            ("team=a,", SelectorError::NotAPair(String::new())),
            ("-team=a", SelectorError::InvalidKey("-team".into())),
            (
                "Bad_Prefix/x=a",
                SelectorError::InvalidKey("Bad_Prefix/x".into()),
            ),
            (
                "team=a b",
                SelectorError::InvalidValue {
                    key: "team".into(),
                    value: "a b".into(),
                },
            ),
            ("team=a,team=b", SelectorError::Repeated("team".into())),
        ];
        for (text, error) in refused {
            let parsed = text.parse::<LabelSelector>();
            assert_eq!(parsed, Err(error), "{text:?}");
            let message = parsed.expect_err("refused").to_string();
            assert!(message.contains("--selector"), "{message}");
        }
        let long = format!("team={}", "a".repeat(64));
        assert!(long.parse::<LabelSelector>().is_err());
    }
}
