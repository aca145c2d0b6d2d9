//! Leases (`coordination.k8s.io/v1`) as the real server handles them, for
//! leader election with client-go's algorithm (get; create on 404; else
//! replace with the resourceVersion read; 409 = lost the race):
//!
//! - the body is decoded into a typed `v1.Lease` first: a `spec` field of
//!   the wrong JSON type or a MicroTime (`acquireTime`, `renewTime`) that is
//!   not RFC 3339 with exactly six fractional digits fails the request with
//!   400 BadRequest, worded as the Go decoder words it; what decodes is
//!   stored as the real server writes it back (MicroTimes in UTC, `null`
//!   fields and a missing `spec` as Go's `omitempty` leaves them);
//! - a replace must carry `metadata.resourceVersion` (422 Invalid, `0x0`:
//!   Leases do not allow unconditional updates);
//! - a replace (PUT) of a missing Lease creates it (201), as Leases allow
//!   create-on-update;
//! - validation: `leaseDurationSeconds` > 0, `leaseTransitions` >= 0 (422).

use serde_json::{Value, json};

use super::catalog::ResourceType;
use super::microtime;
use super::status::{ApiError, FieldError};

const GROUP: &str = "coordination.k8s.io";

pub(crate) fn is_lease(t: &ResourceType) -> bool {
    t.id.group == GROUP && t.id.plural == "leases"
}

/// `spec.holderIdentity`, or "" (unset, null, not a string).
pub(crate) fn holder(obj: &Value) -> &str {
    obj.pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The JSON type of a value as Go's decoder names it in a type error.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What the real server's decoder does with a Lease body: Go's error text
/// when it fails (the server answers 400 with it), else the object as it
/// will be stored. Go stops at the first MicroTime that fails (its
/// `UnmarshalJSON` error ends the decode) but only notes type errors and
/// goes on, reporting the first; fields are looked at in name order here,
/// in the body's order there.
pub(crate) fn decode(obj: &mut Value) -> Result<(), String> {
    let spec = match obj.get_mut("spec") {
        None | Some(Value::Null) => {
            // `Spec LeaseSpec` is a struct, not a pointer: always written.
            obj["spec"] = json!({});
            return Ok(());
        }
        Some(Value::Object(spec)) => spec,
        Some(other) => {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field Lease.spec of type v1.LeaseSpec",
                json_type(other)
            ));
        }
    };
    // Pointer fields set to null are nil, and omitted when written.
    spec.retain(|_, v| !v.is_null());
    for field in ["acquireTime", "renewTime"] {
        let normalized = match spec.get(field) {
            None => continue,
            Some(Value::String(s)) => microtime::normalize(s)?,
            // MicroTime.UnmarshalJSON decodes a string with encoding/json;
            // that error carries no field (the server's decoder is a fork
            // and does not recognize the standard library's error type).
            Some(other) => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    json_type(other)
                ));
            }
        };
        spec.insert(field.to_string(), normalized);
    }
    let mut first_error = None;
    for (field, value) in spec.iter() {
        let go_type = match field.as_str() {
            "holderIdentity" | "preferredHolder" => "string",
            "strategy" => "v1.CoordinatedLeaseStrategy",
            "leaseDurationSeconds" | "leaseTransitions" => "int32",
            _ => continue,
        };
        let wrong = match (go_type, value) {
            ("int32", Value::Number(n)) => match n.as_i64() {
                Some(i) if i32::try_from(i).is_ok() => None,
                Some(i) => Some(format!("number {i}")),
                None => Some(match n.as_u64() {
                    Some(u) => format!("number {u}"),
                    None => format!("number {:?}", n.as_f64().unwrap_or(0.0)),
                }),
            },
            ("int32", other) => Some(json_type(other).to_string()),
            (_, Value::String(_)) => None,
            (_, other) => Some(json_type(other).to_string()),
        };
        if let Some(wrong) = wrong {
            first_error.get_or_insert(format!(
                "json: cannot unmarshal {wrong} into Go struct field LeaseSpec.spec.{field} of type {go_type}"
            ));
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(())
}

/// The real server's `ValidateLeaseSpec` (422 Invalid).
pub(crate) fn validate(obj: &Value, name: &str) -> Result<(), ApiError> {
    let int = |field: &str| {
        obj.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
    };
    let mut errs = Vec::new();
    if let Some(d) = int("leaseDurationSeconds").filter(|&d| d <= 0) {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d.to_string(),
            "must be greater than 0",
        ));
    }
    if let Some(t) = int("leaseTransitions").filter(|&t| t < 0) {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            t.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_fields(GROUP, "Lease", name, &errs))
    }
}

/// A replace without `metadata.resourceVersion`: what the real server's
/// generic store answers for resources that do not allow unconditional
/// updates (the resource in the kind's place, the version as Go prints an
/// unsigned 0).
pub(crate) fn missing_resource_version(name: &str) -> ApiError {
    ApiError::invalid_fields(
        GROUP,
        "leases",
        name,
        &[FieldError::invalid(
            "metadata.resourceVersion",
            "0x0",
            "must be specified for an update",
        )],
    )
}

/// A patch whose result does not decode: the real server's patch handler
/// answers 422 for the field `patch` with the patched object as its value,
/// under an empty kind and name.
pub(crate) fn undecodable_patch(patched: &Value, error: &str) -> ApiError {
    let json = serde_json::to_string(patched).expect("JSON values serialize");
    ApiError::invalid_fields(
        "",
        "",
        "",
        &[FieldError::invalid("patch", format!("{json:?}"), error)],
    )
}
