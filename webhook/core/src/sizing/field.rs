//! What a writer of the merge writes: each writer declares its fields beside its code
//! (`WRITES`), and `written` copies exactly the fields of the writers it registers.

/// A part of an object a writer writes (whole: everything under it is the writer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A key of the pod spec (`containers`, `affinity`...).
    Spec(&'static str),
    /// The annotations of the pod metadata (a Pod's own, or its template's).
    PodAnnotations,
    /// The annotations of the object's own metadata.
    Annotations,
}
