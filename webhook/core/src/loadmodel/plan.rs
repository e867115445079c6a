//! Capacity and cost for a declared load: replicas, per-pod request/limit, total
//! memory, nodes of a given size and the cost of the run. Pure arithmetic over the
//! same prediction admission uses, so the plan matches what pods will get.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::loadmodel::annotation::Load;
use crate::loadmodel::model::{sizes, Chosen};
use crate::quantity::{format_bytes, GI};
use crate::rules::Rules;

/// What to plan for one workload.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// `namespace/Kind/name`, for the output.
    pub workload: String,
    /// container -> the model in use.
    pub models: &'a BTreeMap<String, Chosen>,
    pub headroom: f64,
    pub rules: &'a Rules,
    /// Total load of the run.
    pub load: &'a Load,
    /// Most load one pod may carry, per unit (sets the replica count).
    pub per_pod: &'a Load,
    pub duration_hours: f64,
    pub price_per_gib_hour: Option<f64>,
    /// Allocatable memory of one node (bytes).
    pub node_memory: Option<u64>,
}

/// One container's share of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPlan {
    pub name: String,
    /// constant, declared or fitted.
    pub model: String,
    /// Why fitted coefficients were not used, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub predicted_bytes: u64,
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// The plan for one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPlan {
    pub workload: String,
    pub replicas: u64,
    /// Load each pod is sized for (the total divided over replicas, rounded up).
    pub load_per_pod: Load,
    pub containers: Vec<ContainerPlan>,
    pub pod_request: String,
    pub pod_limit: Option<String>,
    pub total_request: String,
    pub total_limit: Option<String>,
    pub total_request_gib: f64,
    /// Pods of this workload that fit one node by memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_per_node: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
    /// Reserved memory × duration.
    pub gib_hours: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Units any of the models use.
pub fn used_units(models: &BTreeMap<String, Chosen>) -> Vec<&str> {
    let mut u: Vec<&str> = models
        .values()
        .flat_map(|c| c.model.coefficients.keys().map(String::as_str))
        .collect();
    u.sort_unstable();
    u.dedup();
    u
}

/// Replicas: the most any per-pod cap asks for (ceil(total / cap)), at least 1.
pub fn replicas(load: &Load, per_pod: &Load, units: &[&str]) -> u64 {
    units
        .iter()
        .filter_map(|u| {
            let cap = per_pod.get(*u).copied().filter(|c| *c > 0.0)?;
            let total = load.get(*u).copied().unwrap_or(0.0);
            Some((total / cap).ceil() as u64)
        })
        .fold(1, u64::max)
}

