//! Which files under the pods dir are container logs, and what their path
//! says: `<pods_dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`, plus
//! kubelet's rotated (`0.log.20241118-085945`) and compressed (`….gz`) forms.

use std::path::{Component, Path};

/// Where the intake expects every log path to be rooted, whatever the real
/// pods dir is (SPEC §1: the backend splits `metadata.path` on `/`).
pub const INTAKE_PODS_ROOT: &str = "/var/log/pods";

/// The rotation state a log file name encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// `<n>.log`: the file the runtime writes to.
    Current,
    /// `<n>.log.<YYYYMMDD-HHMMSS>`: renamed away by kubelet.
    Rotated { stamp: String },
    /// `<n>.log.<YYYYMMDD-HHMMSS>.gz`: a rotated file kubelet compressed.
    Compressed { stamp: String },
}

/// A container log file path under the pods dir, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLogPath {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// The container's restart count: the `<n>` of `<n>.log`.
    pub restart: u32,
    pub rotation: Rotation,
}

impl PodLogPath {
    /// Parses `path`, which must be `pods_dir/<pod dir>/<container>/<log file>`.
    /// Anything else (other depth, kubelet's `.tmp` files, stray names) is `None`.
    pub fn parse(pods_dir: &Path, path: &Path) -> Option<Self> {
        Self::parse_relative(path.strip_prefix(pods_dir).ok()?)
    }

    /// Parses `<pod dir>/<container>/<log file>` (relative to the pods dir).
    pub fn parse_relative(rel: &Path) -> Option<Self> {
        let mut parts = rel.components().map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        });
        let pod_dir = parts.next()??;
        let container = parts.next()??;
        let file = parts.next()??;
        if parts.next().is_some() {
            return None;
        }
        Self::from_parts(pod_dir, container, file)
    }

    /// Builds from the three path components; `None` when any is not valid.
    pub fn from_parts(pod_dir: &str, container: &str, file: &str) -> Option<Self> {
        let (namespace, pod, pod_uid) = parse_pod_dir_name(pod_dir)?;
        if container.is_empty() || container.contains('/') {
            return None;
        }
        let (restart, rotation) = parse_log_file_name(file)?;
        Some(Self {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            pod_uid: pod_uid.to_owned(),
            container: container.to_owned(),
            restart,
            rotation,
        })
    }

    /// `<namespace>_<pod>_<uid>`, the pod's directory name.
    pub fn pod_dir_name(&self) -> String {
        format!("{}_{}_{}", self.namespace, self.pod, self.pod_uid)
    }

    /// `<namespace>_<pod>_<uid>/<container>`: identifies the container's log dir.
    pub fn container_key(&self) -> String {
        format!("{}/{}", self.pod_dir_name(), self.container)
    }

    /// The name kubelet gives the current file: `<n>.log`, also for rotated files.
    pub fn base_file_name(&self) -> String {
        format!("{}.log", self.restart)
    }

    /// The `metadata.path` the intake wants: `/var/log/pods/<ns>_<pod>_<uid>/<container>`.
    pub fn intake_path(&self) -> String {
        format!("{INTAKE_PODS_ROOT}/{}", self.container_key())
    }

    /// True for `.gz` files (read through a decompressor).
    pub fn is_compressed(&self) -> bool {
        matches!(self.rotation, Rotation::Compressed { .. })
    }

    /// True for files kubelet renamed away (plain or compressed).
    pub fn is_rotated(&self) -> bool {
        self.rotation != Rotation::Current
    }
}

/// Splits a pod dir name `<namespace>_<pod>_<uid>`. Namespaces and pod names
/// are DNS names (no `_`), so the namespace is the first field, the uid the
/// last and the pod name what is between.
pub fn parse_pod_dir_name(name: &str) -> Option<(&str, &str, &str)> {
    let (namespace, rest) = name.split_once('_')?;
    let (pod, uid) = rest.rsplit_once('_')?;
    if namespace.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((namespace, pod, uid))
}

