//! `labelSelector` and `fieldSelector` of list and watch requests.

use serde_json::Value;

use super::status::ApiError;

#[derive(Clone, Debug)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Clone, Debug)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(want), Some(v)) => v == want,
            (Op::Eq(_), None) => false,
            (Op::NotEq(want), v) => v != Some(want.as_str()),
            (Op::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Op::In(_), None) => false,
            (Op::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
            (Op::Exists, v) => v.is_some(),
            (Op::NotExists, v) => v.is_none(),
        }
    }
}

/// Both selectors of a request; the default selects everything.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Selector {
    /// Parses the query values. Labels: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
    /// `k in (a,b)`, `k notin (a,b)`. Fields: `metadata.name` and
    /// `metadata.namespace` with `=`, `==`, `!=` (others are a 400, as the
    /// real server answers fields a resource does not index).
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, ApiError> {
        let labels = match labels {
            Some(s) => split_top_level(s)
                .into_iter()
                .map(parse_requirement)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let fields: Vec<Requirement> = match fields {
            Some(s) => split_top_level(s)
                .into_iter()
                .map(parse_requirement)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        for f in &fields {
            let supported = matches!(f.op, Op::Eq(_) | Op::NotEq(_))
                && matches!(f.key.as_str(), "metadata.name" | "metadata.namespace");
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    f.key
                )));
            }
        }
        Ok(Selector { labels, fields })
    }

    /// True when it selects every object.
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| object.pointer("/metadata/labels")?.get(key)?.as_str();
        let field = |key: &str| match key {
            "metadata.name" => object.pointer("/metadata/name")?.as_str(),
            "metadata.namespace" => object.pointer("/metadata/namespace")?.as_str(),
            _ => None,
        };
        self.labels.iter().all(|r| r.matches(label(&r.key)))
            && self.fields.iter().all(|r| r.matches(field(&r.key)))
    }
}

/// Splits on commas outside parentheses, dropping empty parts.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_requirement(s: &str) -> Result<Requirement, ApiError> {
    let req = |key: &str, op| Requirement {
        key: key.trim().to_string(),
        op,
    };
    if let Some((k, v)) = s.split_once("!=") {
        return Ok(req(k, Op::NotEq(v.trim().to_string())));
    }
    if let Some((k, v)) = s.split_once("==").or_else(|| s.split_once('=')) {
        return Ok(req(k, Op::Eq(v.trim().to_string())));
    }
    for (word, is_in) in [(" notin ", false), (" in ", true)] {
        if let Some((k, set)) = s.split_once(word) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|x| x.strip_suffix(')'))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("unable to parse requirement: {s:?}"))
                })?;
            let values = inner.split(',').map(|v| v.trim().to_string()).collect();
            return Ok(req(
                k,
                if is_in {
                    Op::In(values)
                } else {
                    Op::NotIn(values)
                },
            ));
        }
    }
    match s.strip_prefix('!') {
        Some(k) => Ok(req(k, Op::NotExists)),
        None => Ok(req(s, Op::Exists)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selectors_select() {
        let s = |l: &str| Selector::parse(Some(l), None).expect("parses");
        let p = pod(json!({"app": "web", "tier": "front"}));
        assert!(s("app=web").matches(&p));
        assert!(s("app==web,tier").matches(&p));
        assert!(!s("app!=web").matches(&p));
        assert!(s("app in (db, web),!gone").matches(&p));
        assert!(!s("app notin (web)").matches(&p));
        assert!(!s("missing").matches(&p));
    }

    #[test]
    fn field_selectors_on_name_and_namespace_only() {
        let p = pod(json!({}));
        let s =
            Selector::parse(None, Some("metadata.name=p,metadata.namespace!=x")).expect("parses");
        assert!(s.matches(&p));
        assert!(Selector::parse(None, Some("spec.nodeName=n1")).is_err());
    }
}
