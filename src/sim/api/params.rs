//! Request parameters the way Rack and Grape see them: the query string and a form or JSON
//! body merged into one set, with Rack's bracket conventions (`scope[]=a`, `scope[0]=a`,
//! `vars[][key]=k&vars[][value]=v`) and Grape's coercion error messages.

use crate::sim::api::errors::ApiError;
use serde_json::Value;
use std::collections::BTreeMap;

/// One hash of an array-of-hashes parameter (`name[][key]=k`): field → value (`None` for a
/// JSON `null`).
pub(crate) type HashParam = BTreeMap<String, Option<String>>;

/// The parameters of one request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    /// Decoded `key=value` pairs from the query string, then from a form body.
    pairs: Vec<(String, String)>,
    /// Top-level members of a JSON object body (they win over pairs of the same name).
    json: serde_json::Map<String, Value>,
}

impl Params {
    /// Parses a raw query string.
    pub fn from_query(query: &str) -> Params {
        let mut params = Params::default();
        params.add_urlencoded(query);
        params
    }

    /// Adds `application/x-www-form-urlencoded` pairs.
    pub fn add_urlencoded(&mut self, encoded: &str) {
        for piece in encoded.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            self.pairs.push((form_decode(key), form_decode(value)));
        }
    }

    /// Adds the members of a JSON object body; a body that is not an object is an error.
    pub fn add_json(&mut self, body: &[u8]) -> Result<(), ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => {
                self.json.extend(map);
                Ok(())
            }
            Ok(_) | Err(_) => Err(ApiError::bad_request("Invalid JSON body")),
        }
    }

    /// The raw pairs (for rebuilding pagination links).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// A scalar parameter: the JSON member, else the last `name=` pair (Rack keeps the last).
    pub fn scalar(&self, name: &str) -> Option<String> {
        if let Some(value) = self.json.get(name) {
            return match value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Null | Value::Array(_) | Value::Object(_) => None,
            };
        }
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// A list parameter given as a single string, an array (`name[]=`) or a hash (`name[k]=`,
    /// whose values are used): Grape's `coerce_with` for `scope`.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        if let Some(value) = self.json.get(name) {
            return Some(match value {
                Value::Array(items) => items.iter().map(json_scalar).collect(),
                Value::Object(map) => map.values().map(json_scalar).collect(),
                other => vec![json_scalar(other)],
            });
        }
        let array_key = format!("{name}[]");
        let hash_prefix = format!("{name}[");
        let mut array = Vec::new();
        let mut hash: Vec<(String, String)> = Vec::new();
        let mut single = None;
        for (key, value) in &self.pairs {
            if *key == array_key {
                array.push(value.clone());
            } else if key == name {
                single = Some(value.clone());
            } else if let Some(inner) = key
                .strip_prefix(&hash_prefix)
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|inner| !inner.contains('['))
            {
                // Rack keeps the last value of a repeated hash key, in first-seen order.
                match hash.iter_mut().find(|(k, _)| k == inner) {
                    Some(slot) => slot.1 = value.clone(),
                    None => hash.push((inner.to_owned(), value.clone())),
                }
            }
        }
        if !array.is_empty() {
            Some(array)
        } else if !hash.is_empty() {
            Some(hash.into_iter().map(|(_, v)| v).collect())
        } else {
            single.map(|s| vec![s])
        }
    }

    /// An array of hashes (`name[][key]=k&name[][value]=v…`, `name[0][key]=k…`, or a JSON
    /// array of objects). `Ok(None)` when the parameter is absent; hashes keep only string
    /// values. A plain value where the array belongs (`name=x`, a JSON string, number or
    /// boolean) fails Grape's `type: Array` coercion: 400 `"<name> is invalid"` (an empty
    /// string coerces to an empty array).
    pub fn hash_array(&self, name: &str) -> Result<Option<Vec<HashParam>>, ApiError> {
        match self.json.get(name) {
            Some(value) => json_hash_array(name, value).map(Some),
            None => self.pairs_hash_array(name),
        }
    }

    /// [`Params::hash_array`] from the query and form pairs: the `name[][field]=` hashes
    /// (grouped as Rack groups them), then the `name[index][field]=` hashes (in the order their
    /// indexes first appear).
    fn pairs_hash_array(&self, name: &str) -> Result<Option<Vec<HashParam>>, ApiError> {
        let array_prefix = format!("{name}[][");
        let indexed_prefix = format!("{name}[");
        let mut rack_array: Vec<HashParam> = Vec::new();
        let mut indexed: Vec<(String, HashParam)> = Vec::new();
        let mut seen = false;
        // `name=value` (Rack keeps the last): a scalar, unless bracketed forms are given too.
        let mut plain: Option<&str> = None;
        for (key, value) in &self.pairs {
            if let Some(field) = key
                .strip_prefix(&array_prefix)
                .and_then(|rest| rest.strip_suffix(']'))
            {
                seen = true;
                push_rack_field(&mut rack_array, field, value);
            } else if let Some((index, field)) = key
                .strip_prefix(&indexed_prefix)
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|rest| rest.split_once("]["))
            {
                seen = true;
                set_indexed_field(&mut indexed, index, field, value);
            } else if key == name {
                plain = Some(value);
            } else if *key == format!("{name}[]") {
                seen = true;
            }
        }
        if !seen {
            return match plain {
                None => Ok(None),
                Some("") => Ok(Some(Vec::new())),
                Some(_) => Err(ApiError::param(format!("{name} is invalid"))),
            };
        }
        rack_array.extend(indexed.into_iter().map(|(_, hash)| hash));
        Ok(Some(rack_array))
    }

    /// An optional integer (Grape `type: Integer`): `"<name> is invalid"` when not one.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.scalar(name) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::param(format!("{name} is invalid"))),
        }
    }

    /// An optional boolean (Grape `Boolean`): `"<name> is invalid"` when not one.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.scalar(name) {
            None => Ok(None),
            Some(raw) => parse_bool(&raw)
                .map(Some)
                .ok_or_else(|| ApiError::param(format!("{name} is invalid"))),
        }
    }
}

