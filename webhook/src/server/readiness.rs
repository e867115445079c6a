//! What `GET /readyz` asks: a cheap check supplied by whoever builds the server.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Check = dyn Fn() -> Result<(), String> + Send + Sync;

/// A readiness check; `Err(reason)` makes `/readyz` answer 503 with that reason.
#[derive(Clone)]
pub struct Readiness(Arc<Check>);

impl Readiness {
    /// Ready whenever `f` returns `Ok`.
    pub fn from_fn(f: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        Readiness(Arc::new(f))
    }

    /// Ready while the flag is set (e.g. once policies are loaded).
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Readiness::from_fn(move || {
            if flag.load(Ordering::Acquire) {
                Ok(())
            } else {
                Err("starting".to_string())
            }
        })
    }

    pub fn always() -> Self {
        Readiness::from_fn(|| Ok(()))
    }

    pub fn check(&self) -> Result<(), String> {
        (self.0)()
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Readiness")
    }
}
