//! The engine's clients and connection pools, per policy, token and CA bundle.

use super::*;
use crate::gitlab::CaBundle;
use crate::sim::TestPki;

fn engine() -> Engine {
    Engine::new(
        EngineConfig::default(),
        system_clock(),
        Arc::new(Metrics::new()),
    )
}

fn private_ca() -> CaBundle {
    CaBundle::from_pem(TestPki::new().ca_pem.as_bytes()).expect("a CA")
}

fn same(one: &GitLabClient, other: &GitLabClient) -> bool {
    Arc::ptr_eq(&one.inner, &other.inner)
}

#[tokio::test]
async fn a_ca_bundle_is_part_of_a_client_s_identity_and_an_unused_pool_is_dropped() {
    let engine = engine();
    let url: url::Url = "https://gitlab.example.com".parse().expect("a URL");
    let (a, b, c) = (
        PolicyKey::new("team-a", "p"),
        PolicyKey::new("team-b", "p"),
        PolicyKey::new("team-c", "p"),
    );
    let plain = GitLabAccess::new(SecretString::from("glpat-token"));
    let (x, y) = (private_ca(), private_ca());
    let with_x = plain.clone().with_ca_bundle(Some(x));
    let with_y = plain.clone().with_ca_bundle(Some(y));
    let client = |key: &PolicyKey, access: &GitLabAccess| {
        engine.client_for(key, &url, access).expect("a client")
    };

    let a1 = client(&a, &with_x);
    assert!(
        same(&a1, &client(&a, &with_x)),
        "the same access, the same client"
    );
    client(&b, &plain);
    assert_eq!(
        engine.connection_pools(),
        2,
        "team-b never connects through a pool that trusts team-a's CA"
    );
    client(&c, &with_x);
    assert_eq!(engine.connection_pools(), 2, "the same CA, the same pool");

    let a2 = client(&a, &with_y);
    assert!(!same(&a1, &a2), "a changed bundle replaces the client");
    assert_eq!(
        engine.connection_pools(),
        3,
        "x (still team-c's), y and none"
    );
    client(&c, &plain);
    assert_eq!(engine.connection_pools(), 2, "nobody trusts x any more");
    engine.forget_policy(&a).await;
    assert_eq!(engine.connection_pools(), 1, "nor y");
    assert_eq!(lock(&engine.inner.clients).len(), 2);
}
