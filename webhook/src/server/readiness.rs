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

    /// Ready when every check is; otherwise the reasons of all that are not, in order.
    pub fn all(checks: Vec<Readiness>) -> Self {
        Readiness::from_fn(move || {
            let why: Vec<String> = checks.iter().filter_map(|c| c.check().err()).collect();
            if why.is_empty() {
                Ok(())
            } else {
                Err(why.join("; "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_ready_only_when_every_check_is_and_names_each_reason() {
        let no = |why: &'static str| Readiness::from_fn(move || Err(why.to_string()));
        let cases = [
            (vec![], Ok(())),
            (vec![Readiness::always(), Readiness::always()], Ok(())),
            (
                vec![no("policies not loaded"), Readiness::always()],
                Err("policies not loaded"),
            ),
            (
                vec![
                    no("policies not loaded"),
                    no("waiting for the first list of: jobs"),
                ],
                Err("policies not loaded; waiting for the first list of: jobs"),
            ),
        ];
        for (checks, want) in cases {
            let got = Readiness::all(checks).check();
            assert_eq!(got, want.map_err(str::to_string));
        }
    }
}
