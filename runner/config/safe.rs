//! Values that end up in a path or a shell script: closed character sets, checked where the
//! value is written, and the one quoting function every generated script uses.

/// Why `name` cannot name a folder (a run's or a sweep's): it must be one path segment of
/// letters, digits, `_`, `-` and `.`, not starting with `.`, so it stays inside its results
/// folder and means the same to every shell.
pub fn name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if name.starts_with('.') {
        return Some(format!("{name:?} starts with `.`"));
    }
    if name.len() > 200 {
        return Some(format!(
            "the name has {} characters, more than 200",
            name.len()
        ));
    }
    name.chars().find(|c| !allowed(*c)).map(|c| {
        format!(
            "`{}` holds {c:?}, which a folder name may not",
            name.escape_debug()
        )
    })
}

/// Why a Slurm resource (partition, time, memory) cannot go into a job script: letters,
/// digits and `_ - . , : +` only (`gpu,cpu`, `1-00:00:00`, `16G`).
pub fn slurm_value_problem(value: &str) -> Option<String> {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ',' | ':' | '+');
    if value.is_empty() {
        return Some("the value is empty".into());
    }
    value.chars().find(|c| !allowed(*c)).map(|c| {
        format!("{value:?} holds {c:?}; Slurm values here are letters, digits and _ - . , : +")
    })
}

/// `s` as one word of a POSIX shell: in single quotes, each `'` written `'\''`. Nothing inside
/// is expanded: not `$`, backticks, `\`, `;` or line breaks.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
