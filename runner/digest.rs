//! Content digests of the files a run reads: blake3, streamed, so that a run's identity covers
//! its data and weights and not only the paths that name them.
//!
//! A file is read once: its digest is cached by absolute path, size and modification time (in
//! nanoseconds) in `digests.tsv` of the cache folder (`files::cache_dir`). A file modified
//! within the last two seconds is not cached (as git does with its index: a later write in the
//! same clock tick could keep size and time). Lines are appended; once most of the file is
//! superseded lines (a file whose time keeps changing adds one per change), it is rewritten
//! with one line per path.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// What a file's entry records when it does not exist.
pub const MISSING: &str = "missing";

/// How a file's digest is named among a run's inputs: `file:data/tiny/train.json`.
pub const FILE_INPUT: &str = "file:";

/// The digest of each path (its text as given, then the blake3 hex), or `MISSING`.
pub fn digests(paths: &[PathBuf]) -> Result<Vec<(String, String)>> {
    digests_cached_in(paths, Some(crate::files::cache_dir()))
}

/// `digests`, with the cache in `dir` (none: every file is read).
pub fn digests_cached_in(paths: &[PathBuf], dir: Option<PathBuf>) -> Result<Vec<(String, String)>> {
    let mut cache = Cache::open(dir);
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let digest = match fs::metadata(path) {
            Ok(meta) if meta.is_file() => cache.digest(path, &meta)?,
            _ => MISSING.to_string(),
        };
        out.push((path.display().to_string(), digest));
    }
    cache.save();
    Ok(out)
}

/// blake3 of a file's bytes, read in 1 MiB pieces.
fn hash_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// (size, modification time in ns) of a file, the key its digest is cached under.
type Stamp = (u64, u128);

struct Cache {
    file: Option<PathBuf>,
    known: HashMap<PathBuf, (Stamp, String)>,
    /// Lines to append: what this process hashed.
    new: Vec<String>,
    /// Lines read that a later line for the same path supersedes, or that do not parse.
    stale: usize,
}

/// Superseded lines the cache keeps before it is rewritten (and only while they outnumber
/// the live ones).
const STALE_LINES: usize = 1000;

impl Cache {
    fn open(dir: Option<PathBuf>) -> Cache {
        let file = dir.map(|d| d.join("digests.tsv"));
        let mut known = HashMap::new();
        let mut lines = 0;
        if let Some(text) = file.as_ref().and_then(|f| fs::read_to_string(f).ok()) {
            for line in text.lines() {
                lines += 1;
                let fields: Vec<&str> = line.split('\t').collect();
                if let [path, size, time, digest] = fields[..] {
                    if let (Ok(size), Ok(time)) = (size.parse(), time.parse()) {
                        known.insert(PathBuf::from(path), ((size, time), digest.to_string()));
                    }
                }
            }
        }
        Cache {
            file,
            stale: lines - known.len(),
            known,
            new: Vec::new(),
        }
    }

    fn digest(&mut self, path: &Path, meta: &fs::Metadata) -> Result<String> {
        let absolute = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let stamp = (
            meta.len(),
            modified
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        if let Some((known, digest)) = self.known.get(&absolute) {
            if *known == stamp {
                return Ok(digest.clone());
            }
        }
        let digest = hash_file(path)?;
        let settled = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age > Duration::from_secs(2));
        let text = absolute.display().to_string();
        if settled && !text.contains(['\t', '\n']) {
            self.new
                .push(format!("{text}\t{}\t{}\t{digest}\n", stamp.0, stamp.1));
            self.known.insert(absolute, (stamp, digest.clone()));
        }
        Ok(digest)
    }

    /// Appends what was hashed, in one write of whole lines (processes sharing the cache
    /// interleave lines, not parts of them), or rewrites the file when it is mostly stale (a
    /// line another process appends meanwhile may be lost). A cache that cannot be written
    /// only costs a rehash.
    fn save(self) {
        let Some(file) = self.file else {
            return;
        };
        let written = if self.stale > STALE_LINES && self.stale > self.known.len() {
            let mut lines: Vec<String> = (self.known.iter())
                .map(|(path, ((size, time), digest))| {
                    format!("{}\t{size}\t{time}\t{digest}\n", path.display())
                })
                .collect();
            lines.sort();
            crate::files::write_atomic(&file, lines.concat().as_bytes())
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
        } else if self.new.is_empty() {
            return;
        } else {
            file.parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|()| fs::OpenOptions::new().create(true).append(true).open(&file))
                .and_then(|mut f| f.write_all(self.new.concat().as_bytes()))
        };
        if let Err(e) = written {
            eprintln!(
                "warning: cannot cache file digests in {}: {e}",
                file.display()
            );
        }
    }
}
