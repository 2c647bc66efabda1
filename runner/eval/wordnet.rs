//! The part of WordNet 3.0 that METEOR's synonym stage reads, the way NLTK 3.10.4's
//! `WordNetCorpusReader` reads it: `synsets(word)` (morphy's exception lists and suffix rules
//! over nouns, verbs, adjectives and adverbs) and the lemma names of those synsets.
//!
//! The files are the Princeton database files (index.*, data.*, *.exc) that Debian's
//! `wordnet-base` package installs under /usr/share/wordnet, the same WordNet 3.0 as NLTK's
//! corpus. Everything is parsed and cross-checked once at load, so lookups cannot fail.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Where Debian's `wordnet-base` puts the database.
pub const DEBIAN_DIR: &str = "/usr/share/wordnet";

const INSTALL_HINT: &str = "WordNet 3.0 is needed (Debian/Ubuntu: apt-get install wordnet-base)";

/// Morphy's suffix rules for one part of speech: (old ending, new ending), in order.
type Substitutions = &'static [(&'static str, &'static str)];

/// The parts of speech in the order of NLTK's `POS_LIST`, which `synsets` follows: file suffix,
/// the letter index lines carry, and morphy's suffix substitutions.
///
/// Adjective satellites (`s`) need nothing of their own: `synsets` without a part of speech never
/// asks for them, and index.adj lists satellite synsets among the adjective ones.
const PARTS_OF_SPEECH: [(&str, &str, Substitutions); 4] = [
    (
        "noun",
        "n",
        &[
            ("s", ""),
            ("ses", "s"),
            ("ves", "f"),
            ("xes", "x"),
            ("zes", "z"),
            ("ches", "ch"),
            ("shes", "sh"),
            ("men", "man"),
            ("ies", "y"),
        ],
    ),
    (
        "verb",
        "v",
        &[
            ("s", ""),
            ("ies", "y"),
            ("es", "e"),
            ("es", ""),
            ("ed", "e"),
            ("ed", ""),
            ("ing", "e"),
            ("ing", ""),
        ],
    ),
    (
        "adj",
        "a",
        &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    ),
    ("adv", "r", &[]),
];

/// One part of speech: its lemmas, its irregular forms and its synsets.
struct PartOfSpeech {
    substitutions: Substitutions,
    /// Each lemma (lower case, `_` for spaces) with its synsets as positions in `synsets`, in
    /// index-file order. Index files are sorted by lemma, which lets lookups binary-search
    /// (a hash map takes several times longer to build in debug builds).
    index: Vec<(String, Vec<usize>)>,
    /// Inflected form to its base forms (the .exc file).
    exceptions: HashMap<String, Vec<String>>,
    /// Each synset's lemma names, as the data file spells them.
    synsets: Vec<Vec<String>>,
}

/// WordNet as METEOR needs it.
pub struct WordNet {
    /// In the order of `PARTS_OF_SPEECH`.
    parts: Vec<PartOfSpeech>,
}

impl WordNet {
    /// Reads index.{noun,verb,adj,adv}, data.* and *.exc from `dir`.
    pub fn load(dir: &Path) -> Result<WordNet> {
        let parts = PARTS_OF_SPEECH
            .iter()
            .map(|&(suffix, letter, substitutions)| {
                let (synsets, offsets) = read_data(dir, &format!("data.{suffix}"))?;
                Ok(PartOfSpeech {
                    substitutions,
                    index: read_index(dir, &format!("index.{suffix}"), letter, &offsets)?,
                    exceptions: read_exceptions(dir, &format!("{suffix}.exc"))?,
                    synsets,
                })
            })
            .collect::<Result<_>>()?;
        Ok(WordNet { parts })
    }

    /// The lemma names of every synset that `nltk.corpus.wordnet.synsets(word)` returns, as
    /// `lemma.name()` gives them: case as in the data files, `_` for spaces, adjective markers
    /// such as `(a)` removed.
    pub fn lemma_names(&self, word: &str) -> BTreeSet<&str> {
        let word = word.to_lowercase();
        let mut names = BTreeSet::new();
        for part in &self.parts {
            for synsets in part.morphy(&word) {
                for &synset in synsets {
                    names.extend(part.synsets[synset].iter().map(String::as_str));
                }
            }
        }
        names
    }
}

impl PartOfSpeech {
    /// NLTK's `_morphy`: the form itself, then its exception-list bases if it has any, else
    /// every suffix substitution applied once; of those that are lemmas here, each one's synsets,
    /// once per lemma.
    fn morphy(&self, form: &str) -> Vec<&[usize]> {
        let candidates: Vec<String> = match self.exceptions.get(form) {
            Some(bases) => bases.clone(),
            None => self
                .substitutions
                .iter()
                .filter_map(|(old, new)| form.strip_suffix(old).map(|stem| stem.to_string() + new))
                .collect(),
        };
        let mut lemmas: Vec<usize> = Vec::new();
        for candidate in std::iter::once(form.to_string()).chain(candidates) {
            let found = self
                .index
                .binary_search_by(|(lemma, _)| lemma.as_str().cmp(&candidate));
            if let Ok(lemma) = found {
                if !lemmas.contains(&lemma) {
                    lemmas.push(lemma);
                }
            }
        }
        lemmas
            .into_iter()
            .map(|lemma| self.index[lemma].1.as_slice())
            .collect()
    }
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}: {INSTALL_HINT}", path.display()))
}

