//! A test Kubernetes API server on 127.0.0.1 that speaks the real
//! discovery, list and watch protocol, for watchd's tests and for trying
//! watchd by hand (`test-apiserver`). Checked against kubectl 1.32 and kube 5.
//!
//! # Implemented
//! - Discovery: `/version` (v1.32.4), `/api`, `/api/v1`, `/apis`,
//!   `/apis/<group>`, `/apis/<group>/<version>` as plain JSON, and
//!   aggregated discovery (`apidiscovery.k8s.io/v2`, one request for `/api`
//!   and one for `/apis`) when the `Accept` header asks for it, as kubectl
//!   and kube's `Discovery::run_aggregated` do. Built-in resources:
//!   pods, services, namespaces, nodes, serviceaccounts, configmaps,
//!   secrets, core/v1 events, deployments, replicasets, daemonsets,
//!   statefulsets, ingresses, roles, rolebindings, clusterroles,
//!   clusterrolebindings, storageclasses, leases, customresourcedefinitions,
//!   each at `v1`, plus `<plural>/status` entries where the real server has
//!   them.
//! - CRDs: storing one (through [`ApiServer::create`] or REST) marks it
//!   `Established` (storage version in `status.storedVersions`) and serves
//!   its resource at every served version, in Kubernetes' version priority
//!   order (`v2` > `v1` > `v1beta1` > `v1alpha1`); objects are stored once and returned with the
//!   requested version's `apiVersion` (no conversion). Deleting the CRD
//!   deletes its objects (DELETED events), ends their watches, and removes
//!   the resource from discovery.
//! - Reads: get; list cluster-wide or in a namespace, in key order, with
//!   `kind: <Kind>List`, `metadata.resourceVersion`, and `limit`/`continue`
//!   paging where every page comes from the first page's snapshot (tokens
//!   older than [`ApiServer::compact`] get 410 Expired). List items of
//!   built-in resources carry no `apiVersion`/`kind`; items of custom
//!   resources do (the real server serves those unstructured). Empty query
//!   parameters (`?&limit=500`) are ignored. The `resourceVersion` of a list
//!   is ignored: lists are always current.
//! - Selectors: label selectors (`=`, `==`, `!=`, exists, `!`, `in`,
//!   `notin`); field selectors on `metadata.name` and `metadata.namespace`
//!   only (others get 400). A watch filters each event by the object it
//!   carries (an object leaving the selection sends no DELETED).
//! - Watch (`watch=1|true`): 200 with a chunked body, one event a line and
//!   a chunk each. `resourceVersion` unset or `"0"`: ADDED for the current
//!   objects, then changes; `resourceVersion=N`: only events newer than N;
//!   N older than the compaction point: 200, then one `ERROR` event with a
//!   410 `Expired` Status, then the end of the body. `allowWatchBookmarks`:
//!   a BOOKMARK every [`ApiServer::set_bookmark_interval`] (5 s by default)
//!   and one just before `timeoutSeconds` ends the stream; never unasked.
//!   `sendInitialEvents=true`: ADDED for current objects then a BOOKMARK
//!   annotated `k8s.io/initial-events-end`.
//! - Writes through REST: POST (create, `generateName`), PUT (replace,
//!   409 on a stale `resourceVersion`), PATCH (`merge-patch+json`,
//!   `json-patch+json`, and `strategic-merge-patch+json` approximated:
//!   lists of objects with a `name` merge by name, other lists replace),
//!   DELETE (immediate; returns the object). The server sets `uid`,
//!   `creationTimestamp`, `generation` (bumped on `spec` changes) and
//!   `resourceVersion` (one global counter).
//! - Errors: a `Status` body with the real server's fields in its order
//!   (`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
//!   "message":...,"reason":...,"details":{"name","group","kind"},"code":...}`),
//!   e.g. 404 `NotFound` `leases.coordination.k8s.io "x" not found`, 409
//!   `AlreadyExists` and `Conflict` (`Operation cannot be fulfilled on ...:
//!   the object has been modified; ...`), 422 `Invalid` with
//!   `details.causes`, 400 `BadRequest`; a path that names no resource:
//!   `the server could not find the requested resource`, `"details":{}`.
//! - Leases (`coordination.k8s.io/v1`), typed as the real server types
//!   them, for leader election: the body is decoded first, and a
//!   `spec.acquireTime`/`renewTime` that is not Go's RFC3339Micro (RFC 3339
//!   with exactly six fractional digits, `Z` or a `±hh:mm` offset) or a
//!   `spec` field of the wrong JSON type (`holderIdentity` a string,
//!   `leaseDurationSeconds`/`leaseTransitions` int32) gets 400 BadRequest
//!   `Lease in version "v1" cannot be handled as a Lease: parsing time ...`
//!   (a PATCH whose result does not decode: 422, as the real patch handler
//!   answers); MicroTimes are served back in UTC (`.000000Z`), a missing
//!   `spec` as `{}`. A replace must carry `metadata.resourceVersion` (422
//!   `leases.coordination.k8s.io "x" is invalid: metadata.resourceVersion:
//!   Invalid value: 0x0: must be specified for an update`); a PUT of a
//!   missing Lease creates it (201); `leaseDurationSeconds` <= 0 and
//!   `leaseTransitions` < 0 are 422 `Lease.coordination.k8s.io "x" is
//!   invalid: ...`.
//! - Test controls on [`ApiServer`]: compact, end watches cleanly or break
//!   their connections, freeze watch delivery, forbid a resource (403
//!   Status for get, list and watch), cut a Lease holder off as a network
//!   partition would (its Lease writes get no answer:
//!   [`ApiServer::refuse_lease_writes_from`]), and a log of every request.
//!
//! # Not implemented
//! Authentication and authorization (any or no token is accepted), YAML,
//! protobuf and Table responses (kubectl prints plain lists itself),
//! server-side apply, `dryRun`, `deletecollection`, graceful deletion and
//! finalizers, namespace existence checks, schema validation and defaulting
//! other than the Leases' above (`fieldValidation` is accepted and ignored;
//! unknown fields are kept), metadata validation (names, labels), OpenAPI
//! schemas (`/openapi/v3` only declares the PATCH operations, which lets
//! kubectl apply leave validation to the server; `/openapi/v2` is 404),
//! the UID precondition of a replace, subresources other than
//! `status` (which reads and writes the whole object), the deprecated
//! `/watch/` paths, HTTP/2, TLS. History is kept until [`ApiServer::compact`].
//! A watch whose client vanished is noticed at its next write.

