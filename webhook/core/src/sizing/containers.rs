//! The containers of a pod spec as sizing sees them (app containers, init containers and
//! native sidecars), reading and writing their requests and limits, and the Pod's
//! effective totals as the scheduler, the LimitRanger and ResourceQuota count them.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use crate::quantity::{PerResource, Resource};
use crate::rules::Sizes;
use crate::sizing::field::Field;
use crate::sizing::resources::Resolved;

/// What a container is to the Pod's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `spec.containers`: runs for the Pod's life; totals add up.
    App,
    /// `spec.initContainers`: runs alone, before the app containers; totals take the max.
    Init,
    /// A native sidecar (`initContainers` with `restartPolicy: Always`): starts in init
    /// order and keeps running beside the app containers, so it adds up like them.
    Sidecar,
}

/// Where a container sits in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub init: bool,
    pub index: usize,
}

/// A container's declared request and limit of one resource, parsed once. Each side is
/// kept on its own: an unreadable request must not hide a readable limit (fuzz seed
/// 1592599136).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub request: Result<Option<u64>, String>,
    pub limit: Result<Option<u64>, String>,
}

impl Declared {
    fn read(c: &Value, r: Resource) -> Declared {
        Declared {
            request: read_side(c, "requests", r),
            limit: read_side(c, "limits", r),
        }
    }

    /// Both sides, or why one cannot be read.
    pub fn sizes(&self) -> Result<Sizes, String> {
        Ok(Sizes {
            request: self.request.clone()?,
            limit: self.limit.clone()?,
        })
    }

    /// The sides that can be read.
    fn readable(&self) -> Sizes {
        Sizes {
            request: self.request.as_ref().ok().copied().flatten(),
            limit: self.limit.as_ref().ok().copied().flatten(),
        }
    }
}

/// What [`Lists::write_back`] writes (see [`crate::sizing::written`]).
pub const WRITES: &[Field] = &[Field::Spec("containers"), Field::Spec("initContainers")];

/// Both container lists of a pod spec, borrowed from the object as received (a list is
/// copied only when the merge first writes to it), with every container's quantities
/// parsed once and kept in step with what the merge writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lists<'a> {
    app: Cow<'a, [Value]>,
    init: Cow<'a, [Value]>,
    /// In `entries` order: init containers, then app containers.
    declared: Vec<PerResource<Declared>>,
    /// (app, init): moved out of a pod spec by `take`, so `write_back` must return it.
    taken: [bool; 2],
}

fn list<'a>(spec: &'a Value, key: &str) -> Cow<'a, [Value]> {
    spec.get(key)
        .and_then(Value::as_array)
        .map_or(Cow::Borrowed(&[]), |v| Cow::Borrowed(v.as_slice()))
}

impl<'a> Lists<'a> {
    pub fn read(spec: &'a Value) -> Lists<'a> {
        Lists::new(list(spec, "containers"), list(spec, "initContainers"))
    }

    pub fn new(app: Cow<'a, [Value]>, init: Cow<'a, [Value]>) -> Lists<'a> {
        let declared = init
            .iter()
            .chain(app.iter())
            .map(|c| PerResource::from_fn(|r| Declared::read(c, r)))
            .collect();
        Lists {
            app,
            init,
            declared,
            taken: [false; 2],
        }
    }