/// Plan one workload.
pub fn plan(input: &PlanInput) -> WorkloadPlan {
    let mut warnings = Vec::new();
    let units = used_units(input.models);
    let replicas = replicas(input.load, input.per_pod, &units);
    let load_per_pod: Load = input
        .load
        .iter()
        .filter(|(u, _)| units.contains(&u.as_str()))
        .map(|(u, t)| (u.clone(), (t / replicas as f64).ceil()))
        .collect();
    let mut containers = Vec::new();
    let (mut pod_req, mut pod_lim, mut all_limits) = (0u64, 0u64, true);
    for (name, chosen) in input.models {
        let predicted = chosen.model.predict(&load_per_pod);
        let s = sizes(input.rules, input.headroom, predicted);
        let req = s.request.unwrap_or(0);
        pod_req += req;
        match s.limit {
            Some(l) => pod_lim += l,
            None => all_limits = false,
        }
        containers.push(ContainerPlan {
            name: name.clone(),
            model: chosen.origin.as_str().to_string(),
            note: chosen.note.clone(),
            predicted_bytes: predicted.ceil().max(0.0) as u64,
            request: format_bytes(req),
            limit: s.limit.map(format_bytes),
        });
    }
    let total_req = pod_req.saturating_mul(replicas);
    let total_lim = pod_lim.saturating_mul(replicas);
    let total_request_gib = total_req as f64 / GI as f64;
    let (pods_per_node, nodes) = match input.node_memory {
        Some(node) if pod_req > 0 => {
            let per = node / pod_req;
            if per == 0 {
                warnings.push(format!(
                    "a pod ({}) does not fit a node of {}",
                    format_bytes(pod_req),
                    format_bytes(node)
                ));
                (Some(0), None)
            } else {
                (Some(per), Some(replicas.div_ceil(per)))
            }
        }
        _ => (None, None),
    };
    let gib_hours = total_request_gib * input.duration_hours;
    WorkloadPlan {
        workload: input.workload.clone(),
        replicas,
        load_per_pod,
        containers,
        pod_request: format_bytes(pod_req),
        pod_limit: all_limits.then(|| format_bytes(pod_lim)),
        total_request: format_bytes(total_req),
        total_limit: all_limits.then(|| format_bytes(total_lim)),
        total_request_gib,
        pods_per_node,
        nodes,
        gib_hours,
        cost: input.price_per_gib_hour.map(|p| gib_hours * p),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadmodel::model::{Linear, Origin};
    use crate::quantity::MI;

    fn chosen(base_mi: f64, coef: &[(&str, f64)]) -> Chosen {
        Chosen {
            model: Linear {
                base: base_mi * MI as f64,
                coefficients: coef
                    .iter()
                    .map(|(u, c)| (u.to_string(), c * MI as f64))
                    .collect(),
            },
            origin: Origin::Declared,
            note: None,
        }
    }

    #[test]
    fn replicas_from_caps() {
        let load: Load = [("a".into(), 120.0), ("b".into(), 4.0)].into();
        let caps: Load = [("a".into(), 25.0), ("c".into(), 1.0)].into();
        assert_eq!(replicas(&load, &caps, &["a", "b"]), 5);
        assert_eq!(replicas(&load, &Load::new(), &["a", "b"]), 1);
        assert_eq!(replicas(&Load::new(), &caps, &["a"]), 1);
    }

    #[test]
    fn router_plan() {
        // 32Mi + 2.5Mi × 100 connections = 282Mi; × 1.2 = 338.4Mi -> 352Mi (16Mi steps);
        // limit 352 × 1.5 = 528Mi. Two pods of 50 connections each with a cap of 50:
        // 32 + 125 = 157Mi × 1.2 = 188.4 -> 192Mi, limit 288Mi.
        let models: BTreeMap<String, Chosen> =
            [("router".to_string(), chosen(32.0, &[("connections", 2.5)]))].into();
        let rules = Rules::default();
        let load: Load = [("connections".into(), 100.0)].into();
        let caps: Load = [("connections".into(), 50.0)].into();
        let p = plan(&PlanInput {
            workload: "x/Deployment/router".into(),
            models: &models,
            headroom: 1.2,
            rules: &rules,
            load: &load,
            per_pod: &caps,
            duration_hours: 2.0,
            price_per_gib_hour: Some(0.5),
            node_memory: Some(256 * MI),
        });
        assert_eq!(p.replicas, 2);
        assert_eq!(p.containers[0].request, "192Mi");
        assert_eq!(p.containers[0].limit.as_deref(), Some("288Mi"));
        assert_eq!(p.total_request, "384Mi");
        // 256Mi nodes hold one 192Mi pod each.
        assert_eq!((p.pods_per_node, p.nodes), (Some(1), Some(2)));
        assert_eq!(p.gib_hours, 0.375 * 2.0);
        assert_eq!(p.cost, Some(0.375));
    }

    #[test]
    fn oversized_pod_is_reported() {
        let models: BTreeMap<String, Chosen> = [("a".to_string(), chosen(1000.0, &[]))].into();
        let p = plan(&PlanInput {
            workload: "w".into(),
            models: &models,
            headroom: 1.0,
            rules: &Rules::default(),
            load: &[("zzz".to_string(), 1.0)].into(),
            per_pod: &Load::new(),
            duration_hours: 1.0,
            price_per_gib_hour: None,
            node_memory: Some(512 * MI),
        });
        assert_eq!(p.nodes, None);
        // 1000Mi rounds up to 1008Mi (16Mi steps).
        assert_eq!(p.warnings, ["a pod (1008Mi) does not fit a node of 512Mi"]);
        assert_eq!(p.cost, None);
    }
}
