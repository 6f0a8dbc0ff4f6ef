//! GitLab's error responses (`docs/gitlab-behaviour.md` §5): three JSON shapes plus Rack::Attack's
//! plain text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

/// The body shapes GitLab uses for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorBody {
    /// `{"message": "..."}`: `render_api_error!` and its helpers.
    Message(String),
    /// `{"error": "..."}`: Grape validation errors and the catch-all route.
    Error(String),
    /// `{"message": {"error": "..."}}`: application rate limits.
    NestedError(String),
}

impl ApiError {
    fn message(status: StatusCode, text: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody::Message(text.into()),
        }
    }

    /// A Grape parameter error: 400 `{"error": "<text>"}`.
    pub fn param(text: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::Error(text.into()),
        }
    }

    /// 401 `{"message":"401 Unauthorized"}`.
    pub fn unauthorized() -> ApiError {
        ApiError::message(StatusCode::UNAUTHORIZED, "401 Unauthorized")
    }

    /// 403 `{"message":"403 Forbidden - <reason>"}`.
    pub fn forbidden(reason: &str) -> ApiError {
        ApiError::message(StatusCode::FORBIDDEN, format!("403 Forbidden - {reason}"))
    }

    /// 403 `{"message":"403 Forbidden"}` (`forbidden!` without a reason, as `authorize!`
    /// answers).
    pub fn forbidden_bare() -> ApiError {
        ApiError::message(StatusCode::FORBIDDEN, "403 Forbidden")
    }

    /// 400 `{"message":"400 Bad request"}` (`bad_request!` without a reason).
    pub fn bad_request_bare() -> ApiError {
        ApiError::message(StatusCode::BAD_REQUEST, "400 Bad request")
    }

    /// 400 `{"message":"400 Bad request - <reason>"}`.
    pub fn bad_request(reason: &str) -> ApiError {
        ApiError::message(
            StatusCode::BAD_REQUEST,
            format!("400 Bad request - {reason}"),
        )
    }

    /// 404 `{"message":"404 <resource> Not Found"}` (`not_found!(resource)`), or
    /// `{"message":"404 Not Found"}` without a resource.
    pub fn not_found(resource: Option<&str>) -> ApiError {
        let text = match resource {
            Some(r) => format!("404 {r} Not Found"),
            None => "404 Not Found".to_owned(),
        };
        ApiError::message(StatusCode::NOT_FOUND, text)
    }

    /// 404 `{"message":"404 Not found"}`: a record lookup that failed (`RecordNotFound`).
    pub fn record_not_found() -> ApiError {
        ApiError::message(StatusCode::NOT_FOUND, "404 Not found")
    }

    /// 404 `{"error":"404 Not Found"}`: no such route.
    pub fn no_route() -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody::Error("404 Not Found".to_owned()),
        }
    }

    /// 405 `{"error":"<text>"}` (pagination refusals).
    pub fn method_not_allowed_error(text: &str) -> ApiError {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: ErrorBody::Error(text.to_owned()),
        }
    }

    /// 429 of the `jobs_index` application limit (no rate-limit headers).
    pub fn jobs_index_throttled() -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: ErrorBody::NestedError(
                "This endpoint has been requested too many times. Try again later.".to_owned(),
            ),
        }
    }

    /// The JSON body as bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        let value = match &self.body {
            ErrorBody::Message(m) => json!({ "message": m }),
            ErrorBody::Error(e) => json!({ "error": e }),
            ErrorBody::NestedError(e) => json!({ "message": { "error": e } }),
        };
        value.to_string().into_bytes()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body_bytes()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
