//! Where the data METEOR needs is found: NLTK's English Punkt model (`punkt_tab`, for
//! `word_tokenize`) and WordNet 3.0, looked up in the folders NLTK itself searches (`NLTK_DATA`,
//! `~/nltk_data`, the active or local virtualenv's `nltk_data`, `/usr/share/nltk_data`, …), and
//! WordNet also in Debian's `wordnet-base` (`/usr/share/wordnet`). `RUNNER_PUNKT_DIR` and
//! `RUNNER_WORDNET_DIR` name the folders outright.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::wordnet;

/// NLTK's data roots, in NLTK's order of search.
fn roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::env::var_os("NLTK_DATA")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join("nltk_data"));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(venv).join("nltk_data"));
    }
    // The project's virtualenv (`./dev` puts Punkt there): from the working directory, and
    // from the binary's place (target/debug/runner in the project).
    roots.push(PathBuf::from(".venv/nltk_data"));
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(
            exe.ancestors()
                .skip(1)
                .take(3)
                .map(|d| d.join(".venv/nltk_data")),
        );
    }
    for prefix in [
        "/usr/share",
        "/usr/local/share",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        roots.push(PathBuf::from(prefix).join("nltk_data"));
    }
    roots
}

/// The first of `candidates` holding `marker`, else an error listing where it looked.
fn find(
    what: &str,
    env: &str,
    candidates: Vec<PathBuf>,
    marker: &str,
    hint: &str,
) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(found) = candidates.iter().find(|d| d.join(marker).is_file()) {
        return Ok(found.clone());
    }
    let searched: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "METEOR needs {what}, which is in none of: {}\n  hint: {hint}; or set {env} to its folder",
        searched.join(", ")
    )
}

/// NLTK's English Punkt parameters (`tokenizers/punkt_tab/english`).
pub fn punkt_dir() -> Result<PathBuf> {
    let candidates = roots()
        .into_iter()
        .map(|r| r.join("tokenizers/punkt_tab/english"))
        .collect();
    find(
        "NLTK's punkt_tab (English)",
        "RUNNER_PUNKT_DIR",
        candidates,
        "sent_starters.txt",
        "`./dev run` puts it in .venv/nltk_data; or `python -m nltk.downloader punkt_tab`",
    )
}

/// A WordNet 3.0 dictionary folder (`index.noun`, `data.noun`, …).
pub fn wordnet_dir() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = roots()
        .into_iter()
        .map(|r| r.join("corpora/wordnet"))
        .collect();
    candidates.push(PathBuf::from(wordnet::DEBIAN_DIR));
    find(
        "WordNet 3.0",
        "RUNNER_WORDNET_DIR",
        candidates,
        "index.noun",
        "`apt-get install wordnet-base` (which `./dev` runs); or `python -m nltk.downloader wordnet` and unzip corpora/wordnet.zip",
    )
}