    /// The lists of `spec`, a copy of the pod spec `before` was read from, moved out to
    /// be edited in place (no second copy), with `before`'s parsed quantities.
    /// `write_back` puts them back.
    pub fn take(spec: &mut Value, before: &Lists) -> Lists<'static> {
        let mut take = |key: &str| match spec.get_mut(key) {
            Some(v @ Value::Array(_)) => match v.take() {
                Value::Array(a) => Some(a),
                _ => None,
            },
            _ => None,
        };
        let app = take("containers");
        let init = take("initContainers");
        Lists {
            taken: [app.is_some(), init.is_some()],
            app: Cow::Owned(app.unwrap_or_default()),
            init: Cow::Owned(init.unwrap_or_default()),
            declared: before.declared.clone(),
        }
    }

    fn position(&self, slot: Slot) -> usize {
        if slot.init {
            slot.index
        } else {
            self.init.len() + slot.index
        }
    }

    /// The quantities a container declares (as the merge has left them so far).
    pub fn declared(&self, slot: Slot) -> &PerResource<Declared> {
        &self.declared[self.position(slot)]
    }

    /// Every container with its slot and role: init containers first, in start order.
    pub fn entries(&self) -> impl Iterator<Item = (Slot, Role, &Value)> {
        let init = self.init.iter().enumerate().map(|(index, c)| {
            let role = if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
                Role::Sidecar
            } else {
                Role::Init
            };
            (Slot { init: true, index }, role, c)
        });
        let app = self
            .app
            .iter()
            .enumerate()
            .map(|(index, c)| (Slot { init: false, index }, Role::App, c));
        init.chain(app)
    }

    fn get_mut(&mut self, slot: Slot) -> Option<&mut Value> {
        let list = if slot.init {
            &mut self.init
        } else {
            &mut self.app
        };
        if slot.index >= list.len() {
            return None;
        }
        list.to_mut().get_mut(slot.index)
    }

    /// Write the sides of `resolved` that differ from the template into a container.
    /// Returns whether anything was written.
    pub fn write(&mut self, slot: Slot, r: Resource, resolved: &Resolved, template: Sizes) -> bool {
        let Some(c) = self.get_mut(slot) else {
            return false;
        };
        if !write_resolved(c, r, resolved, template) {
            return false;
        }
        let pos = self.position(slot);
        self.declared[pos][r] = Declared {
            request: Ok(resolved.request.map(|s| s.value).or(template.request)),
            limit: Ok(resolved.limit.map(|s| s.value).or(template.limit)),
        };
        true
    }

    /// Put resource `r` of every container back as in `before` (the same lists).
    pub fn restore(&mut self, before: &Lists, r: Resource) {
        for (slot, _, old) in before.entries() {
            if let Some(new) = self.get_mut(slot) {
                restore_resource(new, old, r);
                let pos = self.position(slot);
                self.declared[pos][r] = before.declared[pos][r].clone();
            }
        }
    }

    /// A container by name (Knative's unnamed serving container is `user-container`).
    pub fn find(&self, name: &str, knative: bool) -> Option<Slot> {
        self.entries()
            .find(|(slot, _, c)| container_name(c, knative && !slot.init).as_deref() == Some(name))
            .map(|(slot, _, _)| slot)
    }

    /// Put the lists back into the pod spec: those taken from it, and those that differ
    /// from `before`. Returns whether one differs.
    pub fn write_back(self, before: &Lists, spec: &mut Value) -> bool {
        let mut changed = false;
        let lists = [
            (self.app, &before.app, "containers"),
            (self.init, &before.init, "initContainers"),
        ];
        for ((list, old, key), taken) in lists.into_iter().zip(self.taken) {
            let differs = *list != **old;
            changed |= differs;
            if taken || differs {
                if let Some(m) = spec.as_object_mut() {
                    m.insert(key.into(), Value::Array(list.into_owned()));
                }
            }
        }
        changed
    }

    /// The Pod's effective request and limit of one resource: the larger of the app
    /// containers plus sidecars, and of each init container plus the sidecars started
    /// before it. The same arithmetic as the scheduler, the LimitRanger and ResourceQuota
    /// (without sidecars, as in v1.20: the max of the init containers vs the app sum). A
    /// missing request counts as the limit (the apiserver defaults it so).
    pub fn effective(&self, r: Resource) -> Totals {
        self.effective_filled(r, Sizes::default())
    }

    /// `effective`, with `fill` standing in for a side a container leaves empty (the
    /// LimitRanger's container defaults, which its Pod-level sums include).
    pub fn effective_filled(&self, r: Resource, fill: Sizes) -> Totals {
        let side = |pick: &dyn Fn(Sizes) -> u64| {
            let mut sidecars = 0u64;
            let mut init_peak = 0u64;
            let mut app = 0u64;
            for ((_, role, _), d) in self.entries().zip(&self.declared) {
                let v = pick(d[r].readable());
                match role {
                    Role::App => app = app.saturating_add(v),
                    Role::Sidecar => {
                        sidecars = sidecars.saturating_add(v);
                        init_peak = init_peak.max(sidecars);
                    }
                    Role::Init => init_peak = init_peak.max(v.saturating_add(sidecars)),
                }
            }
            app.saturating_add(sidecars).max(init_peak)
        };
        Totals {
            request: side(&|s| s.request.or(s.limit).or(fill.request).unwrap_or(0)),
            limit: side(&|s| s.limit.or(fill.limit).unwrap_or(0)),
        }
    }

    /// Whether a container's quantity of `r` cannot be read (then Pod sums are unknown).
    pub fn unreadable(&self, r: Resource) -> bool {
        self.declared
            .iter()
            .any(|d| d[r].request.is_err() || d[r].limit.is_err())
    }
}

