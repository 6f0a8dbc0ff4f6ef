use super::*;
use crate::source::kube::test_api::{answer_lease_created, expect, mock_client, stop_and_join};
use serde_json::json;

const ME: &str = "jobwarden-7d9f-abc";
const OTHER: &str = "jobwarden-7d9f-xyz";

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

const NOW: &str = "2026-11-23T10:00:00Z";

fn settings() -> LeaseSettings {
    LeaseSettings::new(
        "jobwarden-system",
        "jobwarden",
        ME,
        DEFAULT_LEASE_DURATION,
        DEFAULT_RENEW_EVERY,
    )
    .expect("valid settings")
}

fn held_by(holder: &str, renewed: &str, seconds: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(micro_time(ts(renewed))),
        renew_time: Some(micro_time(ts(renewed))),
        lease_transitions: Some(3),
        ..LeaseSpec::default()
    }
}

#[test]
fn a_lease_without_holder_is_free() {
    assert_eq!(
        judge(&LeaseSpec::default(), ME, ts(NOW)),
        LeaseVerdict::Take
    );
    let empty = LeaseSpec {
        holder_identity: Some(String::new()),
        ..held_by(OTHER, NOW, 15)
    };
    assert_eq!(judge(&empty, ME, ts(NOW)), LeaseVerdict::Take);
}

#[test]
fn my_own_lease_is_renewed_even_if_it_expired() {
    assert_eq!(
        judge(&held_by(ME, "2026-11-23T09:00:00Z", 15), ME, ts(NOW)),
        LeaseVerdict::Renew
    );
}

#[test]
fn another_holder_keeps_the_lease_until_renew_time_plus_duration() {
    let spec = held_by(OTHER, "2026-11-23T09:59:50Z", 15);
    assert_eq!(
        judge(&spec, ME, ts(NOW)),
        LeaseVerdict::HeldBy {
            holder: OTHER.to_owned(),
            until: ts("2026-11-23T10:00:05Z"),
        }
    );
    // Exactly at the end it is still held; a moment later it is expired.
    assert!(matches!(
        judge(&spec, ME, ts("2026-11-23T10:00:05Z")),
        LeaseVerdict::HeldBy { .. }
    ));
    assert_eq!(
        judge(&spec, ME, ts("2026-11-23T10:00:05.001Z")),
        LeaseVerdict::Take
    );
}

#[test]
fn the_acquire_time_stands_in_for_a_missing_renew_time() {
    let spec = LeaseSpec {
        renew_time: None,
        ..held_by(OTHER, "2026-11-23T09:59:58Z", 15)
    };
    assert!(matches!(
        judge(&spec, ME, ts(NOW)),
        LeaseVerdict::HeldBy { .. }
    ));
}

#[test]
fn a_lease_that_cannot_prove_it_is_alive_is_taken() {
    let no_times = LeaseSpec {
        renew_time: None,
        acquire_time: None,
        ..held_by(OTHER, NOW, 15)
    };
    assert_eq!(judge(&no_times, ME, ts(NOW)), LeaseVerdict::Take);
    let no_duration = LeaseSpec {
        lease_duration_seconds: None,
        ..held_by(OTHER, NOW, 15)
    };
    assert_eq!(judge(&no_duration, ME, ts(NOW)), LeaseVerdict::Take);
}

#[test]
fn taking_over_from_another_holder_counts_a_transition() {
    let now = ts(NOW);
    let taken = taken_spec(
        Some(&held_by(OTHER, "2026-11-23T09:00:00Z", 15)),
        &settings(),
        now,
    );
    assert_eq!(taken.holder_identity.as_deref(), Some(ME));
    assert_eq!(taken.lease_transitions, Some(4));
    assert_eq!(taken.lease_duration_seconds, Some(15));
    assert_eq!(taken.acquire_time, Some(micro_time(now)));
    assert_eq!(taken.renew_time, Some(micro_time(now)));
    assert_eq!(
        judge(&taken, OTHER, now),
        LeaseVerdict::HeldBy {
            holder: ME.to_owned(),
            until: ts("2026-11-23T10:00:15Z"),
        }
    );

    let created = taken_spec(None, &settings(), now);
    assert_eq!(created.lease_transitions, Some(0));
    let from_released = taken_spec(
        Some(&released_spec(&held_by(OTHER, NOW, 15), now)),
        &settings(),
        now,
    );
    assert_eq!(
        from_released.lease_transitions,
        Some(3),
        "a released lease has no holder to count"
    );
}

#[test]
fn renewing_moves_only_the_renew_time() {
    let held = held_by(ME, "2026-11-23T09:59:55Z", 15);
    let renewed = renewed_spec(&held, &settings(), ts(NOW));
    assert_eq!(renewed.renew_time, Some(micro_time(ts(NOW))));
    assert_eq!(renewed.acquire_time, held.acquire_time);
    assert_eq!(renewed.holder_identity, held.holder_identity);
    assert_eq!(renewed.lease_transitions, held.lease_transitions);
}

#[test]
fn a_released_lease_is_free_at_once() {
    let released = released_spec(&held_by(ME, NOW, 15), ts(NOW));
    assert_eq!(judge(&released, OTHER, ts(NOW)), LeaseVerdict::Take);
}

