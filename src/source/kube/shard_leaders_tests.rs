use super::*;
use crate::source::kube::test_api::{expect, mock_client, next};
use serde_json::{Value, json};

const SHARD_1: &str =
    "/apis/coordination.k8s.io/v1/namespaces/jobwarden-system/leases/jobwarden-shard-1-of-3";
/// Long enough that nothing expires during a test: the cache ends only when it is dropped.
const AN_HOUR: Duration = Duration::from_secs(3600);

fn lease(holder: &str, renewed: Timestamp, seconds: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "jobwarden-shard-1-of-3", "namespace": "jobwarden-system", "resourceVersion": "5"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "renewTime": renewed.to_string(),
        },
    })
}

fn leaders(client: Client) -> LeaseLeaders {
    LeaseLeaders::cached_for(client, "jobwarden-system", "jobwarden", 3, AN_HOUR)
}

#[tokio::test]
async fn a_shards_leader_is_its_lease_holder_read_once_until_forgotten() {
    let (client, mut api) = mock_client();
    let leaders = leaders(client);
    let server = tokio::spawn(async move {
        expect(&mut api, &format!("GET {SHARD_1}")).await.ok(&lease(
            "jobwarden-1",
            Timestamp::now(),
            15,
        ));
        // After `forget`: the Lease has expired (its holder died).
        expect(&mut api, &format!("GET {SHARD_1}")).await.ok(&lease(
            "jobwarden-1",
            "2020-01-01T00:00:00Z".parse().expect("timestamp"),
            15,
        ));
        api
    });
    assert_eq!(leaders.leader_of(1).await.as_deref(), Some("jobwarden-1"));
    assert_eq!(
        leaders.leader_of(1).await.as_deref(),
        Some("jobwarden-1"),
        "the second delivery uses the holder read for the first"
    );
    leaders.forget(1);
    assert_eq!(
        leaders.leader_of(1).await,
        None,
        "an expired Lease has no leader"
    );
    assert_eq!(leaders.leader_of(1).await, None, "kept too");
    assert_eq!(leaders.leader_of(3).await, None, "no shard 3 of 3");
    drop(leaders);
    let mut api = server.await.expect("the verifier finished");
    assert!(next(&mut api).await.is_none(), "two reads in all");
}

#[tokio::test]
async fn an_unreadable_or_missing_lease_means_no_leader_and_is_not_read_per_delivery() {
    let (client, mut api) = mock_client();
    let leaders = leaders(client);
    let server = tokio::spawn(async move {
        expect(&mut api, &format!("GET {SHARD_1}")).await.fail(
            403,
            "Forbidden",
            "leases is forbidden",
        );
        expect(
            &mut api,
            "GET /apis/coordination.k8s.io/v1/namespaces/jobwarden-system/leases/jobwarden-shard-2-of-3",
        )
        .await
        .fail(404, "NotFound", "not found");
        api
    });
    assert_eq!(leaders.leader_of(1).await, None);
    assert_eq!(leaders.leader_of(1).await, None);
    assert_eq!(leaders.leader_of(2).await, None);
    drop(leaders);
    let mut api = server.await.expect("the verifier finished");
    assert!(next(&mut api).await.is_none(), "one read per shard");
}