/// A Pod's effective request and limit of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub request: u64,
    pub limit: u64,
}

pub fn container_name(c: &Value, knative: bool) -> Option<String> {
    match c.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Some(n.to_string()),
        // Knative names an unnamed serving container `user-container`.
        _ if knative => Some("user-container".into()),
        _ => None,
    }
}

fn read_side(c: &Value, side: &str, r: Resource) -> Result<Option<u64>, String> {
    // Plain lookups: a JSON pointer here (format, then unescape every token) was the
    // largest cost of a review in the profile.
    match c
        .get("resources")
        .and_then(|v| v.get(side))
        .and_then(|v| v.get(r.as_str()))
    {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => r.parse(s).map(Some).map_err(|e| e.to_string()),
        Some(Value::Number(n)) => r.parse(&n.to_string()).map(Some).map_err(|e| e.to_string()),
        Some(other) => Err(format!("invalid quantity {other}")),
    }
}

pub fn ensure_object<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

fn write_side(c: &mut Value, side: &str, r: Resource, v: u64) {
    if let Some(m) = c.as_object_mut() {
        if let Some(res) = ensure_object(m, "resources") {
            if let Some(s) = ensure_object(res, side) {
                s.insert(r.as_str().to_string(), json!(r.format(v)));
            }
        }
    }
}

/// Write the sides that differ from the template. Returns whether anything was written.
fn write_resolved(c: &mut Value, r: Resource, resolved: &Resolved, template: Sizes) -> bool {
    let mut wrote = false;
    if let Some(s) = resolved.request {
        if Some(s.value) != template.request {
            write_side(c, "requests", r, s.value);
            wrote = true;
        }
    }
    if let Some(s) = resolved.limit {
        if Some(s.value) != template.limit {
            write_side(c, "limits", r, s.value);
            wrote = true;
        }
    }
    wrote
}

