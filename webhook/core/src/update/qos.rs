//! A Pod's QoS class from its containers' values, as the kubelet computes it (regular
//! containers only: the updater changes no others).

use crate::update::observe::RunningContainer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Guaranteed: every container has CPU and memory limits and requests equal to them
/// (an unset request defaults to the limit). BestEffort: nothing set anywhere.
pub fn qos_class(containers: &[RunningContainer]) -> QosClass {
    let none = containers.iter().all(|c| {
        c.memory.request.is_none()
            && c.memory.limit.is_none()
            && c.cpu.request.is_none()
            && c.cpu.limit.is_none()
    });
    if none {
        return QosClass::BestEffort;
    }
    let guaranteed = containers.iter().all(|c| {
        [c.memory, c.cpu].iter().all(|s| {
            s.limit.is_some() && s.request.unwrap_or(s.limit.unwrap_or(0)) == s.limit.unwrap_or(0)
        })
    });
    if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}
