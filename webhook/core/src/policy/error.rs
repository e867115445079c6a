//! Policy errors. Every one names where the problem is.

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy parsed but a field is wrong.
    #[error("{source_name}: {path}: {message}")]
    Invalid {
        source_name: String,
        path: String,
        message: String,
    },
    /// Several fields are wrong: each with its path, the source named once.
    #[error("{source_name}: {}", list(.errors))]
    Several {
        source_name: String,
        /// Path and message of each.
        errors: Vec<(String, String)>,
    },
    /// The manifest or policy text is not valid YAML/JSON.
    #[error("{source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    /// A file or directory could not be read.
    #[error("{source_name}: cannot read: {error}")]
    Io {
        source_name: String,
        #[source]
        error: std::io::Error,
    },
}

impl PolicyError {
    /// The field path, when the error is about one field.
    pub fn path(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { path, .. } => Some(path),
            PolicyError::Several { errors, .. } => errors.first().map(|e| e.0.as_str()),
            _ => None,
        }
    }

    /// Every field path this error names, in order.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            PolicyError::Invalid { path, .. } => vec![path],
            PolicyError::Several { errors, .. } => errors.iter().map(|e| e.0.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// One error for all of `errors` (found in `source`): none, the one, or `Several`.
    pub fn all(source: &str, mut errors: Vec<PolicyError>) -> Option<PolicyError> {
        if errors.len() <= 1 {
            return errors.pop();
        }
        let mut list = Vec::new();
        // An error of a part of `source` (a ConfigMap in a file) names that part once.
        let within = |name: &str, path: String| match name.strip_prefix(source).map(str::trim) {
            Some(part) if !part.is_empty() => format!("{part} {path}"),
            _ => path,
        };
        for e in errors {
            match e {
                PolicyError::Invalid {
                    source_name,
                    path,
                    message,
                } => list.push((within(&source_name, path), message)),
                PolicyError::Several {
                    source_name,
                    errors,
                } => list.extend(
                    errors
                        .into_iter()
                        .map(|(p, m)| (within(&source_name, p), m)),
                ),
                other => list.push((String::new(), other.to_string())),
            }
        }
        Some(PolicyError::Several {
            source_name: source.to_string(),
            errors: list,
        })
    }
}

/// `path: message; path: message`.
fn list(errors: &[(String, String)]) -> String {
    errors
        .iter()
        .map(|(p, m)| {
            if p.is_empty() {
                m.clone()
            } else {
                format!("{p}: {m}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