mod catalog;
mod discovery;
mod fixtures;
mod http;
mod lease;
mod meta;
mod microtime;
mod openapi;
mod patch;
mod routes;
mod select;
mod server;
mod status;
mod store;
mod watch;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use catalog::ResourceType;
use server::Server;
use status::ApiError;

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path, e.g. `/api/v1/namespaces/ns1/pods`.
    pub path: String,
    /// The raw query string, without `?` (empty if none).
    pub query: String,
    /// The HTTP status answered (200 for watches, even expired ones); 0
    /// for a Lease write left unanswered
    /// ([`ApiServer::refuse_lease_writes_from`]).
    pub status: u16,
}

impl ApiRequest {
    /// The decoded value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| http::percent_decode(k) == name)
            .map(|(_, v)| http::percent_decode(v))
    }

    /// Whether this was a watch (`watch=1` or `watch=true`).
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("1" | "true"))
    }
}

/// A running test API server. It starts empty (no namespaces, no objects)
/// and stops when dropped, closing every connection.
///
/// The helpers that write (`create`, `replace`, ...) panic with the
/// server's error message when the real server would refuse the write:
/// they are for setting up tests.
pub struct ApiServer {
    server: Server,
}

impl ApiServer {
    /// Starts a server on 127.0.0.1 with a port of its own.
    pub fn start() -> ApiServer {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("binding 127.0.0.1:0 for the test API server")
    }

    /// Starts a server on `addr` (port 0 picks a free port).
    pub fn start_on(addr: SocketAddr) -> io::Result<ApiServer> {
        Ok(ApiServer {
            server: Server::start(addr)?,
        })
    }

