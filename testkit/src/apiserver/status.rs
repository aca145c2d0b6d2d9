//! API errors, and the `Status` objects the real server answers them with.

use serde_json::{Value, json};

/// A failed request: becomes a `Status` body with the same HTTP code.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: Value::Null,
        }
    }

    fn with_details(mut self, name: &str, group: &str, plural: &str) -> ApiError {
        let mut details = json!({"name": name, "kind": plural});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        self.details = details;
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        let resource = qualified(group, plural);
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(name, group, plural)
    }

    /// A path that names no resource.
    pub fn no_route() -> ApiError {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".to_string(),
        )
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        let resource = qualified(group, plural);
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(name, group, plural)
    }

    pub fn conflict(group: &str, plural: &str, name: &str) -> ApiError {
        let resource = qualified(group, plural);
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(name, group, plural)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", message.into())
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        Self::new(422, "Invalid", message.into())
    }

    pub fn forbidden(group: &str, plural: &str, verb: &str, namespace: Option<&str>) -> ApiError {
        let resource = qualified(group, plural);
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{resource} is forbidden: User \"system:serviceaccount:test:watchd\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}"
            ),
        )
        .with_details("", group, plural)
    }

    /// A watch or continue token from before the compaction point.
    pub fn expired(message: impl Into<String>) -> ApiError {
        Self::new(410, "Expired", message.into())
    }

    pub fn method_not_allowed() -> ApiError {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// The `Status` object of this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            status["details"] = self.details.clone();
        }
        status
    }
}

/// `plural.group`, as the real server names a resource in messages.
fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}
