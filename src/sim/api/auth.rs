//! Who is calling (`docs/gitlab-behaviour.md` §9). A personal access token comes as
//! `PRIVATE-TOKEN`, `private_token=`, `access_token=` or `Authorization: Bearer`. A CI job token
//! comes as `JOB-TOKEN` or `job_token=` (or as a bearer token) and counts only on the endpoints
//! that allow job tokens, and only while its job is running; elsewhere it is ignored. The artifact
//! downloads (`authenticate_non_get!`) also accept requests without any credentials, which then see
//! only public projects (the simulator has none).

use crate::sim::api::errors::ApiError;
use crate::sim::api::params::Params;
use crate::sim::autopilot;
use crate::sim::clock::SimTime;
use crate::sim::state::{TOKEN_USER_ID, World};
use crate::sim::status::Status;
use axum::http::HeaderMap;

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The configured personal access token (user 1).
    Token,
    /// The CI job token of a running job.
    Job {
        project_id: u64,
        job_id: u64,
        user_id: u64,
    },
    /// No credentials at all, where the endpoint tolerates that.
    Anonymous,
}

impl Principal {
    /// The user the request acts as (`None` when anonymous).
    pub fn user_id(self) -> Option<u64> {
        match self {
            Principal::Token => Some(TOKEN_USER_ID),
            Principal::Job { user_id, .. } => Some(user_id),
            Principal::Anonymous => None,
        }
    }

    /// The key user rate limits count under (per user, as GitLab does).
    pub fn rate_limit_key(self) -> Option<String> {
        self.user_id().map(|id| format!("user:{id}"))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What an endpoint accepts besides a personal access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepts {
    pub job_token: bool,
    pub anonymous: bool,
}

/// Authenticates a request for an endpoint that accepts `accepts`.
pub(crate) fn authenticate(
    world: &mut World,
    now: SimTime,
    headers: &HeaderMap,
    params: &Params,
    configured_token: &str,
    accepts: Accepts,
) -> Result<Principal, ApiError> {
    let bearer = bearer(headers);
    let personal = header(headers, "private-token")
        .map(str::to_owned)
        .or_else(|| params.scalar("private_token"))
        .or_else(|| params.scalar("access_token"))
        .or_else(|| bearer.map(str::to_owned));

    if accepts.job_token {
        let job_token = header(headers, "job-token")
            .map(str::to_owned)
            .or_else(|| params.scalar("job_token"))
            .or_else(|| {
                bearer
                    .filter(|b| !same_secret(b, configured_token))
                    .map(str::to_owned)
            });
        if let Some(token) = job_token {
            return running_job(world, now, &token).ok_or_else(ApiError::unauthorized);
        }
    }
    match personal {
        Some(token) if same_secret(&token, configured_token) => Ok(Principal::Token),
        None if accepts.anonymous => Ok(Principal::Anonymous),
        _ => Err(ApiError::unauthorized()),
    }
}

fn running_job(world: &mut World, now: SimTime, token: &str) -> Option<Principal> {
    let (project_id, job_id) = world.job_of_token(token)?;
    autopilot::advance(world, project_id, now);
    let job = world.job(project_id, job_id)?;
    (job.status == Status::Running).then_some(Principal::Job {
        project_id,
        job_id,
        user_id: job.user_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn personal_token_sources() {
        let mut world = World::new(1, None);
        let strict = Accepts {
            job_token: false,
            anonymous: false,
        };
        let mut auth = |h: &HeaderMap, q: &str, accepts: Accepts| {
            authenticate(
                &mut world,
                SimTime(0),
                h,
                &Params::from_query(q),
                "s3cret",
                accepts,
            )
        };
        let token = Ok(Principal::Token);
        let refused = Err(ApiError::unauthorized());
        assert_eq!(
            auth(&headers(&[("private-token", "s3cret")]), "", strict),
            token
        );
        assert_eq!(
            auth(&headers(&[("authorization", "Bearer s3cret")]), "", strict),
            token
        );
        assert_eq!(
            auth(&HeaderMap::new(), "private_token=s3cret", strict),
            token
        );
        assert_eq!(
            auth(&HeaderMap::new(), "access_token=s3cret", strict),
            token
        );
        assert_eq!(auth(&HeaderMap::new(), "", strict), refused);
        assert_eq!(
            auth(&headers(&[("private-token", "wrong")]), "", strict),
            refused
        );
        // A job token is ignored where job tokens are not allowed.
        assert_eq!(
            auth(&headers(&[("job-token", "glcbt-1_00")]), "", strict),
            refused
        );

        let lenient = Accepts {
            job_token: true,
            anonymous: true,
        };
        assert_eq!(
            auth(&HeaderMap::new(), "", lenient),
            Ok(Principal::Anonymous)
        );
        assert_eq!(
            auth(&headers(&[("private-token", "x")]), "", lenient),
            refused
        );
        assert_eq!(
            auth(&headers(&[("job-token", "glcbt-1_00")]), "", lenient),
            refused
        );
    }
}
