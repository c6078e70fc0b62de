//! What a validator found: errors reject a document, warnings are reported
//! and do not (Istio's webhook makes the same distinction).

/// Problems as (field path, message).
pub type Problems = Vec<(String, String)>;

/// The errors and warnings for one resource.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    pub errors: Problems,
    pub warnings: Problems,
}

impl Findings {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push((path.into(), message.into()));
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((path.into(), message.into()));
    }

    /// Records `result`'s error, if any, at `path`.
    pub fn check(&mut self, path: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.error(path, message);
        }
    }

    /// Duration field: Istio's `ValidateDuration` (at least 1ms), as the CRD's
    /// `duration(self) >= duration('1ms')` rule says.
    pub fn duration(&mut self, path: impl Into<String>, value: Option<&str>) {
        let Some(value) = value else { return };
        match crate::model::istio::parse_duration(value) {
            Ok(d) if d < std::time::Duration::from_millis(1) => {
                self.error(path, "must be a valid duration greater than 1ms")
            }
            Ok(_) => {}
            Err(e) => self.error(path, e),
        }
    }
}
