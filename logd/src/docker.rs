//! Docker's json-file log lines (cri-dockerd nodes):
//! `{"log":"text\n","stream":"stdout","time":"2024-11-18T08:59:45.123456789Z"}`.
//! A `log` without its trailing `\n` is a partial line.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cri::Stream;

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    log: &'a RawValue,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// A decoded json-file line; strings borrow from the input when they hold no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLine<'a> {
    pub time: Cow<'a, str>,
    pub stream: Stream,
    pub partial: bool,
    /// The text without its trailing `\n`; any other `\n` is replaced by a
    /// space, since a line of output must stay one line.
    pub content: Cow<'a, str>,
}

/// Decodes `line` (without its `\n`); `None` when it is not a json-file record.
pub fn decode(line: &[u8]) -> Option<DockerLine<'_>> {
    let raw: Raw<'_> = serde_json::from_slice(line).ok()?;
    let stream = Stream::from_name(raw.stream.as_bytes())?;
    let (content, partial) = log_text(raw.log.get())?;
    let content = if content.contains('\n') {
        Cow::Owned(content.replace('\n', " "))
    } else {
        content
    };
    Some(DockerLine {
        time: raw.time,
        stream,
        partial,
        content,
    })
}

/// The text of the `log` string (`json` is its JSON form, quotes included)
/// without its trailing `\n`, and whether that newline was missing. The
/// common record, whose only escape is the final `\n`, is borrowed.
fn log_text(json: &str) -> Option<(Cow<'_, str>, bool)> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    if let Some(text) = inner.strip_suffix("\\n") {
        if !text.contains('\\') {
            return Some((Cow::Borrowed(text), false));
        }
    }
    if !inner.contains('\\') {
        return Some((Cow::Borrowed(inner), true));
    }
    let mut text: String = serde_json::from_str(json).ok()?;
    let complete = text.ends_with('\n');
    if complete {
        text.pop();
    }
    Some((Cow::Owned(text), !complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_line_borrows_its_text() {
        let l = decode(br#"{"log":"hello\n","stream":"stderr","time":"2024-11-18T08:59:45.1Z"}"#)
            .unwrap();
        assert_eq!(l.stream, Stream::Stderr);
        assert!(!l.partial);
        assert!(matches!(l.content, Cow::Borrowed("hello")));
        assert_eq!(l.time, "2024-11-18T08:59:45.1Z");
    }

    #[test]
    fn log_without_newline_is_partial_and_escapes_are_decoded() {
        let l =
            decode(br#"{"log":"a \"q\" \u00e9","stream":"stdout","time":"t","attrs":{}}"#).unwrap();
        assert!(l.partial);
        assert_eq!(l.content, "a \"q\" é");
    }

    #[test]
    fn inner_newlines_become_spaces() {
        let l = decode(br#"{"log":"a\nb\n","stream":"stdout","time":"t"}"#).unwrap();
        assert_eq!(l.content, "a b");
        assert!(!l.partial);
    }

    #[test]
    fn other_json_is_not_docker() {
        assert_eq!(decode(br#"{"msg":"x"}"#), None);
        assert_eq!(decode(br#"{"log":"x","stream":"stdin","time":"t"}"#), None);
        assert_eq!(decode(b"{not json"), None);
    }
}
