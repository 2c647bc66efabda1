//! Punkt sentence splitting exactly as NLTK 3.10.4's `PunktTokenizer("english").tokenize` (what
//! `sent_tokenize`, and so `word_tokenize`, use), with NLTK's pretrained `punkt_tab` parameters
//! read at run time (Kiss & Strunk 2006, "Unsupervised Multilingual Sentence Boundary
//! Detection").
//!
//! NLTK compiles these patterns with the third-party `regex` module, whose `\w`, `\s`, `\d` and
//! `\b` are the Unicode ones of Rust's regex, so they carry over as written. Python's `str`
//! methods (`strip`, `split`) use `str.isspace`, which differs: see [`is_py_space`].

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Context, Result};
use fancy_regex::Regex;

// Orthographic contexts a word type was seen in during training: at the beginning of a
// sentence, in the middle, or at an unknown position, each with an upper- or lower-case first
// letter.
const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC | ORTHO_MID_UC | ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC | ORTHO_MID_LC | ORTHO_UNK_LC;

/// Tokens that never start a sentence (`PunktSentenceTokenizer.PUNCTUATION`).
const PUNCTUATION: [&str; 6] = [";", ":", ",", ".", "!", "?"];

/// Characters that cannot appear within words (`_re_non_word_chars`, which includes the curly
/// quotes and guillemets so that a period right before one still counts as a boundary).
const NON_WORD: &str = r#"[)";}\]*:@'({\[‘’“”«»?!]"#;
/// Hyphen runs and ellipses are single tokens (`_re_multi_char_punct`).
const MULTI_CHAR: &str = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)";
/// Characters a word token cannot start with (`_re_word_start`).
const WORD_START: &str = r#"[^("`{\[:;&#*@)}\]\-,]"#;

/// Python's `str.isspace` for one character (what `str.strip`/`split` use): Unicode
/// White_Space plus the separators U+001C..U+001F, which regexes' `\s` leaves out.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `text[range]`: empty when the range is inverted.
fn py_slice(text: &str, range: Range<usize>) -> &str {
    text.get(range).unwrap_or_default()
}

/// Python's `str.rstrip()`.
fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// A Punkt model: NLTK's trained parameters and the patterns that apply them.
pub struct Punkt {
    /// Known abbreviations, lower case without their final period ("dr", "u.s").
    abbrev_types: HashSet<String>,
    /// Word-type pairs whose first word ends in a period that is not a sentence break, as
    /// first type -> second types ("##number##" -> "international").
    collocations: HashMap<String, HashSet<String>>,
    /// Types that frequently start sentences ("however").
    sent_starters: HashSet<String>,
    /// The ORTHO_* flags of each type seen in training.
    ortho_context: HashMap<String, u32>,
    /// A possible sentence end, with the following punctuation or next token in groups
    /// (`period_context_re`).
    period_context: Regex,
    /// Punkt's word tokens, periods left attached (`_word_tokenizer_re`).
    word: Regex,
    /// Closing quotes and brackets after a sentence end, which belong to that sentence
    /// (`re_boundary_realignment`).
    boundary_realignment: Regex,
    /// Numbers, whose type becomes "##number##".
    numeric: Regex,
    /// A single letter and a period.
    initial: Regex,
}

/// A word token and what the annotation passes decided about it (`PunktToken`).
struct Token<'a> {
    tok: &'a str,
    /// Lower case, or "##number##" for a number.
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

impl Token<'_> {
    fn type_no_period(&self) -> &str {
        match self.typ.strip_suffix('.') {
            Some(stem) if !stem.is_empty() => stem,
            _ => &self.typ,
        }
    }

    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }

    fn first_upper(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_uppercase)
    }

    fn first_lower(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_lowercase)
    }

    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.bytes().all(|b| b == b'.')
    }
}