#[test]
fn timings_that_cannot_work_are_refused() {
    assert_eq!(
        LeaseSettings::new(
            "ns",
            "l",
            ME,
            Duration::from_secs(1),
            Duration::from_millis(100)
        ),
        Err(LeaseSettingsError::TooShort)
    );
    assert!(matches!(
        LeaseSettings::new(
            "ns",
            "l",
            ME,
            Duration::from_secs(15),
            Duration::from_secs(10)
        ),
        Err(LeaseSettingsError::RenewTooSlow { .. })
    ));
    let ok = settings();
    assert_eq!(ok.renew_deadline, Duration::from_secs(10));
    assert!(ok.renew_every < ok.renew_deadline && ok.renew_deadline < ok.duration);
}

fn lease_json(spec: &LeaseSpec, resource_version: &str) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "jobwarden", "namespace": "jobwarden-system", "resourceVersion": resource_version},
        "spec": spec,
    })
}

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/jobwarden-system/leases/jobwarden";

#[tokio::test]
async fn a_missing_lease_is_created_with_this_identity() {
    let (client, mut api) = mock_client();
    let lock = LeaseLock::new(client, settings());
    let server = tokio::spawn(async move { answer_lease_created(&mut api).await });
    assert_eq!(
        lock.try_acquire_or_renew().await.expect("created"),
        Attempt::Leading
    );
    let created = server.await.expect("the verifier finished");
    assert_eq!(created["metadata"]["name"], "jobwarden");
    assert_eq!(created["spec"]["holderIdentity"], ME);
    assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn renewal_is_conditional_on_the_version_read_and_a_conflict_is_reported() {
    let (client, mut api) = mock_client();
    let lock = LeaseLock::new(client, settings());
    let mine = held_by(ME, "2026-11-23T09:59:58Z", 15);
    let server = tokio::spawn(async move {
        expect(&mut api, &format!("GET {LEASE_PATH}"))
            .await
            .ok(&lease_json(&mine, "41"));
        let put = expect(&mut api, &format!("PUT {LEASE_PATH}")).await;
        let body = put.body.clone();
        put.fail(409, "Conflict", "the object has been modified");
        body
    });
    let result = lock.try_acquire_or_renew().await;
    assert!(
        matches!(result, Err(LeaseError::Conflict { .. })),
        "{result:?}"
    );
    let sent = server.await.expect("the verifier finished");
    assert_eq!(
        sent["metadata"]["resourceVersion"], "41",
        "PUT carries the precondition"
    );
    assert_eq!(sent["spec"]["holderIdentity"], ME);
}

#[tokio::test]
async fn a_live_lease_of_another_replica_is_left_alone() {
    let (client, mut api) = mock_client();
    let lock = LeaseLock::new(client, settings());
    let theirs = held_by(OTHER, &Timestamp::now().to_string(), 15);
    let server = tokio::spawn(async move {
        expect(&mut api, &format!("GET {LEASE_PATH}"))
            .await
            .ok(&lease_json(&theirs, "7"));
        api
    });
    assert_eq!(
        lock.try_acquire_or_renew().await.expect("read"),
        Attempt::Following {
            holder: OTHER.to_owned()
        }
    );
    drop(lock);
    let mut api = server.await.expect("the verifier finished");
    assert!(
        crate::source::kube::test_api::next(&mut api)
            .await
            .is_none(),
        "no write to a lease held by another replica"
    );
}

/// Runs the election as `ME` against the scripted apiserver; `lead` waits for its term to end.
fn elect(
    client: kube::Client,
) -> (
    CancellationToken,
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
) {
    let shutdown = CancellationToken::new();
    let (led_tx, led) = tokio::sync::watch::channel(false);
    let lock = LeaseLock::new(client, settings());
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        run_elected(lock, stop, &Leadership::new(Role::Unknown), |term| {
            led_tx.send_replace(true);
            async move { term.cancelled().await }
        })
        .await;
    });
    (shutdown, led, task)
}

#[tokio::test]
async fn a_campaign_stops_at_shutdown_while_the_apiserver_has_not_answered() {
    let (client, mut api) = mock_client();
    let (shutdown, led, task) = elect(client);
    let unanswered = expect(&mut api, &format!("GET {LEASE_PATH}")).await;
    stop_and_join(&shutdown, api, task).await;
    assert!(
        !*led.borrow(),
        "a replica that never held the lease never led"
    );
    drop(unanswered);
}

#[tokio::test]
async fn a_leader_that_stops_waits_for_the_release_only_so_long() {
    let (client, mut api) = mock_client();
    let (shutdown, mut led, task) = elect(client);
    answer_lease_created(&mut api).await;
    led.wait_for(|led| *led).await.expect("the replica leads");
    shutdown.cancel();
    // The release reads the Lease first; the apiserver never answers.
    let unanswered = expect(&mut api, &format!("GET {LEASE_PATH}")).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(RELEASE_TIMEOUT + Duration::from_secs(3), task)
        .await
        .expect("the leader stops although the release is not answered")
        .expect("no panic");
    assert!(started.elapsed() >= RELEASE_TIMEOUT - Duration::from_millis(100));
    drop((unanswered, api));
}