/// Put one resource of a container back as it was (maps sizing created and left empty
/// go too).
fn restore_resource(new: &mut Value, old: &Value, r: Resource) {
    let empty = |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(Map::is_empty);
    for side in ["requests", "limits"] {
        let ptr = format!("/resources/{side}");
        let old_side = old.pointer(&ptr);
        let old_v = old_side.and_then(|m| m.get(r.as_str())).cloned();
        if let Some(m) = new.pointer_mut(&ptr).and_then(Value::as_object_mut) {
            match old_v {
                Some(v) => {
                    m.insert(r.as_str().into(), v);
                }
                None => {
                    m.remove(r.as_str());
                }
            }
        }
        if old_side.is_none() && empty(new.pointer(&ptr)) {
            if let Some(res) = new.get_mut("resources").and_then(Value::as_object_mut) {
                res.remove(side);
            }
        }
    }
    if old.get("resources").is_none() && empty(new.get("resources")) {
        if let Some(c) = new.as_object_mut() {
            c.remove("resources");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn c(name: &str, request: &str, limit: &str) -> Value {
        json!({"name": name, "resources": {"requests": {"memory": request}, "limits": {"memory": limit}}})
    }
    fn sidecar(name: &str, request: &str, limit: &str) -> Value {
        let mut v = c(name, request, limit);
        v["restartPolicy"] = json!("Always");
        v
    }

    const MI: u64 = 1 << 20;

    #[rstest]
    // app sum 300/600 beats the init container's 200/800 on requests, not on limits
    #[case::init_vs_app(
        vec![c("init", "200Mi", "800Mi")],
        vec![c("a", "100Mi", "200Mi"), c("b", "200Mi", "400Mi")],
        (300, 800))]
    // a big init container sets the request
    #[case::big_init(
        vec![c("migrate", "1Gi", "1Gi")],
        vec![c("a", "100Mi", "200Mi")],
        (1024, 1024))]
    // sidecars add to the app containers...
    #[case::sidecar_adds(
        vec![sidecar("proxy", "50Mi", "100Mi")],
        vec![c("a", "100Mi", "200Mi")],
        (150, 300))]
    // ...and to the init containers that start after them, not before
    #[case::sidecar_before_init(
        vec![sidecar("proxy", "50Mi", "100Mi"), c("init", "400Mi", "400Mi")],
        vec![c("a", "100Mi", "200Mi")],
        (450, 500))]
    #[case::init_before_sidecar(
        vec![c("init", "400Mi", "400Mi"), sidecar("proxy", "50Mi", "100Mi")],
        vec![c("a", "100Mi", "200Mi")],
        (400, 400))]
    // a missing request counts as the limit (apiserver defaulting)
    #[case::request_from_limit(
        vec![],
        vec![json!({"name": "a", "resources": {"limits": {"memory": "64Mi"}}})],
        (64, 64))]
    fn effective_totals(
        #[case] init: Vec<Value>,
        #[case] app: Vec<Value>,
        #[case] want_mi: (u64, u64),
    ) {
        let l = Lists::new(app.into(), init.into());
        assert_eq!(
            l.effective(Resource::Memory),
            Totals {
                request: want_mi.0 * MI,
                limit: want_mi.1 * MI
            }
        );
    }

    /// Lists moved out of a pod spec go back as they were when nothing was written; a
    /// `null` list is not taken, so it does not come back as `[]`.
    #[rstest]
    #[case::both(json!({"containers": [c("a", "1Mi", "2Mi")], "initContainers": [c("i", "1Mi", "1Mi")]}))]
    #[case::init_null(json!({"containers": [c("a", "1Mi", "2Mi")], "initContainers": null}))]
    #[case::init_absent(json!({"containers": [c("a", "1Mi", "2Mi")], "volumes": []}))]
    fn take_and_write_back_unchanged(#[case] spec: Value) {
        let received = spec.clone();
        let before = Lists::read(&received);
        let mut out = spec;
        let after = Lists::take(&mut out, &before);
        assert!(!after.write_back(&before, &mut out));
        assert_eq!(out, received);
    }

    #[test]
    fn roles_follow_restart_policy() {
        let l = Lists::new(
            vec![c("a", "1Mi", "1Mi")].into(),
            vec![c("i", "1Mi", "1Mi"), sidecar("s", "1Mi", "1Mi")].into(),
        );
        let roles: Vec<Role> = l.entries().map(|(_, r, _)| r).collect();
        assert_eq!(roles, vec![Role::Init, Role::Sidecar, Role::App]);
        assert!(l.find("s", false).is_some());
    }
}
