//! NLTK's `PorterStemmer` (nltk 3.10.4) in its default `NLTK_EXTENSIONS` mode, the stemmer of
//! METEOR's stem stage: Porter's 1980 algorithm with Martin Porter's later changes plus NLTK's
//! own (a pool of irregular forms, `ies`/`ied` on four-letter words, `y -> i` only after a
//! consonant, `alli` before `bli`, `fulli`, `logi`, two-letter `*o`). Words are slices of chars
//! because NLTK indexes Python strings by code point.

/// NLTK's table of irregular forms, each form with the stem it always gets.
const IRREGULAR_FORMS: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// `PorterStemmer().stem(word)`: lower-cased, then irregular forms from the pool, words of at
/// most two characters unchanged, everything else through steps 1a to 5b.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, stem)) = IRREGULAR_FORMS.iter().find(|(form, _)| *form == lower) {
        return stem.to_string();
    }
    // NLTK measures the word as given, before lower-casing (which can change its length).
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(w);
    }
    w.into_iter().collect()
}

/// Whether each char is a consonant: anything but a, e, i, o, u, and `y` only when it starts the
/// word or follows a vowel.
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let consonant = match c {
            'a' | 'e' | 'i' | 'o' | 'u' => false,
            'y' => i == 0 || !flags[i - 1],
            _ => true,
        };
        flags.push(consonant);
    }
    flags
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// Porter's m: the number of vowel-consonant boundaries in `[C](VC){m}[V]`.
fn measure(w: &[char]) -> usize {
    consonant_flags(w)
        .windows(2)
        .filter(|pair| !pair[0] && pair[1])
        .count()
}

fn contains_vowel(w: &[char]) -> bool {
    consonant_flags(w).iter().any(|&consonant| !consonant)
}

/// Condition *d: ends with a doubled consonant.
fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// Condition *o: ends consonant-vowel-consonant, the last not w, x or y; NLTK also counts a
/// two-letter vowel-consonant word.
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    // Suffixes are ASCII, so their byte length is their length in chars.
    w.len() >= suffix.len()
        && w[w.len() - suffix.len()..]
            .iter()
            .copied()
            .eq(suffix.chars())
}

/// `w` without its last `n` chars, followed by `replacement`.
fn replace_end(w: &[char], n: usize, replacement: &str) -> Vec<char> {
    w[..w.len() - n]
        .iter()
        .copied()
        .chain(replacement.chars())
        .collect()
}

/// A suffix, what replaces it, and the condition on the stem left without it.
type Rule = (&'static str, &'static str, fn(&[char]) -> bool);

/// The first rule whose suffix ends the word decides: it applies if its condition holds on the
/// stem, otherwise the word stays as it is (later rules are not tried).
fn apply_first(w: Vec<char>, rules: &[Rule]) -> Vec<char> {
    match rules.iter().find(|(suffix, _, _)| ends_with(&w, suffix)) {
        Some((suffix, replacement, condition)) => {
            let stem = &w[..w.len() - suffix.len()];
            if condition(stem) {
                replace_end(&w, suffix.len(), replacement)
            } else {
                w
            }
        }
        None => w,
    }
}

fn always(_: &[char]) -> bool {
    true
}

fn positive_measure(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn measure_above_one(stem: &[char]) -> bool {
    measure(stem) > 1
}

/// Plurals: `sses -> ss`, `ies -> i` (NLTK: `ie` for four-letter words, so dies -> die),
/// `ss -> ss`, `s -> `.
fn step1a(w: Vec<char>) -> Vec<char> {
    if w.len() == 4 && ends_with(&w, "ies") {
        return replace_end(&w, 3, "ie");
    }
    apply_first(
        w,
        &[
            ("sses", "ss", always),
            ("ies", "i", always),
            ("ss", "ss", always),
            ("s", "", always),
        ],
    )
}

/// Past tenses and gerunds: NLTK's `ied -> i` (`ie` for four letters), `(m>0) eed -> ee`, then
/// `ed`/`ing` after a vowel, with the stem tidied up (`at`/`bl`/`iz` get an `e` back, doubled
/// consonants other than l, s, z are undoubled, short cvc stems get an `e`).
fn step1b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ied") {
        return replace_end(&w, 3, if w.len() == 4 { "ie" } else { "i" });
    }
    if ends_with(&w, "eed") {
        return if positive_measure(&w[..w.len() - 3]) {
            replace_end(&w, 3, "ee")
        } else {
            w
        };
    }
    let Some(stem) = ["ed", "ing"]
        .iter()
        .filter(|suffix| ends_with(&w, suffix))
        .map(|suffix| &w[..w.len() - suffix.len()])
        .find(|stem| contains_vowel(stem))
    else {
        return w;
    };
    if ["at", "bl", "iz"]
        .iter()
        .any(|suffix| ends_with(stem, suffix))
    {
        return replace_end(stem, 0, "e");
    }
    if ends_double_consonant(stem) {
        return if matches!(stem[stem.len() - 1], 'l' | 's' | 'z') {
            stem.to_vec()
        } else {
            stem[..stem.len() - 1].to_vec()
        };
    }
    if measure(stem) == 1 && ends_cvc(stem) {
        return replace_end(stem, 0, "e");
    }
    stem.to_vec()
}