/// [`Params::hash_array`] of a JSON member: an array of objects, or an object whose values
/// are the objects (an empty string or `null` is an empty array; another scalar is invalid).
/// An item that is not an object is an empty hash.
fn json_hash_array(name: &str, value: &Value) -> Result<Vec<HashParam>, ApiError> {
    let items = match value {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map.values().cloned().collect(),
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::Null => Vec::new(),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            return Err(ApiError::param(format!("{name} is invalid")));
        }
    };
    Ok(items
        .iter()
        .map(|item| match item {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let v = (!v.is_null()).then(|| json_scalar(v));
                    (k.clone(), v)
                })
                .collect(),
            _ => BTreeMap::new(),
        })
        .collect())
}

/// Adds `name[][field]=value` to the array of hashes the way Rack does: to the last hash,
/// unless that one already has `field` (then a new hash starts).
fn push_rack_field(hashes: &mut Vec<HashParam>, field: &str, value: &str) {
    let start_new = hashes.last().is_none_or(|last| last.contains_key(field));
    if start_new {
        hashes.push(BTreeMap::new());
    }
    if let Some(last) = hashes.last_mut() {
        last.insert(field.to_owned(), Some(value.to_owned()));
    }
}

/// Sets `name[index][field]=value` in the hash of that index (created, after the others,
/// the first time the index appears).
fn set_indexed_field(hashes: &mut Vec<(String, HashParam)>, index: &str, field: &str, value: &str) {
    let slot = match hashes.iter().position(|(i, _)| i == index) {
        Some(pos) => pos,
        None => {
            hashes.push((index.to_owned(), BTreeMap::new()));
            hashes.len() - 1
        }
    };
    hashes[slot]
        .1
        .insert(field.to_owned(), Some(value.to_owned()));
}

