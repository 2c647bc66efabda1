//! Compiler-style diagnostics: `path/to/file.yaml:LINE:COL: error: message`, a hint, and notes
//! that point at the other keys involved.

use std::fmt;

use serde::Serialize;

use super::node::Origin;

/// An error makes a file invalid; a warning is a setting that cannot make a run wrong but is
/// likely not what was meant (`validate --strict` fails on warnings too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where the problem is; `None` only for problems with no place (an unreadable path).
    pub origin: Option<Origin>,
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Other places involved, such as the other key of a cross-key check.
    pub notes: Vec<(Origin, String)>,
}

impl Diagnostic {
    pub fn error(origin: Origin, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            origin: Some(origin),
            message: message.into(),
            hint: None,
            notes: Vec::new(),
        }
    }

    /// A problem that has no position, such as a path that does not exist.
    pub fn unplaced(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            origin: None,
            message: message.into(),
            hint: None,
            notes: Vec::new(),
        }
    }

    /// The same diagnostic as a warning.
    pub fn as_warning(mut self) -> Diagnostic {
        self.severity = Severity::Warning;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_note(mut self, origin: Origin, note: impl Into<String>) -> Diagnostic {
        self.notes.push((origin, note.into()));
        self
    }

    /// The machine-readable form (`--format json`).
    pub fn to_json(&self) -> JsonDiagnostic {
        let (file, line, col) = place(self.origin.as_ref());
        JsonDiagnostic {
            severity: self.severity.name(),
            file,
            line,
            col,
            message: self.message.clone(),
            hint: self.hint.clone(),
            notes: self
                .notes
                .iter()
                .map(|(origin, message)| {
                    let (file, line, col) = place(Some(origin));
                    JsonNote {
                        file,
                        line,
                        col,
                        message: message.clone(),
                    }
                })
                .collect(),
        }
    }
}

fn place(origin: Option<&Origin>) -> (Option<String>, Option<usize>, Option<usize>) {
    match origin {
        Some(Origin::File { path, line, col }) => {
            (Some(path.display().to_string()), Some(*line), Some(*col))
        }
        Some(Origin::Override { index, col, .. }) => {
            (Some(format!("<override {index}>")), Some(1), Some(*col))
        }
        None => (None, None, None),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{origin}: {}: {}", self.severity.name(), self.message)?,
            None => write!(f, "{}: {}", self.severity.name(), self.message)?,
        }
        if let Some(Origin::Override { text, .. }) = &self.origin {
            write!(f, "\n  in override: {text}")?;
        }
        for (origin, note) in &self.notes {
            write!(f, "\n  note: {origin}: {note}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
pub struct JsonDiagnostic {
    pub severity: &'static str,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
    pub notes: Vec<JsonNote>,
}

#[derive(Serialize)]
pub struct JsonNote {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
}

/// The closest candidate to a misspelt word, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                c,
                strsim::damerau_levenshtein(&word_lower, &c.to_lowercase()),
                strsim::jaro_winkler(&word_lower, &c.to_lowercase()),
            )
        })
        .filter(|(c, distance, jw)| {
            *distance <= (c.len().max(word.len()) / 3).max(1) || *jw >= 0.88
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(c, _, _)| c)
}