/// NLTK's `y -> i` only after a consonant that is not the whole stem (happy -> happi, but enjoy
/// and by stay).
fn step1c(w: Vec<char>) -> Vec<char> {
    fn consonant_before_y(stem: &[char]) -> bool {
        stem.len() > 1 && is_consonant(stem, stem.len() - 1)
    }
    apply_first(w, &[("y", "i", consonant_before_y)])
}

/// Double suffixes to single ones, `(m>0)`. NLTK applies `alli -> al` first and then step 2
/// again, and adds `fulli -> ful` and `logi -> log` (with the `l` counted in the stem).
fn step2(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "alli") && positive_measure(&w[..w.len() - 4]) {
        return step2(replace_end(&w, 4, "al"));
    }
    fn logi_condition(stem: &[char]) -> bool {
        let with_l: Vec<char> = stem.iter().copied().chain(['l']).collect();
        positive_measure(&with_l)
    }
    apply_first(
        w,
        &[
            ("ational", "ate", positive_measure),
            ("tional", "tion", positive_measure),
            ("enci", "ence", positive_measure),
            ("anci", "ance", positive_measure),
            ("izer", "ize", positive_measure),
            ("bli", "ble", positive_measure),
            ("alli", "al", positive_measure),
            ("entli", "ent", positive_measure),
            ("eli", "e", positive_measure),
            ("ousli", "ous", positive_measure),
            ("ization", "ize", positive_measure),
            ("ation", "ate", positive_measure),
            ("ator", "ate", positive_measure),
            ("alism", "al", positive_measure),
            ("iveness", "ive", positive_measure),
            ("fulness", "ful", positive_measure),
            ("ousness", "ous", positive_measure),
            ("aliti", "al", positive_measure),
            ("iviti", "ive", positive_measure),
            ("biliti", "ble", positive_measure),
            ("fulli", "ful", positive_measure),
            ("logi", "log", logi_condition),
        ],
    )
}

/// `-ic-`, `-full`, `-ness` and the like, `(m>0)`.
fn step3(w: Vec<char>) -> Vec<char> {
    apply_first(
        w,
        &[
            ("icate", "ic", positive_measure),
            ("ative", "", positive_measure),
            ("alize", "al", positive_measure),
            ("iciti", "ic", positive_measure),
            ("ical", "ic", positive_measure),
            ("ful", "", positive_measure),
            ("ness", "", positive_measure),
        ],
    )
}

/// Suffixes removed from stems with `m>1` (`ion` only after s or t).
fn step4(w: Vec<char>) -> Vec<char> {
    fn ion_condition(stem: &[char]) -> bool {
        measure(stem) > 1 && matches!(stem.last(), Some('s' | 't'))
    }
    apply_first(
        w,
        &[
            ("al", "", measure_above_one),
            ("ance", "", measure_above_one),
            ("ence", "", measure_above_one),
            ("er", "", measure_above_one),
            ("ic", "", measure_above_one),
            ("able", "", measure_above_one),
            ("ible", "", measure_above_one),
            ("ant", "", measure_above_one),
            ("ement", "", measure_above_one),
            ("ment", "", measure_above_one),
            ("ent", "", measure_above_one),
            ("ion", "", ion_condition),
            ("ou", "", measure_above_one),
            ("ism", "", measure_above_one),
            ("ate", "", measure_above_one),
            ("iti", "", measure_above_one),
            ("ous", "", measure_above_one),
            ("ive", "", measure_above_one),
            ("ize", "", measure_above_one),
        ],
    )
}

/// A final `e` goes when `m>1`, or when `m=1` and the stem does not end cvc. Both conditions are
/// tried, unlike a rule list.
fn step5a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

/// `ll -> l` when the word without its last `l` has `m>1`.
fn step5b(w: Vec<char>) -> Vec<char> {
    fn measure_with_one_l_above_one(stem: &[char]) -> bool {
        let with_l: Vec<char> = stem.iter().copied().chain(['l']).collect();
        measure(&with_l) > 1
    }
    apply_first(w, &[("ll", "l", measure_with_one_l_above_one)])
}
