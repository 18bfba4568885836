//! Diagnostics: what Terraform shows the user, on the attribute it is about
//! when there is one.

use crate::proto::tfplugin6 as tf;
use tf::attribute_path::step::Selector;

/// A path into a resource's value: `health_check[0].http[0].path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Attr(String),
    Index(i64),
}

impl Path {
    pub fn attr(name: &str) -> Path {
        Path(vec![Step::Attr(name.to_string())])
    }

    pub fn then(&self, step: Step) -> Path {
        let mut steps = self.0.clone();
        steps.push(step);
        Path(steps)
    }

    pub fn to_proto(&self) -> tf::AttributePath {
        tf::AttributePath {
            steps: self
                .0
                .iter()
                .map(|step| tf::attribute_path::Step {
                    selector: Some(match step {
                        Step::Attr(name) => Selector::AttributeName(name.clone()),
                        Step::Index(i) => Selector::ElementKeyInt(*i),
                    }),
                })
                .collect(),
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Attr(name) if i == 0 => write!(f, "{name}")?,
                Step::Attr(name) => write!(f, ".{name}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub error: bool,
    pub summary: String,
    pub detail: String,
    pub path: Option<Path>,
}

impl Diag {
    pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Diag {
        Diag {
            error: true,
            summary: summary.into(),
            detail: detail.into(),
            path: None,
        }
    }

    pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> Diag {
        Diag {
            error: false,
            ..Diag::error(summary, detail)
        }
    }

    pub fn at(mut self, path: Path) -> Diag {
        self.path = Some(path);
        self
    }

    pub fn to_proto(&self) -> tf::Diagnostic {
        let severity = if self.error {
            tf::diagnostic::Severity::Error
        } else {
            tf::diagnostic::Severity::Warning
        };
        tf::Diagnostic {
            severity: severity as i32,
            summary: self.summary.clone(),
            detail: self.detail.clone(),
            attribute: self.path.as_ref().map(Path::to_proto),
        }
    }
}

pub fn to_proto(diags: &[Diag]) -> Vec<tf::Diagnostic> {
    diags.iter().map(Diag::to_proto).collect()
}

pub fn has_errors(diags: &[Diag]) -> bool {
    diags.iter().any(|d| d.error)
}

/// A refusal of the control plane, as a diagnostic naming what was refused and why.
pub fn from_status(what: &str, status: &tonic::Status) -> Diag {
    use tonic::Code;
    let why = match status.code() {
        Code::InvalidArgument => "the control plane refused it as invalid",
        Code::FailedPrecondition => "the control plane refused it: something it refers to is missing, or it is still referred to",
        Code::Aborted => "it was changed by someone else since Terraform last read it; run `terraform apply` again to see the change and decide",
        Code::NotFound => "it does not exist on the control plane",
        Code::AlreadyExists => "it already exists",
        Code::Unavailable => "no control-plane node answered",
        Code::Unauthenticated | Code::PermissionDenied => {
            "the control plane did not accept the provider's identity (it needs an admin certificate)"
        }
        _ => "the control plane answered with an error",
    };
    Diag::error(
        format!("{what}: {why}"),
        format!("{} ({:?})", status.message(), status.code()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_as_terraform_writes_them() {
        let path = Path::attr("health_check")
            .then(Step::Index(0))
            .then(Step::Attr("interval".into()));
        assert_eq!(path.to_string(), "health_check[0].interval");
        assert_eq!(path.to_proto().steps.len(), 3);
    }
}
