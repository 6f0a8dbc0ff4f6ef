//! Shared helpers for the simulator's integration tests: start a simulator on 127.0.0.1:0
//! with a manual clock, and talk to it with reqwest.
#![allow(dead_code)]

use jobwarden::sim::{Clock, FleetConfig, SimConfig, SimControl, SimHandle, Simulator};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

pub const TOKEN: &str = "glpat-test-token";
pub const T0: &str = "2026-11-23T10:00:00Z";

pub fn t0() -> jiff::Timestamp {
    T0.parse().expect("valid timestamp")
}

/// A static world: a manual clock at [`T0`], a frozen fleet of `projects` projects.
pub fn config(projects: u32) -> SimConfig {
    SimConfig {
        projects,
        clock: Clock::manual(t0()),
        fleet: FleetConfig::frozen(),
        ..SimConfig::new(TOKEN)
    }
}

pub struct Sim {
    pub handle: SimHandle,
    pub control: SimControl,
    pub client: reqwest::Client,
}

pub async fn start(config: SimConfig) -> Sim {
    let handle = Simulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts");
    let control = handle.control();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    Sim {
        handle,
        control,
        client,
    }
}

impl Sim {
    /// `<base>api/v4<path>`.
    pub fn api(&self, path_and_query: &str) -> String {
        format!("{}api/v4{path_and_query}", self.handle.base_url())
    }

    /// `<base><path>` (admin routes).
    pub fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.handle.base_url(),
            path_and_query.trim_start_matches('/')
        )
    }

    /// An authenticated API request.
    pub fn request(&self, method: Method, path_and_query: &str) -> RequestBuilder {
        self.client
            .request(method, self.api(path_and_query))
            .header("PRIVATE-TOKEN", TOKEN)
    }

    pub async fn get(&self, path_and_query: &str) -> Response {
        self.request(Method::GET, path_and_query)
            .send()
            .await
            .expect("request succeeds")
    }

    pub async fn post(&self, path_and_query: &str) -> Response {
        self.request(Method::POST, path_and_query)
            .send()
            .await
            .expect("request succeeds")
    }

    pub async fn get_json(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        json_of(self.get(path_and_query).await).await
    }

    pub async fn post_json(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        json_of(self.post(path_and_query).await).await
    }

    pub async fn stop(self) {
        self.handle.shutdown().await;
    }
}

pub async fn json_of(response: Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, value)
}

pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

/// The top-level keys of a JSON object, in the order they appear in the text.
pub fn key_order(json_object: &str) -> Vec<String> {
    key_order_at(json_object, &[])
}

/// The keys of the object reached by following `path` (member names) from the top, in text
/// order.
pub fn key_order_at(json_object: &str, path: &[&str]) -> Vec<String> {
    struct Seed<'p>(&'p [&'p str]);
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Vec<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                match self.0.split_first() {
                    Some((first, rest)) if *first == key => {
                        found = Some(map.next_value_seed(Seed(rest))?);
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                keys.push(key);
            }
            Ok(if self.0.is_empty() {
                keys
            } else {
                found.unwrap_or_default()
            })
        }
    }
    let mut de = serde_json::Deserializer::from_str(json_object);
    Seed(path).deserialize(&mut de).expect("a JSON object")
}

/// Follows `rel="next"` in a `Link` header.
pub fn next_link(link: Option<&str>) -> Option<String> {
    link?.split(", ").find_map(|part| {
        let (url, rel) = part.split_once("; ")?;
        (rel == "rel=\"next\"")
            .then(|| url.trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

/// The `rel` values of a `Link` header.
pub fn link_rels(link: &str) -> Vec<String> {
    link.split(", ")
        .filter_map(|part| {
            part.split_once("; rel=")
                .map(|(_, rel)| rel.trim_matches('"').to_owned())
        })
        .collect()
}