    fn shared(&self) -> &Arc<server::Shared> {
        &self.server.shared
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared().addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Writes a kubeconfig whose current context points at this server
    /// (namespace `default`, a made-up bearer token), for `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: &Path) {
        let config = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {}
contexts:
- name: test
  context:
    cluster: test
    namespace: default
    user: test
current-context: test
users:
- name: test
  user:
    token: made-up-test-token
",
            self.url()
        );
        std::fs::write(path, config)
            .unwrap_or_else(|e| panic!("writing kubeconfig {}: {e}", path.display()));
    }

    /// Runs `f` on the store with the resource of `api_version`/`kind`,
    /// panicking with the server's message on an error.
    fn write<T>(
        &self,
        api_version: &str,
        kind: &str,
        f: impl FnOnce(&mut store::Store, &ResourceType) -> Result<T, ApiError>,
    ) -> T {
        let mut store = self.shared().store.lock().expect("store lock");
        let t = store
            .catalog
            .by_kind(api_version, kind)
            .cloned()
            .unwrap_or_else(|| panic!("the test API server serves no {kind} at {api_version}"));
        f(&mut store, &t).unwrap_or_else(|e| panic!("test API server: {} ({})", e.message, e.code))
    }

    /// Stores a new object of its `apiVersion`/`kind` (a namespaced one
    /// without `metadata.namespace` goes to `default`). Assigns `uid` (if
    /// missing), `resourceVersion`, `creationTimestamp`, `generation`.
    /// Returns the stored object. Panics if it exists.
    pub fn create(&self, obj: Value) -> Value {
        let (api_version, kind) = type_of(&obj);
        self.write(&api_version, &kind, |store, t| {
            store.create(t, None, obj).map(|o| (*o).clone())
        })
    }

    /// Replaces an object (matched by kind, namespace and name); a
    /// non-empty `metadata.resourceVersion` must be the current one (a
    /// Lease must have one). Returns the stored object. Panics if it does
    /// not exist.
    pub fn replace(&self, obj: Value) -> Value {
        let (api_version, kind) = type_of(&obj);
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .expect("replace: the object needs metadata.name")
            .to_string();
        self.write(&api_version, &kind, |store, t| {
            store.replace(t, None, &name, obj).map(|o| (*o).clone())
        })
    }

    /// Applies a JSON merge patch (RFC 7386) to an object; returns it.
    pub fn patch_merge(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Value {
        self.write(api_version, kind, |store, t| {
            store
                .patch(t, ns, name, |obj| {
                    patch::merge_patch(obj, &patch);
                    Ok(())
                })
                .map(|o| (*o).clone())
        })
    }

    /// Deletes an object (at once: no graceful deletion); returns it as
    /// deleted. Deleting a CRD deletes its objects too.
    pub fn delete(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Value {
        self.write(api_version, kind, |store, t| {
            store.delete(t, ns, name).map(|o| (*o).clone())
        })
    }

    /// The stored object, if any (with `apiVersion` and `kind`).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = self.shared().store.lock().expect("store lock");
        let t = store.catalog.by_kind(api_version, kind)?;
        let obj = store.get(t, ns, name).ok()?;
        Some(routes::present(
            t,
            catalog::split_api_version(api_version).1,
            &obj,
        ))
    }

    /// The resourceVersion of the last write.
    pub fn resource_version(&self) -> u64 {
        self.shared().store.lock().expect("store lock").rv()
    }

    /// Forgets the event history up to now: a watch from an older
    /// resourceVersion gets 410 Expired (and so must relist), as do
    /// continue tokens of lists taken before. Watches from now on work.
    pub fn compact(&self) {
        self.shared().store.lock().expect("store lock").compact();
    }

    /// Ends every open watch stream cleanly (the final chunk, as at a
    /// `timeoutSeconds`; the connection stays open for further requests).
    /// Clients re-watch from the last resourceVersion they saw.
    pub fn drop_watches(&self) {
        self.shared()
            .store
            .lock()
            .expect("store lock")
            .drop_watches(false);
    }

    /// Closes the connection of every open watch in the middle of its
    /// stream (no final chunk), as a crashed server or a broken network
    /// does: clients see an incomplete body, then re-watch.
    pub fn break_watch_connections(&self) {
        self.shared()
            .store
            .lock()
            .expect("store lock")
            .drop_watches(true);
    }

    /// While frozen, writes are not delivered to watch streams that are
    /// open at the time of the write, not even later: for those streams the
    /// events are lost, as if the connection hung. Open streams send no
    /// BOOKMARKs while frozen, but still end at their `timeoutSeconds`.
    /// Watches started later (even while frozen) get their backlog from
    /// the history as usual, and then live events only once unfrozen.
    /// Unfreezing resumes delivery of new writes to all open streams.
    /// The usual test: freeze, change things, compact, drop watches: the
    /// client's re-watch gets 410 and it must relist to see the changes.
    pub fn freeze_watches(&self, frozen: bool) {
        self.shared().store.lock().expect("store lock").frozen = frozen;
    }

    /// Makes get, list and watch of `resource` (kubectl's `plural[.group]`
    /// form: `pods`, `deployments.apps`, `widgets.example.com`) answer 403
    /// Forbidden with a `Status`, or allows them again. Writes stay allowed.
    pub fn forbid(&self, resource: &str, forbidden: bool) {
        let mut set = self.shared().forbidden.lock().expect("forbidden lock");
        if forbidden {
            set.insert(resource.to_string());
        } else {
            set.remove(resource);
        }
    }

    /// Cuts Lease holder `holder` off from the server, as a network
    /// partition would: from now on every create, replace or patch (POST,
    /// PUT, PATCH) of a Lease that would leave `spec.holderIdentity` =
    /// `holder` (a renewal, or a take-over by it), or that clears the holder
    /// of a Lease `holder` holds (its release), gets no answer at all. The
    /// server reads the request, does not apply it, and keeps the connection
    /// open and silent until the client gives up (its timeout) and closes
    /// it, or until [`ApiServer::allow_lease_writes_from`], which closes it
    /// without an answer. So the client sees what a black-holed request
    /// looks like, a timeout, not a refusal it could act on: the leader must
    /// notice by its own renew deadline that it can no longer renew, and step
    /// down. Each such request is logged with status 0 in
    /// [`ApiServer::requests`].
    ///
    /// The server tells clients apart only by the holder named in a Lease
    /// body, so everything else the partitioned client sends (reads of the
    /// Lease, watches, writes of other objects) still works, as if only its
    /// writes were lost. Writes through this `ApiServer`'s own helpers
    /// (`create`, `replace`, ...) are the test's own and always go through.
    pub fn refuse_lease_writes_from(&self, holder: &str) {
        self.shared()
            .partition
            .lock()
            .expect("partition lock")
            .refused
            .insert(holder.to_string());
    }

    /// Heals the partition of [`ApiServer::refuse_lease_writes_from`]:
    /// `holder`'s Lease writes are served again. Its writes still waiting
    /// for an answer are never applied: their connections are closed now,
    /// without an answer.
    pub fn allow_lease_writes_from(&self, holder: &str) {
        self.shared()
            .partition
            .lock()
            .expect("partition lock")
            .allow(holder);
    }

    /// Holds the next `n` Lease writes (creates and replaces through REST)
    /// until all `n` have arrived (at most 10 s), then serves them in
    /// turn: candidates that read the same Lease (or none) and write
    /// together race for certain, and all but one get a 409, however the
    /// machine schedules them.
    pub fn gather_lease_writes(&self, n: usize) {
        let (gate, _) = &self.shared().lease_gate;
        let mut gate = gate.lock().expect("lease gate lock");
        gate.expected = n;
        gate.arrived = 0;
    }

    /// The Lease `ns/name` as stored (`coordination.k8s.io/v1`), if any.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.get("coordination.k8s.io/v1", "Lease", Some(ns), name)
    }

    /// How often watches that asked for bookmarks get one (default 5 s).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared().set_bookmark_interval(every);
    }

    /// How many watch streams are open right now.
    pub fn open_watches(&self) -> usize {
        self.shared()
            .store
            .lock()
            .expect("store lock")
            .open_watches()
    }

    /// Every request answered so far, in order (a watch is logged when it
    /// starts).
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared()
            .requests
            .lock()
            .expect("requests lock")
            .clone()
    }

    /// Polls `cond` every 5 ms until it holds (`true`) or `timeout` passes
    /// (`false`).
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&ApiServer) -> bool) -> bool {
        crate::wait::poll_until(timeout, || cond(self))
    }

    /// Loads the `json` object of every `apply`/`initapply` record file
    /// (`{"event_type", "json"}`) in `dir`, in file name order: a new object
    /// is created (with a fresh uid), a known one replaced. For a kind the
    /// server does not serve, a CRD is created first (plural = lowercase
    /// kind + "s"). Returns how many records were loaded.
    pub fn load_fixtures(&self, dir: &Path) -> io::Result<usize> {
        fixtures::load(self, dir)
    }
}

/// `apiVersion` and `kind` of an object given to a helper.
fn type_of(obj: &Value) -> (String, String) {
    let field = |name: &str| {
        obj.get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the object needs {name}: {obj}"))
            .to_string()
    };
    (field("apiVersion"), field("kind"))
}
