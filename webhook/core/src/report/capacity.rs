//! Nodes and money: node shapes (`--node-shape cpu=4,memory=16Gi` or the Node list), how
//! many whole nodes a set of requests needs, and monthly cost from the prices a user gives.

use serde::Serialize;

use crate::quantity::{parse_bytes, parse_millicores, GI};

/// Hours in the month the prices are projected over (365 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// One kind of node: what a node of it can hold (allocatable) and how many the cluster has.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeShape {
    /// The instance type, or `<cpu>/<memory>` when there is none.
    pub name: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Nodes of this shape in the cluster (0 when given by hand without `count=`).
    pub count: u32,
}

impl NodeShape {
    /// Parse `cpu=4,memory=16Gi[,name=m5.xlarge][,count=3]` (the `--node-shape` flag).
    pub fn parse(s: &str) -> Result<NodeShape, String> {
        let (mut cpu, mut mem, mut name, mut count) = (None, None, None, 0u32);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=VALUE"))?;
            match k.trim() {
                "cpu" => cpu = Some(parse_millicores(v.trim()).map_err(|e| e.to_string())?),
                "memory" => mem = Some(parse_bytes(v.trim()).map_err(|e| e.to_string())?),
                "name" => name = Some(v.trim().to_string()),
                "count" => {
                    count = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("count {v:?}: expected a whole number"))?
                }
                other => return Err(format!("unknown key {other:?} (cpu, memory, name, count)")),
            }
        }
        let (Some(cpu_millis), Some(memory_bytes)) = (cpu, mem) else {
            return Err(format!("{s:?}: needs cpu= and memory="));
        };
        if cpu_millis == 0 || memory_bytes == 0 {
            return Err(format!("{s:?}: cpu and memory must be above zero"));
        }
        Ok(NodeShape {
            name: name.unwrap_or_else(|| shape_name(cpu_millis, memory_bytes)),
            cpu_millis,
            memory_bytes,
            count,
        })
    }
}

/// `4cpu/16Gi`: the name of a shape without an instance type.
pub fn shape_name(cpu_millis: u64, memory_bytes: u64) -> String {
    format!(
        "{}cpu/{}",
        crate::quantity::format_millicores(cpu_millis),
        crate::quantity::format_bytes(memory_bytes)
    )
}

/// Group nodes (instance type or "", allocatable millicores, allocatable bytes) into
/// shapes, most numerous first.
pub fn shapes_of(nodes: &[(String, u64, u64)]) -> Vec<NodeShape> {
    let mut out: Vec<NodeShape> = Vec::new();
    for (ty, cpu, mem) in nodes.iter().filter(|n| n.1 > 0 && n.2 > 0) {
        let name = if ty.is_empty() {
            shape_name(*cpu, *mem)
        } else {
            ty.clone()
        };
        match out
            .iter_mut()
            .find(|s| s.name == name && s.cpu_millis == *cpu && s.memory_bytes == *mem)
        {
            Some(s) => s.count += 1,
            None => out.push(NodeShape {
                name,
                cpu_millis: *cpu,
                memory_bytes: *mem,
                count: 1,
            }),
        }
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    out
}

/// The shapes of the cluster's schedulable nodes (grouped by instance type, as
/// [`shapes_of`]): what `report` reads from the Node list and `/report` from the node watch.
pub fn shapes_of_nodes(nodes: &[crate::cluster::NodeInfo]) -> Vec<NodeShape> {
    use crate::quantity::Resource;
    let rows: Vec<(String, u64, u64)> = nodes
        .iter()
        .filter(|n| !n.unschedulable)
        .map(|n| {
            let ty = n
                .labels
                .get("node.kubernetes.io/instance-type")
                .or_else(|| n.labels.get("beta.kubernetes.io/instance-type"))
                .cloned()
                .unwrap_or_default();
            (
                ty,
                n.allocatable[Resource::Cpu],
                n.allocatable[Resource::Memory],
            )
        })
        .collect();
    shapes_of(&rows)
}

/// Whole nodes of `shape` that requests of `memory` bytes and `cpu_millis` need: the larger
/// of the two resources' counts (a node is full when either runs out).
pub fn nodes_needed(shape: &NodeShape, memory: u64, cpu_millis: u64) -> u64 {
    memory
        .div_ceil(shape.memory_bytes)
        .max(cpu_millis.div_ceil(shape.cpu_millis))
}

/// Prices the user gives; each one that is set gives its own projection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// Per GiB of memory request and hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gib_hour: Option<f64>,
    /// Per core of CPU request and hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_hour: Option<f64>,
    /// Per node of the first shape and month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_month: Option<f64>,
    /// Shown after amounts, e.g. `USD`.
    pub currency: String,
}

/// Monthly amounts freed (negative: added) under each price given.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonthlyCost {
    /// Net memory freed × GiB-hour price × hours per month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<f64>,
    /// Net cores freed × core-hour price × hours per month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory and CPU together, when both prices are given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<f64>,
    /// Nodes of the first shape freed × node-month price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<f64>,
}

