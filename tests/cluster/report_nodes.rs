//! `rightsizer report`'s node shapes from a real apiserver's Node list: allocatable CPU
//! and memory, grouped by instance type (a node without one is named by its shape), most
//! numerous first. On kube_watch's control plane, which has no node of its own.

use serde_json::json;

use rightsizer_core::quantity::GI;
use rightsizer_core::report::capacity::NodeShape;

use crate::kube_watch::setup;

#[tokio::test]
#[cfg_attr(
    not(has_control_plane),
    ignore = "no control plane here: run tests/cluster/build.sh"
)]
async fn node_shapes_come_from_the_node_list() {
    let (_g, plane) = setup().await;
    let nodes = [
        ("rn-small", "", "2", "8Gi"),
        ("rn-big-1", "m5.xlarge", "3920m", "15Gi"),
        ("rn-big-2", "m5.xlarge", "3920m", "15Gi"),
    ];
    for (name, ty, cpu, memory) in nodes {
        let labels = if ty.is_empty() {
            json!({})
        } else {
            json!({"node.kubernetes.io/instance-type": ty})
        };
        // The apiserver keeps a Node's status as created (no kubelet writes it here).
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "capacity": {"cpu": cpu, "memory": memory, "pods": "110"}}});
        plane.kubectl_ok(&["create", "-f", "-"], Some(&node.to_string()));
    }
    let shapes = rightsizer::reporting::node_shapes(plane.client().await).await;
    for (name, ..) in nodes {
        plane.kubectl_ok(&["delete", "node", name, "--wait=false"], None);
    }
    let shape = |name: &str, cpu_millis: u64, memory_bytes: u64, count: u32| NodeShape {
        name: name.to_string(),
        cpu_millis,
        memory_bytes,
        count,
    };
    assert_eq!(
        shapes.expect("list nodes"),
        [
            shape("m5.xlarge", 3920, 15 * GI, 2),
            shape("2cpu/8Gi", 2000, 8 * GI, 1)
        ]
    );
}