fn json_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Grape's boolean coercion.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "f" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub(crate) fn form_decode(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-decodes one path segment (`+` stays a plus).
pub(crate) fn path_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_forms() {
        let p = Params::from_query("scope=pending");
        assert_eq!(p.list("scope"), Some(vec!["pending".to_owned()]));
        let p = Params::from_query("scope%5B%5D=pending&scope[]=running");
        assert_eq!(
            p.list("scope"),
            Some(vec!["pending".to_owned(), "running".to_owned()])
        );
        let p = Params::from_query("scope[0]=failed&scope[1]=success");
        assert_eq!(
            p.list("scope"),
            Some(vec!["failed".to_owned(), "success".to_owned()])
        );
        // Repeated plain keys: Rack keeps the last.
        let p = Params::from_query("scope=a&scope=b");
        assert_eq!(p.list("scope"), Some(vec!["b".to_owned()]));
        assert_eq!(Params::from_query("page=2").list("scope"), None);
    }

    #[test]
    fn hash_arrays_follow_rack() {
        let p = Params::from_query(
            "vars[][key]=A&vars[][value]=1&vars[][key]=B&vars[][value]=2&vars[][value]=3",
        );
        let got = p.hash_array("vars").expect("valid").expect("present");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].get("key"), Some(&Some("A".to_owned())));
        assert_eq!(got[1].get("value"), Some(&Some("2".to_owned())));
        assert_eq!(got[2].get("key"), None);

        let p = Params::from_query("vars[0][key]=A&vars[1][value]=2&vars[0][value]=1");
        let got = p.hash_array("vars").expect("valid").expect("present");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].get("value"), Some(&Some("1".to_owned())));
        assert_eq!(got[1].get("key"), None);

        let mut p = Params::default();
        p.add_json(br#"{"vars":[{"key":"K","value":"V"},{"value":"x"}]}"#)
            .expect("object");
        let got = p.hash_array("vars").expect("valid").expect("present");
        assert_eq!(got[1].get("key"), None);
        assert_eq!(Params::default().hash_array("vars"), Ok(None));
    }

    #[test]
    fn a_plain_value_is_not_an_array_of_hashes() {
        // What python-gitlab sends for `job.play(job_variables_attributes=[{...}])`: its
        // kwargs become query parameters, and a list of dicts flattens to the dicts' keys.
        let p = Params::from_query("vars=key&vars=value");
        assert_eq!(
            p.hash_array("vars"),
            Err(ApiError::param("vars is invalid"))
        );
        let mut p = Params::default();
        p.add_json(br#"{"vars": "K=V"}"#).expect("object");
        assert_eq!(
            p.hash_array("vars"),
            Err(ApiError::param("vars is invalid"))
        );
        let mut p = Params::default();
        p.add_json(br#"{"vars": 3}"#).expect("object");
        assert_eq!(
            p.hash_array("vars"),
            Err(ApiError::param("vars is invalid"))
        );
        // An empty value coerces to an empty array.
        assert_eq!(
            Params::from_query("vars=").hash_array("vars"),
            Ok(Some(Vec::new()))
        );
    }

    #[test]
    fn scalars_and_coercions() {
        let p = Params::from_query("page=2&page=3&force=true&bad=x&name=a+b%2Fc");
        assert_eq!(p.integer("page"), Ok(Some(3)));
        assert_eq!(p.boolean("force"), Ok(Some(true)));
        assert_eq!(p.integer("bad"), Err(ApiError::param("bad is invalid")));
        assert_eq!(p.scalar("name").as_deref(), Some("a b/c"));
        let mut p = Params::from_query("force=false");
        p.add_json(br#"{"force": true}"#).expect("object");
        assert_eq!(p.boolean("force"), Ok(Some(true)));
        assert!(Params::default().add_json(b"[1]").is_err());
    }
}