impl Pricing {
    /// The monthly cost of `memory` bytes and `cpu_millis` (signed: freed is positive)
    /// and of `nodes` nodes of the first shape.
    pub fn monthly(&self, memory: i64, cpu_millis: i64, nodes: Option<i64>) -> MonthlyCost {
        let mem = self
            .gib_hour
            .map(|p| round_cents(memory as f64 / GI as f64 * p * HOURS_PER_MONTH));
        let cpu = self
            .core_hour
            .map(|p| round_cents(cpu_millis as f64 / 1000.0 * p * HOURS_PER_MONTH));
        MonthlyCost {
            memory: mem,
            cpu,
            resources: mem.zip(cpu).map(|(a, b)| round_cents(a + b)),
            nodes: self
                .node_month
                .zip(nodes)
                .map(|(p, n)| round_cents(p * n as f64)),
        }
    }
}

fn round_cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::MI;

    #[test]
    fn node_shapes_parse_with_their_defaults() {
        let s = NodeShape::parse("cpu=4,memory=16Gi").unwrap();
        assert_eq!(
            (s.name.as_str(), s.cpu_millis, s.memory_bytes, s.count),
            ("4cpu/16Gi", 4000, 16 * GI, 0)
        );
        let s = NodeShape::parse("name=m5.xlarge, cpu=3920m, memory=15Gi, count=3").unwrap();
        assert_eq!(
            (s.name.as_str(), s.cpu_millis, s.count),
            ("m5.xlarge", 3920, 3)
        );
        for bad in [
            "cpu=4",
            "memory=1Gi",
            "cpu=0,memory=1Gi",
            "cpu=4,memory=1Gi,gpu=1",
            "cpu",
        ] {
            assert!(NodeShape::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nodes_group_by_shape_most_numerous_first() {
        let n = |t: &str, c: u64, m: u64| (t.to_string(), c, m);
        let shapes = shapes_of(&[
            n("big", 8000, 32 * GI),
            n("", 4000, 16 * GI),
            n("", 4000, 16 * GI),
            n("", 0, 16 * GI),
        ]);
        let got: Vec<(&str, u32)> = shapes.iter().map(|s| (s.name.as_str(), s.count)).collect();
        assert_eq!(got, [("4cpu/16Gi", 2), ("big", 1)]);
    }

    #[test]
    fn watched_nodes_give_shapes_without_the_cordoned_ones() {
        let node = |name: &str, ty: Option<&str>, cpu: &str, mem: &str, cordoned: bool| {
            let labels = match ty {
                Some(t) => serde_json::json!({"node.kubernetes.io/instance-type": t}),
                None => serde_json::json!({}),
            };
            crate::cluster::NodeInfo::from_object(&serde_json::json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"unschedulable": cordoned},
                "status": {"allocatable": {"cpu": cpu, "memory": mem}},
            }))
            .unwrap()
        };
        let shapes = shapes_of_nodes(&[
            node("a", Some("m5.xlarge"), "3920m", "15Gi", false),
            node("b", Some("m5.xlarge"), "3920m", "15Gi", false),
            node("c", None, "2", "8Gi", false),
            node("d", Some("m5.xlarge"), "3920m", "15Gi", true),
        ]);
        let got: Vec<(&str, u64, u64, u32)> = shapes
            .iter()
            .map(|s| (s.name.as_str(), s.cpu_millis, s.memory_bytes, s.count))
            .collect();
        assert_eq!(
            got,
            [
                ("m5.xlarge", 3920, 15 * GI, 2),
                ("2cpu/8Gi", 2000, 8 * GI, 1)
            ]
        );
    }

    #[test]
    fn the_scarcer_resource_decides_the_node_count() {
        let s = NodeShape::parse("cpu=4,memory=16Gi").unwrap();
        // (memory, cpu) -> nodes
        for (mem, cpu, want) in [
            (0, 0, 0),
            (16 * GI, 1000, 1),
            (16 * GI + MI, 1000, 2),
            (GI, 8001, 3),
        ] {
            assert_eq!(nodes_needed(&s, mem, cpu), want, "{mem} {cpu}");
        }
    }

    #[test]
    fn monthly_cost_per_price_given() {
        let p = Pricing {
            gib_hour: Some(0.005),
            core_hour: Some(0.03),
            node_month: Some(120.0),
            currency: "USD".into(),
        };
        let c = p.monthly(2 * GI as i64, 1500, Some(2));
        assert_eq!(c.memory, Some(7.3));
        assert_eq!(c.cpu, Some(32.85));
        assert_eq!(c.resources, Some(40.15));
        assert_eq!(c.nodes, Some(240.0));
        let none = Pricing::default().monthly(GI as i64, 1000, Some(1));
        assert_eq!(none, MonthlyCost::default());
        // Added memory costs money: negative.
        assert_eq!(p.monthly(-(GI as i64), 0, None).memory, Some(-3.65));
    }
}
