//! Reading an Envoy v3 static bootstrap.
//!
//! Two layers: [`raw`] mirrors the YAML with Envoy's field names and keeps
//! every value that failed to parse; [`validate`] turns it into the runtime
//! [`model`], collecting every problem with its YAML path before failing.

pub mod duration;
pub mod model;
mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::Bootstrap;

/// One problem (or warning) in the file, with its YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Dotted path with list indices, e.g. `static_resources.clusters[1].lb_policy`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A loaded configuration, the document it was read from and the warnings
/// about fields that were ignored.
#[derive(Debug)]
pub struct Loaded {
    pub bootstrap: Bootstrap,
    pub warnings: Vec<Diagnostic>,
    /// The bootstrap document as parsed (merge keys applied), for whoever
    /// shows the running configuration (`/config_dump`).
    pub document: serde_yaml::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diags: &[Diagnostic]) -> String {
    let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    lines.join("\n")
}

impl LoadError {
    /// Every problem, one per entry (a single one for read and YAML errors).
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            LoadError::Invalid(d) => d.clone(),
            other => vec![Diagnostic { path: String::new(), message: other.to_string() }],
        }
    }
}

/// Reads the secret an SDS file holds, as validation did at start, for
/// whoever reloads it when the file changes: every problem, with its path
/// in the file, in one message.
pub fn read_secret(file: &crate::tls::SdsFile) -> Result<crate::tls::Secret, String> {
    validate::read_secret(file)
}

/// Reads and validates the bootstrap at `path`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    parse(&text)
}

/// Parses and validates bootstrap text (YAML or JSON).
pub fn parse(text: &str) -> Result<Loaded, LoadError> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| LoadError::Yaml(e.to_string()))?;
    // `<<: *anchor` merge keys are common in hand-written Envoy files.
    value.apply_merge().map_err(|e| LoadError::Yaml(e.to_string()))?;
    if value.is_null() {
        return Err(LoadError::Invalid(vec![Diagnostic { path: String::new(), message: "the file is empty".into() }]));
    }
    let raw = match raw::Field::<raw::Bootstrap>::from_value(value.clone()) {
        raw::Field::Ok(b) => b,
        raw::Field::Invalid(message) => {
            return Err(LoadError::Invalid(vec![Diagnostic { path: String::new(), message }]))
        }
    };
    let (bootstrap, warnings) = validate::bootstrap(&raw)?;
    Ok(Loaded { bootstrap, warnings, document: value })
}