/// `<n>.log`, `<n>.log.<YYYYMMDD-HHMMSS>` or `<n>.log.<YYYYMMDD-HHMMSS>.gz`.
fn parse_log_file_name(name: &str) -> Option<(u32, Rotation)> {
    let (restart, rest) = name.split_once(".log")?;
    if restart.is_empty() || !restart.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let restart = restart.parse().ok()?;
    if rest.is_empty() {
        return Some((restart, Rotation::Current));
    }
    let rest = rest.strip_prefix('.')?;
    let (stamp, compressed) = match rest.strip_suffix(".gz") {
        Some(stamp) => (stamp, true),
        None => (rest, false),
    };
    if !is_rotation_stamp(stamp) {
        return None;
    }
    let stamp = stamp.to_owned();
    let rotation = if compressed {
        Rotation::Compressed { stamp }
    } else {
        Rotation::Rotated { stamp }
    };
    Some((restart, rotation))
}

/// Kubelet's rotation suffix: `YYYYMMDD-HHMMSS` (Go layout `20060102-150405`).
fn is_rotation_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[8] == b'-'
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[9..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn parse(rel: &str) -> Option<PodLogPath> {
        PodLogPath::parse(
            Path::new("/host/var/log/pods"),
            &Path::new("/host/var/log/pods").join(rel),
        )
    }

    #[test]
    fn current_log_file_is_split_into_its_parts() {
        let p = parse(&format!("default_web-7d9f-abcde_{UID}/nginx/0.log")).unwrap();
        assert_eq!(p.namespace, "default");
        assert_eq!(p.pod, "web-7d9f-abcde");
        assert_eq!(p.pod_uid, UID);
        assert_eq!(p.container, "nginx");
        assert_eq!(p.restart, 0);
        assert_eq!(p.rotation, Rotation::Current);
        assert_eq!(p.base_file_name(), "0.log");
        assert_eq!(
            p.intake_path(),
            format!("/var/log/pods/default_web-7d9f-abcde_{UID}/nginx")
        );
    }

    #[test]
    fn rotated_and_compressed_files_keep_the_base_name() {
        let p = parse(&format!(
            "kube-system_coredns-1_{UID}/coredns/12.log.20241118-085945"
        ))
        .unwrap();
        assert_eq!(p.restart, 12);
        assert_eq!(
            p.rotation,
            Rotation::Rotated {
                stamp: "20241118-085945".into()
            }
        );
        assert_eq!(p.base_file_name(), "12.log");
        let gz = parse(&format!("ns_pod_{UID}/c/1.log.20241118-085945.gz")).unwrap();
        assert!(gz.is_compressed() && gz.is_rotated());
        assert_eq!(gz.base_file_name(), "1.log");
    }

    #[test]
    fn anything_else_is_rejected() {
        for rel in [
            format!("ns_pod_{UID}/c/0.log.20241118-085945.tmp"),
            format!("ns_pod_{UID}/c/0.log.1"),
            format!("ns_pod_{UID}/c/x.log"),
            format!("ns_pod_{UID}/c/0.txt"),
            format!("ns_pod_{UID}/c/0.log/extra"),
            format!("ns_pod_{UID}/c"),
            format!("nspod{UID}/c/0.log"),
            format!("_pod_{UID}/c/0.log"),
            "ns_pod_/c/0.log".to_string(),
        ] {
            assert_eq!(parse(&rel), None, "{rel}");
        }
        assert_eq!(
            PodLogPath::parse(Path::new("/a"), Path::new("/b/ns_p_u/c/0.log")),
            None
        );
    }

    #[test]
    fn pod_dir_name_splits_on_first_and_last_underscore() {
        assert_eq!(parse_pod_dir_name("ns_pod_uid"), Some(("ns", "pod", "uid")));
        assert_eq!(
            parse_pod_dir_name("ns_odd_pod_uid"),
            Some(("ns", "odd_pod", "uid"))
        );
        assert_eq!(parse_pod_dir_name("ns_uid"), None);
    }
}
