//! API errors, and the `Status` objects the real server answers them with.

use serde::Serialize;
use serde_json::Value;

/// A failed request: becomes a `Status` body with the same HTTP code.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `None`: the `Status` has no `details` (`Some` of an empty one is
    /// `"details":{}`). Boxed: errors travel in every `Result`.
    pub details: Option<Box<Details>>,
}

/// `Status.details`, its fields in the real server's order; empty ones are
/// left out, as Go's `omitempty` does.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (plural) for most errors; the kind for validation errors.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

/// One `details.causes` entry: what a field error says.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Cause {
    /// `FieldValueInvalid`, ...
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

/// A field error of a validation (`field.Invalid` in the real server).
pub(crate) struct FieldError {
    pub field: String,
    /// The bad value as Go prints it: `0x0` (an unsigned 0), `-1`, `"x"`.
    pub value: String,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: &str, value: impl Into<String>, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            value: value.into(),
            detail: detail.to_string(),
        }
    }

    fn body(&self) -> String {
        format!("Invalid value: {}: {}", self.value, self.detail)
    }
}

/// The `Status` object as the real server serializes it: these fields, in
/// this order (the JSON of `metav1.Status`).
#[derive(Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn with_details(mut self, name: &str, group: &str, plural: &str) -> ApiError {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: plural.to_string(),
            causes: Vec::new(),
        }));
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
        .with_details("", "", "")
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

    /// 422 Invalid for field errors, as `apierrors.NewInvalid(groupKind,
    /// name, errs)`: `<kind>.<group> "<name>" is invalid: <errors>` with one
    /// cause per error. `kind` is what the real server puts there: the Kind
    /// for validation errors (`Lease`), the resource for a missing
    /// resourceVersion (`leases`).
    pub fn invalid_fields(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> ApiError {
        let each: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        // Go's ErrorList.ToAggregate(): one error as is, more in brackets.
        let all = match each.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {all}", qualified(group, kind)),
        )
        .with_details(name, group, kind);
        if let Some(details) = &mut e.details {
            details.causes = errs
                .iter()
                .map(|e| Cause {
                    reason: "FieldValueInvalid",
                    message: e.body(),
                    field: e.field.clone(),
                })
                .collect();
        }
        e
    }

    /// The `Status` object of this error (as a value: its fields sorted).
    pub fn to_status(&self) -> Value {
        serde_json::to_value(self.status_body()).expect("a Status serializes")
    }

    /// The `Status` object of this error as the real server writes it,
    /// byte for byte: `{"kind":"Status","apiVersion":"v1","metadata":{},...}`.
    pub fn to_status_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.status_body()).expect("a Status serializes")
    }

    fn status_body(&self) -> StatusBody<'_> {
        StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code,
        }
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