/// The whitespace-separated fields of a line (the files are ASCII).
fn fields<'a>(line: &'a str) -> impl FnMut(&str) -> Result<&'a str> {
    let mut fields = line.split_ascii_whitespace();
    move |what: &str| fields.next().ok_or_else(|| anyhow!("no {what}"))
}

fn number(field: &str, radix: u32, what: &str) -> Result<usize> {
    usize::from_str_radix(field, radix).with_context(|| format!("{what} {field:?}"))
}

fn line_error(name: &str, line: usize, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "WordNet file {name}, line {}: {what}; {INSTALL_HINT}",
        line + 1
    )
}

/// The synsets of a data file, each as its lemma names, and their byte offsets (the synset
/// offsets that index files use), ascending.
fn read_data(dir: &Path, name: &str) -> Result<(Vec<Vec<String>>, Vec<usize>)> {
    let text = read(dir, name)?;
    let (mut synsets, mut offsets) = (Vec::new(), Vec::new());
    let mut start = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let offset = start;
        start += line.len();
        // The license header is indented.
        if line.starts_with(' ') {
            continue;
        }
        let lemmas = parse_synset_lemmas(line, offset).map_err(|e| line_error(name, i, e))?;
        offsets.push(offset);
        synsets.push(lemmas);
    }
    Ok((synsets, offsets))
}

/// `synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] ...`, w_cnt in hex.
fn parse_synset_lemmas(line: &str, offset: usize) -> Result<Vec<String>> {
    let mut next = fields(line);
    let stated = number(next("synset offset")?, 10, "synset offset")?;
    if stated != offset {
        bail!("synset offset {stated} is not the line's byte offset {offset}");
    }
    next("lexicographer file number")?;
    next("synset type")?;
    let count = number(next("word count")?, 16, "word count")?;
    (0..count)
        .map(|_| {
            let word = next("word")?;
            next("lex_id")?;
            Ok(without_syntactic_marker(word).to_string())
        })
        .collect()
}

/// Adjectives may carry a marker such as `(a)`, `(p)` or `(ip)`, which is not part of the name
/// (NLTK: the shortest prefix followed by an optional final parenthesis without parentheses
/// inside).
fn without_syntactic_marker(word: &str) -> &str {
    match word
        .strip_suffix(')')
        .and_then(|w| w.rfind('(').map(|open| (w, open)))
    {
        Some((inner, open)) if !inner[open + 1..].contains(')') => &word[..open],
        _ => word,
    }
}

/// `lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...`, lines
/// of `letter` only, in ascending lemma order, each synset offset found in `offsets`.
fn read_index(
    dir: &Path,
    name: &str,
    letter: &str,
    offsets: &[usize],
) -> Result<Vec<(String, Vec<usize>)>> {
    let text = read(dir, name)?;
    let mut index: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with(' ') {
            continue;
        }
        let (lemma, synsets) =
            parse_index_line(line, letter, offsets).map_err(|e| line_error(name, i, e))?;
        if let Some((previous, _)) = index.last() {
            if previous.as_str() >= lemma {
                return Err(line_error(
                    name,
                    i,
                    format!("{lemma:?} does not sort after {previous:?}"),
                ));
            }
        }
        index.push((lemma.to_string(), synsets));
    }
    Ok(index)
}

fn parse_index_line<'a>(
    line: &'a str,
    letter: &str,
    offsets: &[usize],
) -> Result<(&'a str, Vec<usize>)> {
    let mut next = fields(line);
    let lemma = next("lemma")?;
    let pos = next("part of speech")?;
    if pos != letter {
        bail!("part of speech {pos:?}, expected {letter:?}");
    }
    let synset_count = number(next("synset count")?, 10, "synset count")?;
    let pointer_count = number(next("pointer count")?, 10, "pointer count")?;
    for _ in 0..pointer_count {
        next("pointer symbol")?;
    }
    let sense_count = number(next("sense count")?, 10, "sense count")?;
    if synset_count == 0 || sense_count != synset_count {
        bail!("{synset_count} synsets but {sense_count} senses");
    }
    next("tagged sense count")?;
    let synsets = (0..synset_count)
        .map(|_| {
            let offset = number(next("synset offset")?, 10, "synset offset")?;
            offsets
                .binary_search(&offset)
                .map_err(|_| anyhow!("synset offset {offset} is not a synset of the data file"))
        })
        .collect::<Result<_>>()?;
    Ok((lemma, synsets))
}

/// `inflected_form base_form...` per line.
fn read_exceptions(dir: &Path, name: &str) -> Result<HashMap<String, Vec<String>>> {
    let text = read(dir, name)?;
    let mut exceptions = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let mut terms = line.split_ascii_whitespace().map(str::to_string);
        let form = terms
            .next()
            .ok_or_else(|| line_error(name, i, "empty line"))?;
        exceptions.insert(form, terms.collect());
    }
    Ok(exceptions)
}