/// A match of `period_context`: the sentence-end character and what follows it.
struct EndContext {
    /// Where the end character is.
    end_char: Range<usize>,
    /// The end of the following punctuation character or whitespace-and-token.
    after_end: usize,
    /// Where the next token starts, when whitespace follows the end character.
    next_tok_start: Option<usize>,
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).with_context(|| format!("compiling the Punkt pattern {pattern}"))
}

/// The lines of `file` in `dir` (Python's line iteration without the newlines).
fn read_lines(dir: &Path, file: &str) -> Result<Vec<String>> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (a Punkt punkt_tab model file, UTF-8 text)",
            path.display()
        )
    })?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The rows of the two-column tab-separated `file` in `dir`.
fn read_pairs(dir: &Path, file: &str) -> Result<Vec<(String, String)>> {
    read_lines(dir, file)?
        .into_iter()
        .enumerate()
        .map(|(i, line)| match line.split('\t').collect::<Vec<_>>()[..] {
            [a, b] => Ok((a.to_string(), b.to_string())),
            _ => bail!(
                "{} line {}: expected two tab-separated fields, found {line:?}",
                dir.join(file).display(),
                i + 1
            ),
        })
        .collect()
}

impl Punkt {
    /// Loads the `punkt_tab` model in `dir` (e.g. `nltk_data/tokenizers/punkt_tab/english`):
    /// abbrev_types.txt, collocations.tab, sent_starters.txt and ortho_context.tab.
    pub fn load(dir: &Path) -> Result<Punkt> {
        let mut collocations: HashMap<String, HashSet<String>> = HashMap::new();
        for (first, second) in read_pairs(dir, "collocations.tab")? {
            collocations.entry(first).or_default().insert(second);
        }
        let ortho_context = read_pairs(dir, "ortho_context.tab")?
            .into_iter()
            .map(|(typ, flags)| {
                let parsed = flags.trim().parse::<u32>().with_context(|| {
                    format!(
                        "{}: expected a non-negative integer of orthographic flags for {typ:?}, \
                         found {flags:?}",
                        dir.join("ortho_context.tab").display()
                    )
                });
                Ok((typ, parsed?))
            })
            .collect::<Result<_>>()?;
        Ok(Punkt {
            abbrev_types: read_lines(dir, "abbrev_types.txt")?.into_iter().collect(),
            collocations,
            sent_starters: read_lines(dir, "sent_starters.txt")?.into_iter().collect(),
            ortho_context,
            period_context: compile(&format!(
                r"[.?!](?=(?P<after_tok>{NON_WORD}|\s+(?P<next_tok>\S+)))"
            ))?,
            // Applied to single lines, so `$` is the end of the line as in Python.
            word: compile(&format!(
                r"{MULTI_CHAR}|(?={WORD_START})\S+?(?=\s|$|{NON_WORD}|{MULTI_CHAR}|,(?=$|\s|{NON_WORD}|{MULTI_CHAR}))|\S"
            ))?,
            boundary_realignment: compile(r#"\A["')\]}‘’“”«»]+?(?:\s+|(?=--)|(?m:$))"#)?,
            numeric: compile(r"^-?[.,]?\d[\d,.\-]*\.?$")?,
            initial: compile(r"^[^\W\d]\.$")?,
        })
    }

    /// The sentences of `text`, as NLTK's `sent_tokenize(text)` gives them. Errs only when a
    /// pattern exceeds its backtracking limit (on pathologically long input).
    pub fn sentences<'a>(&self, text: &'a str) -> Result<Vec<&'a str>> {
        let slices = self.slices_from_text(text)?;
        let realigned = self.realign_boundaries(text, &slices)?;
        Ok(realigned.into_iter().map(|r| py_slice(text, r)).collect())
    }

    /// Sentence spans: up to each possible end that the annotated context around it confirms
    /// (`_slices_from_text`).
    fn slices_from_text(&self, text: &str) -> Result<Vec<Range<usize>>> {
        let mut slices = Vec::new();
        let mut last_break = 0;
        for (end, context) in self.potential_end_contexts(text)? {
            if self.contains_sentbreak(context)? {
                slices.push(last_break..end.end_char.end);
                // The next sentence starts at the next token, or right after the end
                // character when punctuation follows it.
                last_break = end.next_tok_start.unwrap_or(end.end_char.end);
            }
        }
        // The last sentence has no trailing whitespace.
        slices.push(last_break..py_rstrip(text).len());
        Ok(slices)
    }

    /// Each possible sentence end with its context: the word before it, the end character and
    /// what follows. The word before is the text after the last ASCII whitespace since the
    /// previous word; an end is dropped when the next end's word overlaps its own (so "!!!"
    /// gives one context, at the last "!") (`_match_potential_end_contexts`).
    fn potential_end_contexts<'a>(&self, text: &'a str) -> Result<Vec<(EndContext, &'a str)>> {
        let mut contexts = Vec::new();
        let mut previous: Option<EndContext> = None;
        let mut previous_word = 0..0;
        for caps in self.period_context.captures_iter(text) {
            let caps = caps.context("matching Punkt's sentence-end pattern")?;
            // Both always take part: the lookahead is not optional.
            let (Some(end_char), Some(after)) = (caps.get(0), caps.name("after_tok")) else {
                continue;
            };
            let end = EndContext {
                end_char: end_char.range(),
                after_end: after.end(),
                next_tok_start: caps.name("next_tok").map(|m| m.start()),
            };
            let before = &text[previous_word.end..end.end_char.start];
            // NLTK's "last whitespace index" is 0 both when there is none and when it is the
            // first character; either way the word starts where the previous one did.
            let word_start = match before.rfind([' ', '\t', '\n', '\r', '\x0b', '\x0c']) {
                Some(i) if i > 0 => previous_word.end + i + 1,
                _ => previous_word.start,
            };
            let word = word_start..end.end_char.start;
            if let Some(prev) = previous.take() {
                if previous_word.end <= word.start {
                    let context = &text[previous_word.start..prev.after_end];
                    contexts.push((prev, context));
                }
            }
            previous = Some(end);
            previous_word = word;
        }
        if let Some(prev) = previous {
            let context = &text[previous_word.start..prev.after_end];
            contexts.push((prev, context));
        }
        Ok(contexts)
    }

    /// Whether a token other than the last is annotated as a sentence break
    /// (`text_contains_sentbreak`).
    fn contains_sentbreak(&self, context: &str) -> Result<bool> {
        let mut tokens = self.tokenize_words(context)?;
        for token in &mut tokens {
            self.annotate_first_pass(token);
        }
        for i in 1..tokens.len() {
            let (done, rest) = tokens.split_at_mut(i);
            self.annotate_second_pass(&mut done[i - 1], &rest[0])?;
        }
        let but_last = tokens.len().saturating_sub(1);
        Ok(tokens[..but_last].iter().any(|t| t.sentbreak))
    }

    /// Punkt's word tokens, line by line, skipping blank lines (`_tokenize_words`).
    fn tokenize_words<'a>(&self, text: &'a str) -> Result<Vec<Token<'a>>> {
        let mut tokens = Vec::new();
        for line in text.split('\n') {
            if line.trim_matches(is_py_space).is_empty() {
                continue;
            }
            for m in self.word.find_iter(line) {
                let tok = m.context("matching Punkt's word pattern")?.as_str();
                let lower = tok.to_lowercase();
                let typ = if self.numeric.is_match(&lower)? {
                    "##number##".to_string()
                } else {
                    lower
                };
                tokens.push(Token {
                    tok,
                    typ,
                    period_final: tok.ends_with('.'),
                    sentbreak: false,
                    abbr: false,
                    ellipsis: false,
                });
            }
        }
        Ok(tokens)
    }

    /// Decisions from the token alone: sentence-end punctuation and period-final words are
    /// breaks, unless the word is a known abbreviation (or its last hyphenated part is);
    /// runs of periods are ellipses.
    fn annotate_first_pass(&self, token: &mut Token) {
        let tok = token.tok;
        if [".", "?", "!"].contains(&tok) {
            token.sentbreak = true;
        } else if token.is_ellipsis() {
            token.ellipsis = true;
        } else if token.period_final && !tok.ends_with("..") {
            let stem = tok[..tok.len() - 1].to_lowercase();
            let last_part = stem.rsplit('-').next().unwrap_or_default();
            if self.abbrev_types.contains(&stem) || self.abbrev_types.contains(last_part) {
                token.abbr = true;
            } else {
                token.sentbreak = true;
            }
        }
    }

    /// Revises the decision on a period-final `token` given the `next` one: known
    /// collocations, the orthographic and frequent-sentence-starter heuristics after
    /// abbreviations and ellipses, and initials and numbers (`_second_pass_annotation`).
    fn annotate_second_pass(&self, token: &mut Token, next: &Token) -> Result<()> {
        if !token.period_final {
            return Ok(());
        }
        let typ = token.type_no_period();
        let next_typ = next.type_no_sentperiod();
        let is_initial = self.initial.is_match(token.tok)?;
        let is_collocation = self
            .collocations
            .get(typ)
            .is_some_and(|seconds| seconds.contains(next_typ));
        let is_number = typ == "##number##";
        if is_collocation {
            token.sentbreak = false;
            token.abbr = true;
            return Ok(());
        }
        if (token.abbr || token.ellipsis) && !is_initial {
            let sent_starter = self.ortho_heuristic(next) == Some(true)
                || (next.first_upper() && self.sent_starters.contains(next_typ));
            if sent_starter {
                token.sentbreak = true;
                return Ok(());
            }
        }
        if is_initial || is_number {
            match self.ortho_heuristic(next) {
                Some(false) => {
                    token.sentbreak = false;
                    token.abbr = true;
                }
                // An initial before a word never seen in lower case is one (e.g. "J. Bach").
                None if is_initial
                    && next.first_upper()
                    && self.ortho(next_typ) & ORTHO_LC == 0 =>
                {
                    token.sentbreak = false;
                    token.abbr = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn ortho(&self, typ: &str) -> u32 {
        self.ortho_context.get(typ).copied().unwrap_or(0)
    }

    /// Whether `token` starts a sentence, from the cases its type was seen in; None when
    /// unsure (`_ortho_heuristic`).
    fn ortho_heuristic(&self, token: &Token) -> Option<bool> {
        if PUNCTUATION.contains(&token.tok) {
            return Some(false);
        }
        let ortho = self.ortho(token.type_no_sentperiod());
        // Capitalized, seen in lower case, never capitalized mid-sentence: a sentence start.
        if token.first_upper() && ortho & ORTHO_LC != 0 && ortho & ORTHO_MID_UC == 0 {
            return Some(true);
        }
        // Lower case, and seen capitalized or never seen starting a sentence in lower case.
        if token.first_lower() && (ortho & ORTHO_UC != 0 || ortho & ORTHO_BEG_LC == 0) {
            return Some(false);
        }
        None
    }

    /// Moves closing quotes and brackets that follow a sentence end from the start of the
    /// next sentence to the end of that one, dropping sentences left empty
    /// (`_realign_boundaries`).
    fn realign_boundaries(&self, text: &str, slices: &[Range<usize>]) -> Result<Vec<Range<usize>>> {
        let mut realigned = Vec::new();
        let mut shift = 0;
        for (i, slice) in slices.iter().enumerate() {
            let sentence = slice.start + shift..slice.end;
            let Some(next) = slices.get(i + 1) else {
                if !sentence.is_empty() {
                    realigned.push(sentence);
                }
                continue;
            };
            // Matched within the next sentence alone, so `$` is its end.
            match self
                .boundary_realignment
                .find(py_slice(text, next.clone()))?
            {
                Some(m) => {
                    realigned.push(sentence.start..next.start + py_rstrip(m.as_str()).len());
                    shift = m.end();
                }
                None => {
                    shift = 0;
                    if !sentence.is_empty() {
                        realigned.push(sentence);
                    }
                }
            }
        }
        Ok(realigned)
    }
}
