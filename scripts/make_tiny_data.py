"""Generate the bundled tiny datasets and tokenizers that the tiny CPU recipes train on.

What it makes (all under data/tiny/, deterministic: fixed seeds, no clock, no hash-order use):

  longlora/   for recipes/tiny/longlora_sft.yaml (2-layer Llama, vocab 512, max_length 256)
    train.json, dev.json   JSON lists of {"instruction": str, "input": str, "output": str}
    texts.txt              the dev inputs as plain text, one per line (for perplexity)
                           (LongLoRA / Alpaca format). Passkey retrieval: `input` is the classic
                           filler ("The grass is green. The sky is blue. ...") of varying length with
                           "The pass key is NNNNN. Remember it. NNNNN is the pass key." at a random
                           sentence position; `output` is "The pass key is NNNNN.". About one item
                           in eight asks instead for the color of an object hidden the same way.
                           Some inputs start with the task description of LongLoRA's passkey test.
                           Each item is sized so that the full Llama-2 chat prompt the runner
                           builds (runner/data/instruction.rs, with the whole system prompt)
                           + output + EOS is at most 250 tokens.
    tokenizer.json         BPE, vocab exactly 512: <unk> 0, <s> 1, </s> 2, [PAD] 3; Llama-like
                           Metaspace pre-tokenizer with "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"
                           and "\\n" split off first and digits split into single digits;
                           post-processor prepends <s>.

  iag/        for recipes/tiny/iag_*.yaml (FiD T5 teacher -> T5 student, vocab 1024)
    train.json, dev.json   JSON lists of {"question": str, "answers": [str],
                           "ctxs": [{"title": str, "text": str, "score": float}] * 5, "pred": str}
                           (FiD's format plus IAG's generated document `pred`). Synthetic facts
                           about 1,200 fictional entities (founding year, founder, town, what it
                           is known for), each value one word from a set of 24 to 40 per fact;
                           2,400 training questions about the first 900 entities, 200 dev
                           questions about the other 300, so a dev answer cannot be remembered,
                           only read. One or two passages hold the answer, the others are
                           distractors (other entities, or other facts of the same entity).
                           ctxs are sorted by score, highest first. `pred` states the asked fact
                           rightly for about 70% of items and another entity's value otherwise
                           (an imagined document can be wrong; the retrieved passages are not).
    tokenizer.json         BPE, vocab exactly 1024: <pad> 0, </s> 1, <unk> 2; whitespace runs
                           normalized to one space (as T5's), Metaspace, punctuation split off;
                           every answer value is one token; post-processor appends </s>.

  coe/        for recipes/tiny/coe_multitask.yaml (ViT + connector + Llama decoder, vocab 512)
    images/*.png           32×32 drawings (written with zlib alone): one to four squares, circles
                           or triangles of one color, in distinct quadrants of a white square.
    train.json, dev.json   ScienceQA-style items (300 + 30): {id, image, question, choices, answer,
                           distractors, hint, lecture, solution, subject, grade, context_type,
                           category}; questions ask the color (natural science), the count (social
                           science) or the shape (language science), which `category` names; 40%
                           carry a text hint (context_type image+text). The rationale is lecture +
                           solution, as CoE's.
    tokenizer.json         BPE, vocab exactly 512: <|endoftext|> 0 (pad), <|im_start|> 1,
                           <|im_end|> 2, <img> 3, </img> 4, <imgpad> 5; "\n" one token (ChatML).

  qa_expert/  for QA-Expert-style recipes of kind longlora_sft (seed 002; khaimt/qa_expert)
    train.json, dev.json   JSON lists in the item format of khaimaitien/qa-expert-multi-hop-qa-V1.0
                           as its October 2023 card and the repo's train/README.md describe it:
                           {src, question, final_answer, answer, sub_questions: [{question, answer?,
                           paragraph, long_answer, unanswerable?}]}. Synthetic facts about made-up
                           guilds, shops and people. Single questions (src squad.json, boolq.json)
                           have exactly one sub-question (the reference code indexes
                           sub_questions[0]); multi-hop ones (musicque.json: bridge questions of 2
                           or 3 hops; gen_qa.json: comparisons of two entities) have one
                           sub-question per hop, each paragraph holding its fact. Some questions are
                           unanswerable from their paragraph (squad's and musique's negatives), and
                           one item in ten is deliberately long (long paragraphs; three hops or a
                           comparison) so that a length limit truncates it. 96 train and 16 dev
                           items; dev entities are disjoint from train's.
    tokenizer.json         BPE, vocab exactly 512: <unk> 0, <s> 1, </s> 2, <|bof|> 3, <|eof|> 4,
                           <|eot|> 5 (no [PAD]: QA-Expert pads with </s>); llama_tokenizer's
                           Metaspace with "\\n" split off and single digits; post-processor
                           prepends <s>. Trained on the training dialogues as QA-Expert tokenized
                           them (qa_expert_stripped: no whitespace around the markers).

Tokenizers are trained on a separately drawn draft corpus of the same generator, then used to
size the final items (so lengths are exact for the shipped tokenizer).

How to run (from the repository root):

  .venv/bin/python scripts/make_tiny_data.py              # writes data/tiny/
  .venv/bin/python scripts/make_tiny_data.py --out DIR    # writes DIR/longlora, DIR/iag, ...

It prints the length distributions and checks its own outputs (vocab sizes, special ids, that
every answer is in its positive passages, that the tokenizers load with
transformers' PreTrainedTokenizerFast when transformers is installed).
"""

import argparse
import json
import os
import random
import re
import statistics
import struct
import sys
import zlib
from pathlib import Path

# Single-threaded tokenizer training: keeps runs byte-identical.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]

# ---------------------------------------------------------------------------------------------
# LongLoRA passkey data
# ---------------------------------------------------------------------------------------------

# The prompt runner/data/instruction.rs builds for `template: llama2_chat` (LongLoRA's PROMPT_DICT,
# with Llama-2's whole system prompt). Lengths are measured with it.
LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
    "and positive in nature.\n\nIf a question does not make any sense, or is not factually "
    "coherent, explain why instead of answering something not correct. If you don't know the "
    "answer to a question, please don't share false information.\n"
)
# The shorter system prompt some write-ups quote; reported for comparison only.
SHORT_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.\n"
)


def llama2_prompt(instruction, inp, system=LLAMA2_SYSTEM):
    return f"[INST] <<SYS>>\n{system}<</SYS>> \n\n {instruction} \n{inp} [/INST]"


FILLER = [
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
]
TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there."
)
PASSKEY_QUESTIONS = [
    "What is the pass key?",
    "What is the pass key?",
    "What is the pass key? The pass key is",
    "What is the pass key in the text?",
    "Tell me the pass key.",
    "Find the pass key hidden in the text.",
    "Which number is the pass key?",
]
OBJECTS = ["ball", "kite", "door", "car", "hat", "cup", "boat", "box", "lamp", "chair", "shoe", "bike"]
COLORS = ["red", "orange", "purple", "white", "black", "pink", "brown", "gray", "silver", "gold"]
COLOR_QUESTIONS = [
    "What color is the {obj} in this text?",
    "What color is the {obj}?",
    "Which color does the text give the {obj}?",
]

LONGLORA_MAX_TOKENS = 250  # prompt + output + EOS, with the full system prompt
LONGLORA_MIN_FILLER = 2  # sentences, so the needle always has text around it


def longlora_spec(rng, used_keys):
    """The random choices of one item; its filler length is decided later, against a tokenizer."""
    if rng.random() < 0.125:
        obj, color = rng.choice(OBJECTS), rng.choice(COLORS)
        needle = f"The {obj} is {color}. Remember it. The {obj} is {color}."
        instruction = rng.choice(COLOR_QUESTIONS).format(obj=obj)
        output = f"The {obj} is {color}."
    else:
        while True:
            key = rng.randint(10000, 99999)
            if key not in used_keys:
                used_keys.add(key)
                break
        needle = f"The pass key is {key}. Remember it. {key} is the pass key."
        instruction = rng.choice(PASSKEY_QUESTIONS)
        output = f"The pass key is {key}."
    return {
        "instruction": instruction,
        "output": output,
        "needle": needle,
        "task": rng.random() < 0.35,  # starts with LongLoRA's passkey task description
        "lines": rng.random() < 0.5,  # LongLoRA's eval layout: parts on their own lines
        "start": rng.randrange(len(FILLER)) if rng.random() < 0.3 else 0,  # filler phase
        "depth": rng.random(),  # where the needle goes, as a fraction of the filler
        "target": rng.randint(0, 1_000_000),  # length target, scaled once the range is known
    }


def longlora_item(spec, n_filler):
    filler = [FILLER[(spec["start"] + i) % len(FILLER)] for i in range(n_filler)]
    at = round(spec["depth"] * n_filler)
    before, after = " ".join(filler[:at]), " ".join(filler[at:])
    parts = [TASK_DESCRIPTION] if spec["task"] else []
    if spec["lines"]:
        parts += [p for p in (before, spec["needle"], after) if p]
        text = "\n".join(parts)
    else:
        text = " ".join(parts + [p for p in (before, spec["needle"], after) if p])
    return {"instruction": spec["instruction"], "input": text, "output": spec["output"]}


def longlora_length(tok, item, system=LLAMA2_SYSTEM):
    """Tokens the runner trains on: BOS + prompt, output (no specials), EOS."""
    source = tok.encode(llama2_prompt(item["instruction"], item["input"], system)).ids
    target = tok.encode(item["output"], add_special_tokens=False).ids
    return len(source) + len(target) + 1


def llama_tokenizer(corpus, specials=("<unk>", "<s>", "</s>", "[PAD]"), isolated=r"\[/?INST\]|<</?SYS>>|\n"):
    """A 512-token BPE with Llama's conventions (Metaspace, single digits, BOS prepended);
    `specials` take the first ids, `isolated` are split off before Metaspace."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(isolated), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=2,
        special_tokens=list(specials),
        initial_alphabet=PRINTABLE + ["\u2581", "\n"],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tok


def make_longlora(out):
    # Draft corpus for the tokenizer: same generator, its own seed, filler lengths drawn freely.
    draft_rng = random.Random(1001)
    draft = []
    for _ in range(600):
        spec = longlora_spec(draft_rng, set())
        item = longlora_item(spec, draft_rng.randint(LONGLORA_MIN_FILLER, 24))
        # Prompt and output as separate texts: the runner tokenizes them separately.
        draft += [llama2_prompt(item["instruction"], item["input"]), item["output"]]
    tok = llama_tokenizer(draft)
    assert tok.get_vocab_size(with_added_tokens=True) == 512, tok.get_vocab_size()

    # The final items, each sized to a length target spread uniformly over what fits.
    rng = random.Random(1234)
    used = set()
    splits = {"train": 400, "dev": 40}
    data = {}
    for split, count in splits.items():
        items = []
        for _ in range(count):
            spec = longlora_spec(rng, used)
            shortest = longlora_length(tok, longlora_item(spec, LONGLORA_MIN_FILLER))
            assert shortest <= LONGLORA_MAX_TOKENS, shortest
            target = shortest + spec["target"] * (LONGLORA_MAX_TOKENS - shortest) // 1_000_000
            n = LONGLORA_MIN_FILLER
            while longlora_length(tok, longlora_item(spec, n + 1)) <= target:
                n += 1
            items.append(longlora_item(spec, n))
        data[split] = items

    out.mkdir(parents=True, exist_ok=True)
    for split, items in data.items():
        write_json(out / f"{split}.json", items)
    tok.save(str(out / "tokenizer.json"), pretty=False)

    # Checks and report.
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    specials = {t: tok.token_to_id(t) for t in ["<unk>", "<s>", "</s>", "[PAD]"]}
    assert specials == {"<unk>": 0, "<s>": 1, "</s>": 2, "[PAD]": 3}, specials
    assert tok.get_vocab_size(with_added_tokens=True) == 512
    enc = tok.encode("The pass key is 58231.")
    assert enc.tokens[0] == "<s>" and enc.tokens[-6:-1] == list("58231"), enc.tokens
    assert tok.decode(enc.ids, skip_special_tokens=True) == "The pass key is 58231."
    print(f"longlora tokenizer: vocab {tok.get_vocab_size()}, specials {specials}")
    print(f"  'The pass key is 58231.' -> {enc.tokens}")
    print(f"  system prompt: {len(tok.encode(LLAMA2_SYSTEM, add_special_tokens=False).ids)} tokens")
    for split, items in data.items():
        full = [longlora_length(tok, it) for it in items]
        short = [longlora_length(tok, it, SHORT_SYSTEM) for it in items]
        unk = sum(tok.encode(llama2_prompt(it["instruction"], it["input"]) + it["output"]).ids.count(0) for it in items)
        assert max(full) <= 256 and unk == 0, (max(full), unk)
        kinds = sum("pass key" in it["output"] for it in items)
        print(f"  {split}: {len(items)} items ({kinds} passkey, {len(items) - kinds} color); <unk> {unk}")
        print(f"    tokens, runner's full Llama-2 prompt: {stats(full)}")
        print(f"    tokens, short system prompt:          {stats(short)}")
        print(f"    histogram (full): {histogram(full, [100, 125, 150, 175, 200, 225, 250, 256])}")
    check_transformers(out / "tokenizer.json", ["<unk>", "<s>", "</s>", "[PAD]"])
    # Long plain text for sliding-window perplexity (`runner perplexity`, evaluation.perplexity):
    # the dev inputs, one document per line.
    dev = json.loads((out / "dev.json").read_text())
    texts = [" ".join(it["input"].split()) for it in dev]
    (out / "texts.txt").write_text("\n".join(texts) + "\n")
    print(f"  texts.txt: {len(texts)} documents, {sum(len(tok.encode(t).ids) for t in texts)} tokens")


# ---------------------------------------------------------------------------------------------
# IAG synthetic facts
# ---------------------------------------------------------------------------------------------

ONSETS = ["b", "br", "d", "dr", "f", "g", "gl", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "th", "v", "z"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "n", "l", "r", "x", "m", "sk", "nd"]
KINDS = [
    "guild", "company", "school", "library", "theater", "museum", "bakery", "band", "club",
    "monastery", "workshop", "observatory", "brewery", "orchestra", "shipyard", "academy",
]
IAG_KNOWN_FOR = [  # one word each: an answer is one token
    "bells", "lanterns", "silk", "charts", "cakes", "clocks", "maps", "keys", "rugs", "songs",
    "kites", "bowls", "flutes", "ink", "masks", "cider", "soldiers", "bridges", "candles", "dice",
    "hats", "lamps", "bread", "glass",
]
ATTRS = ["year", "founder", "town", "known"]
QUESTIONS = {
    "year": ["When was {e} founded?", "In what year was {e} founded?", "What year was {e} established?"],
    "founder": ["Who founded {e}?", "Who was the founder of {e}?"],
    "town": ["Where is {e} located?", "In which town is {e}?"],
    "known": ["What is {e} known for?", "What is {e} famous for?"],
}
# First sentence of a passage (names the entity) and a follow-up sentence (pronoun).
FIRST = {
    "year": ["{e} was founded in {v}.", "{e} was established in {v}."],
    "founder": ["{e} was founded by {v}.", "{v} founded {e}."],
    "town": ["{e} is a {k} in {v}.", "{e} is a {k} based in {v}."],
    "known": ["{e} is a {k} known for its {v}.", "{e} is famous for its {v}."],
}
FOLLOW = {
    "year": ["It was founded in {v}.", "It dates from {v}."],
    "founder": ["It was started by {v}.", "Its founder was {v}."],
    "town": ["It is located in {v}.", "It stands in {v}."],
    "known": ["It is known for its {v}.", "People know it for its {v}."],
}
# IAG's generated background documents: a different, chattier register.
PRED = {
    "year": ["{e} is an old {k}, first opened in {v}.", "Records show that the {k} {e} began in {v}."],
    "founder": ["{e} is a {k} that {v} started long ago.", "The {k} {e} owes its start to {v}."],
    "town": ["{e} is a well known {k} in the town of {v}.", "Visitors find the {k} {e} in {v}."],
    "known": ["{e} is a {k} loved for its {v}.", "Most people link the {k} {e} with its {v}."],
}
PRED_EXTRA = {
    "year": "It was founded in {v}.",
    "founder": "Its founder was {v}.",
    "town": "It is in {v}.",
    "known": "It is known for {v}.",
}
PRED_WRONG = 0.3  # share of imagined documents that state a wrong value for the asked fact
IAG_ENTITIES = 1200  # entities of the synthetic world
IAG_SEEN = 900  # training questions are about these; dev questions about the others
IAG_TRAIN = 2400
IAG_DEV = 200
IAG_PASSAGE_MAX = 48  # recipes/tiny/iag_distill.yaml teacher.passage_max_length
IAG_STUDENT_MAX = 64  # student.max_length


def name(rng, syllables):
    s = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))
    return s.capitalize()


def iag_world(rng, n_entities=None):
    """Entities with four facts each. Every value is one word (one token), drawn from a small
    set per fact, and the entities are many: a fact cannot be memorised from the training
    answers, only read from a passage (or an imagined document)."""
    n_entities = n_entities or IAG_ENTITIES
    names, seen = [], set()
    while len(names) < n_entities:
        n = name(rng, 2)
        if n not in seen and len(n) <= 9:
            seen.add(n)
            names.append(n)
    founders, towns = [], []
    for pool, size, syl in ((founders, 40, 1), (towns, 40, 2)):
        while len(pool) < size:
            n = name(rng, syl)
            if n not in seen and 3 <= len(n) <= 8:
                seen.add(n)
                pool.append(n)
    years = [str(y) for y in sorted(rng.sample(range(1500, 2000), 40))]
    world = []
    for e in names:
        world.append(
            {
                "name": e,
                "kind": rng.choice(KINDS),
                "year": rng.choice(years),
                "founder": rng.choice(founders),
                "town": rng.choice(towns),
                "known": rng.choice(IAG_KNOWN_FOR),
            }
        )
    return world


def mentions(text, value):
    """Whether `value` occurs in `text` as a whole word ("ink" is not in "Minkim")."""
    return re.search(r"\b" + re.escape(value) + r"\b", text) is not None


def passage(rng, ent, attrs):
    """A passage about `ent` stating attrs[0] (and attrs[1] if given)."""
    a = attrs[0]
    text = rng.choice(FIRST[a]).format(e=ent["name"], k=ent["kind"], v=ent[a])
    if len(attrs) > 1:
        text += " " + rng.choice(FOLLOW[attrs[1]]).format(v=ent[attrs[1]])
    return text


def fid_text(q, title, text):
    # runner/models/fid.rs passage_text
    return f"question: {q} title: {title} context: {text}"


def fits_passage(tok, q, title, text):
    return len(tok.encode(fid_text(q, title, text)).ids) <= IAG_PASSAGE_MAX


def iag_item(rng, world, ent, attr, tok):
    q = rng.choice(QUESTIONS[attr]).format(e=ent["name"])
    answer = ent[attr]
    others = [a for a in ATTRS if a != attr]

    def sized(e, attrs):
        # Two facts when they fit in the teacher's passage length, else one.
        text = passage(rng, e, attrs)
        if tok is not None and len(attrs) > 1 and not fits_passage(tok, q, e["name"], text):
            text = passage(rng, e, attrs[:1])
        return text

    ctxs = []
    n_pos = 2 if rng.random() < 0.3 else 1
    for _ in range(n_pos):
        attrs = [attr] + ([rng.choice(others)] if rng.random() < 0.6 else [])
        if rng.random() < 0.3 and len(attrs) == 2:
            attrs.reverse()  # answer in the follow-up sentence
        ctxs.append({"title": ent["name"], "text": sized(ent, attrs), "score": rng.gauss(80.0, 2.5), "pos": True})
    if rng.random() < 0.35:  # the same entity, other facts
        attrs = rng.sample(others, 2 if rng.random() < 0.5 else 1)
        ctxs.append({"title": ent["name"], "text": sized(ent, attrs), "score": rng.gauss(77.5, 2.5), "pos": False})
    while len(ctxs) < 5:
        other = rng.choice(world)
        if other is ent or any(c["title"] == other["name"] for c in ctxs):
            continue
        hard = rng.random() < 0.25  # same kind of fact as asked
        first = attr if hard else rng.choice(ATTRS)
        attrs = [first] + ([rng.choice([a for a in ATTRS if a != first])] if rng.random() < 0.5 else [])
        text = sized(other, attrs)
        if mentions(text, answer):
            continue
        ctxs.append({"title": other["name"], "text": text, "score": rng.gauss(75.5 if hard else 73.0, 2.5), "pos": False})

    for c in ctxs:
        assert mentions(c["text"], answer) == c["pos"], (answer, c)
    ctxs.sort(key=lambda c: -c["score"])
    top3 = any(c["pos"] for c in ctxs[:3])

    # An imagined document is right about the asked fact only some of the time: otherwise it
    # states another entity's value (the generator's hallucination), which the teacher's
    # retrieved passages can correct.
    imagined = answer
    if rng.random() < PRED_WRONG:
        imagined = rng.choice([e[attr] for e in world if e[attr] != answer])
    pred = rng.choice(PRED[attr]).format(e=ent["name"], k=ent["kind"], v=imagined)
    if rng.random() < 0.6:
        extra = rng.choice(others)
        longer = pred + " " + PRED_EXTRA[extra].format(v=ent[extra])
        if tok is None or len(tok.encode(q + "\n" + longer).ids) <= IAG_STUDENT_MAX:
            pred = longer

    item = {
        "question": q,
        "answers": [answer],
        "ctxs": [{"title": c["title"], "text": c["text"], "score": round(c["score"], 3)} for c in ctxs],
        "pred": pred,
    }
    return item, top3


IAG_VOCAB = 1024  # recipes/tiny/iag_*.yaml arch.vocab_size


def t5_tokenizer(corpus):
    # Words and punctuation apart, and a vocabulary large enough that every answer value is
    # one whole token.
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Replace(Regex(r"\s+"), " ")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=IAG_VOCAB,
        min_frequency=2,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=PRINTABLE + ["\u2581"],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok


def make_iag(out):
    world = iag_world(random.Random(2024))
    pairs = [(e, a) for e in world for a in ATTRS]

    # Draft corpus for the tokenizer, drawn with its own seed over all (entity, fact) pairs.
    draft_rng = random.Random(2025)
    draft = []
    for e, a in pairs:
        item, _ = iag_item(draft_rng, world, e, a, None)
        draft += [fid_text(item["question"], c["title"], c["text"]) for c in item["ctxs"]]
        draft += [item["question"] + "\n" + item["pred"]] + item["answers"]
    tok = t5_tokenizer(draft)
    assert tok.get_vocab_size(with_added_tokens=True) == IAG_VOCAB, tok.get_vocab_size()

    rng = random.Random(4321)
    seen = [(e, a) for e in world[:IAG_SEEN] for a in ATTRS]
    unseen = [(e, a) for e in world[IAG_SEEN:] for a in ATTRS]
    chosen = {"train": rng.sample(seen, IAG_TRAIN), "dev": rng.sample(unseen, IAG_DEV)}
    data = {"train": [], "dev": []}
    top3 = {"train": 0, "dev": 0}
    for split, questions in chosen.items():
        for e, a in questions:
            item, in_top3 = iag_item(rng, world, e, a, tok)
            data[split].append(item)
            top3[split] += in_top3

    out.mkdir(parents=True, exist_ok=True)
    for split, items in data.items():
        write_json(out / f"{split}.json", items)
    tok.save(str(out / "tokenizer.json"), pretty=False)

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    specials = {t: tok.token_to_id(t) for t in ["<pad>", "</s>", "<unk>"]}
    assert specials == {"<pad>": 0, "</s>": 1, "<unk>": 2}, specials
    assert tok.get_vocab_size(with_added_tokens=True) == IAG_VOCAB
    enc = tok.encode("When was Zorblat founded?\nIn 1734.")
    assert enc.tokens[-1] == "</s>", enc.tokens
    for key in ATTRS:
        for value in {e[key] for e in world}:
            assert len(tok.encode(value).ids) == 2, (value, tok.encode(value).tokens)
    assert tok.decode(enc.ids, skip_special_tokens=True) == "When was Zorblat founded? In 1734."
    print(f"iag tokenizer: vocab {tok.get_vocab_size()}, specials {specials}")
    print(f"  'When was Zorblat founded?\\nIn 1734.' -> {enc.tokens}")
    for split, items in data.items():
        pos_len, neg_len, stu_len, ans_len, unk = [], [], [], [], 0
        for it in items:
            for c in it["ctxs"]:
                ids = tok.encode(fid_text(it["question"], c["title"], c["text"])).ids
                unk += ids.count(2)
                (pos_len if mentions(c["text"], it["answers"][0]) else neg_len).append(len(ids))
            ids = tok.encode(it["question"] + "\n" + it["pred"]).ids
            unk += ids.count(2)
            stu_len.append(len(ids))
            ans_len.append(len(tok.encode(it["answers"][0]).ids))
        assert unk == 0 and max(pos_len) <= IAG_PASSAGE_MAX and max(stu_len) <= IAG_STUDENT_MAX
        n_pos = [sum(mentions(c["text"], it["answers"][0]) for c in it["ctxs"]) for it in items]
        print(f"  {split}: {len(items)} items; answer passages per item 1: {n_pos.count(1)}, 2: {n_pos.count(2)};"
              f" an answer passage in the top 3 by score: {top3[split]}/{len(items)}; <unk> {unk}")
        print(f"    FiD passage (with </s>), answer passages: {stats(pos_len)}")
        print(f"    FiD passage (with </s>), distractors:     {stats(neg_len)}")
        print(f"    student question\\npred (with </s>):       {stats(stu_len)}")
        print(f"    answer (with </s>):                        {stats(ans_len)}")
    check_transformers(out / "tokenizer.json", ["<pad>", "</s>", "<unk>"], IAG_VOCAB)


# ---------------------------------------------------------------------------------------------
# CoE: drawn shapes with ScienceQA-style questions
# ---------------------------------------------------------------------------------------------

COE_IMAGE_SIZE = 32  # configs/models/vit-tiny.yaml image_size
COE_COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (230, 200, 30)}
COE_SHAPES = ["square", "circle", "triangle"]
COE_COUNT_WORDS = ["one", "two", "three", "four"]
COE_HINTS = [
    "The picture shows a drawing on white paper.",
    "A child drew these shapes in art class.",
    "The shapes are stickers on a card.",
]
COE_LECTURES = {
    "color": "Lecture: Color is how an object looks in the light. Red, blue, green and yellow are colors.",
    "count": "Lecture: To count objects, point to each one and say the next number.",
    "shape": "Lecture: A shape is the outline of an object. Squares have four equal sides, circles are round, triangles have three sides.",
}
# The special tokens runner/data/chatml.rs looks up, pad first.
COE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<imgpad>"]


def png(pixels):
    """A truecolor PNG of rows of (r, g, b), written with zlib alone (no imaging library)."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def draw(rng, shape, color, count):
    """`count` shapes in distinct quadrants of a white square, each 9–11 pixels across."""
    n = COE_IMAGE_SIZE
    pixels = [[(255, 255, 255)] * n for _ in range(n)]
    for quadrant in rng.sample(range(4), count):
        size = rng.randint(9, 11)
        x0 = (quadrant % 2) * 16 + rng.randint(1, 16 - size - 1)
        y0 = (quadrant // 2) * 16 + rng.randint(1, 16 - size - 1)
        for dy in range(size):
            for dx in range(size):
                if shape == "square":
                    inside = True
                elif shape == "circle":
                    r = (size - 1) / 2
                    inside = (dx - r) ** 2 + (dy - r) ** 2 <= r * r + 0.5
                else:  # triangle, apex up
                    half = (dy + 1) * size / (2 * size)
                    inside = abs(dx - (size - 1) / 2) <= half
                if inside:
                    pixels[y0 + dy][x0 + dx] = COE_COLORS[color]
    return png(pixels)


def coe_item(rng, n, kind):
    shape, color, count = rng.choice(COE_SHAPES), rng.choice(list(COE_COLORS)), rng.randint(1, 4)
    plural = shape + ("s" if count > 1 else "")
    if kind == "color":
        question = rng.choice([f"What color are the {plural}?" if count > 1 else f"What color is the {shape}?",
                               "Which color do you see in the picture?"])
        answer, pool = color, list(COE_COLORS)
        solution = f"Solution: Look at the picture. The {plural} {'are' if count > 1 else 'is'} {color}. So the answer is {color}."
        subject, grade = "natural science", "grade1"
    elif kind == "count":
        question = rng.choice([f"How many {shape}s are in the picture?", f"How many {shape}s can you count?"])
        answer, pool = COE_COUNT_WORDS[count - 1], COE_COUNT_WORDS
        solution = f"Solution: Count the {shape}s one by one. There {'are' if count > 1 else 'is'} {answer}. So the answer is {answer}."
        subject, grade = "social science", "grade2"
    else:
        question = rng.choice(["Which shape is in the picture?", f"What shape are the {color} objects?"])
        answer, pool = shape, COE_SHAPES
        solution = f"Solution: The {color} objects in the picture are {plural}. So the answer is {shape}."
        subject, grade = "language science", "grade1"
    distractors = [c for c in pool if c != answer]
    rng.shuffle(distractors)
    distractors = distractors[:2]
    choices = distractors + [answer]
    rng.shuffle(choices)
    hint = rng.choice(COE_HINTS) if rng.random() < 0.4 else ""
    item_id = f"coe-{n:04d}"
    return {
        "id": item_id,
        "image": f"{item_id}.png",
        "question": question,
        "choices": choices,
        "answer": answer,
        "distractors": distractors,
        "hint": hint,
        "lecture": COE_LECTURES[kind],
        "solution": solution,
        "subject": subject,
        "grade": grade,
        "context_type": "image+text" if hint else "image",
        # The question type, as MLLM-DataEngine's classes: error rates are reported by it.
        "category": kind,
    }, draw(rng, shape, color, count)


def coe_tokenizer(corpus):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=2,
        special_tokens=COE_SPECIALS,
        initial_alphabet=PRINTABLE + ["\u2581", "\n"],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def make_coe(out):
    rng = random.Random(3003)
    kinds = ["color", "count", "shape"]
    items, images = [], {}
    for n in range(330):
        item, image = coe_item(rng, n, kinds[n % 3])
        items.append(item)
        images[item["image"]] = image
    data = {"train": items[:300], "dev": items[300:]}
    # The tokenizer learns from the texts the CoE prompts and targets are made of.
    corpus = []
    for it in items:
        corpus += [
            f"Picture: <img>{it['image']}</img>\nContext: {it['hint']}\nAnswer: {it['answer']}\n",
            "Refer to the following example, generate a question based on the above picture, context and the corresponding answer.",
            "generate a rationale based on the above picture, context, question and answer.",
            "generate at least 1 plausible yet incorrect answers which should be similar and grammatically consistent with the correct answer and seperate them with numbers like (1) (2) (3).",
            f"\nExample:\nQuestion: {it['question']}\nAnswer: {it['answer']}\nDistractors: (1) {it['distractors'][0]}\n(2) {it['distractors'][1]}\n",
            it["lecture"] + " " + it["solution"],
            "system\nYou are a helpful assistant.\nuser\nassistant\n",
        ]
    tok = coe_tokenizer(corpus)
    assert tok.get_vocab_size(with_added_tokens=True) == 512, tok.get_vocab_size()
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    for split, split_items in data.items():
        write_json(out / f"{split}.json", split_items)
    for name, image in sorted(images.items()):
        (out / "images" / name).write_bytes(image)
    tok.save(str(out / "tokenizer.json"), pretty=False)

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in COE_SPECIALS}
    assert list(ids.values()) == list(range(len(COE_SPECIALS))), ids
    assert len(tok.encode("\n").ids) == 1, "ChatML needs a one-token newline"
    counts = {k: sum(it["question"] and k == kinds[int(it["id"][4:]) % 3] for it in items) for k in kinds}
    print(f"coe: {len(data['train'])} train, {len(data['dev'])} dev items, {len(images)} images; kinds {counts}; specials {ids}")
    check_transformers(out / "tokenizer.json", COE_SPECIALS)


# ---------------------------------------------------------------------------------------------
# QA-Expert: multi-hop questions over synthetic facts (qa-expert-multi-hop-qa-V1.0's item format)
# ---------------------------------------------------------------------------------------------

# The system message of qa_expert/prompt_utils.py (khaimt/qa_expert), used here only to render
# items as the reference trains on them when reporting lengths.
QA_SYSTEM = (
    "This is a conversation between user and an artificial intelligence assistant. "
    "User will ask question and the assistant will use the function: `retrieve` "
    "to retrieve the most relevant context to answer the question. "
    "For complex question, assistant might need to use the function `retrieve` multiple times.\n"
    "`retrieve`: this function is useful for retrieving the most relevant information given a query. "
    "The only parameter of this function is: query(str): the query for retrieving relevant content.\n"
)
QA_KINDS = ["guild", "bakery", "library", "workshop", "theater", "school", "brewery", "museum"]
QA_JOBS = ["weaver", "baker", "sailor", "painter", "miller", "potter", "singer", "smith"]
# Sentences that carry no asked fact: the rest of a paragraph, many of them in a long one.
QA_ORG_FILLER = [
    "It has a small garden behind the main hall.",
    "Its members meet every spring to elect a new leader.",
    "The building was painted blue after a storm.",
    "Visitors often stop there on market days.",
    "A stone bridge leads to its front gate.",
    "Its old records are kept in a wooden chest.",
    "The roof was rebuilt twice in its history.",
    "Children from nearby villages come to see it.",
    "A bell rings there every evening at sunset.",
    "Its cellar is said to be very cold in winter.",
]
QA_PERSON_FILLER = [
    "{p} liked long walks by the river.",
    "Friends said {p} was quiet but kind.",
    "{p} kept a diary for many years.",
    "{p} travelled to the coast once a year.",
    "Late in life {p} moved to a small farm.",
    "{p} had two brothers and a sister.",
    "{p} wrote letters to an old teacher.",
    "Neighbours remember {p} singing at the harvest fair.",
]
QA_LONG_EVERY = 10  # one item in ten is long (QA_CYCLE's fifth)


KNOWN_FOR = [  # QA-Expert's organisations
    "copper bells", "glass lanterns", "blue silk", "star charts", "honey cakes", "clockwork birds",
    "salt maps", "iron keys", "wool rugs", "river songs", "paper kites", "stone bowls",
    "silver flutes", "green ink", "wooden masks", "pear cider", "tin soldiers", "rope bridges",
    "sand clocks", "red candles", "bone dice", "straw hats", "moon lamps", "fig bread",
]


def qa_world(rng, n_orgs):
    """Made-up organisations, each founded by its own made-up person."""
    seen, towns = set(), []
    while len(towns) < 14:
        n = name(rng, 2)
        if n not in seen and 4 <= len(n) <= 8:
            seen.add(n)
            towns.append(n)
    people = []
    while len(people) < n_orgs:
        full = f"{name(rng, 2)} {name(rng, 1)}"
        if full not in seen and len(full) <= 16:
            seen.add(full)
            people.append({"name": full, "town": rng.choice(towns), "job": rng.choice(QA_JOBS),
                           "born": str(rng.randint(1450, 1950))})
    orgs, pairs = [], set()
    while len(orgs) < n_orgs:
        n = name(rng, 2)
        kind, known = rng.choice(QA_KINDS), rng.choice(KNOWN_FOR)
        if n in seen or len(n) > 9 or (kind, known) in pairs:
            continue
        seen.add(n)
        pairs.add((kind, known))  # "the {kind} known for its {known}" names one organisation
        person = people[len(orgs)]
        orgs.append({"name": n, "kind": kind, "known": known, "town": rng.choice(towns),
                     "year": str(int(person["born"]) + rng.randint(20, 50)), "founder": person})
    return orgs


# Fact sentences (the first of each list is the one answers repeat) and questions.
QA_FACT = {
    "year": ["{e} was founded in {v}.", "{e} was established in {v}."],
    "town": ["{e} is a {k} in {v}.", "{e} is a {k} based in the town of {v}."],
    "founder": ["{e} was founded by {v}.", "{v} started {e}."],
    "known": ["{e} is known for its {v}.", "{e} is famous for its {v}."],
    "born": ["{p} was born in {v}.", "{p} was born in the town of {v}."],
    "job": ["{p} worked as a {v}.", "{p} was a {v} by trade."],
}
QA_ASK = {
    "year": "When was {e} founded?",
    "town": "In which town is {e}?",
    "founder": "Who founded {e}?",
    "born": "Where was {p} born?",
    "which": "Which {k} is known for its {v}?",
}
QA_UNKNOWN = {
    "year": "The context does not say when {e} was founded.",
    "town": "The context does not say in which town {e} is.",
    "founder": "The context does not say who founded {e}.",
    "born": "The context does not say where {p} was born.",
}
QA_LEAD = ["According to the context, ", "The context says that "]


def qa_fact(attr, ent, rng=None):
    """A sentence stating `attr` of an organisation (or of a person, for born/job)."""
    forms = QA_FACT[attr]
    form = forms[0] if rng is None else rng.choice(forms)
    if attr in ("born", "job"):
        return form.format(p=ent["name"], v=ent["town" if attr == "born" else "job"])
    v = ent["founder"]["name"] if attr == "founder" else ent[attr]
    return form.format(e=ent["name"], k=ent["kind"], v=v)


def qa_paragraph(rng, ent, attr, long, person=False, state=True):
    """A retrieved paragraph about `ent`: its other facts and filler, and `attr` if `state`."""
    own = ["born", "job"] if person else ["year", "town", "founder", "known"]
    others = [a for a in own if a != attr]
    n_other = len(others) if long else min(len(others), rng.randint(1, 2))
    sentences = [qa_fact(a, ent, rng) for a in rng.sample(others, n_other)]
    if person:
        filler = [f.format(p=ent["name"]) for f in QA_PERSON_FILLER]
    else:
        filler = list(QA_ORG_FILLER)
    sentences += rng.sample(filler, min(len(filler), rng.randint(6, 8)) if long else rng.randint(0, 1))
    rng.shuffle(sentences)
    if state:
        sentences.insert(rng.randint(0, min(1, len(sentences))), qa_fact(attr, ent, rng))
    return f"{ent['name']}. " + " ".join(sentences)  # titled, as Musique's paragraphs


def qa_sub(rng, question, ent, attr, long, person=False, answerable=True, span=True):
    """One sub-question: its paragraph, the complete answer, the span answer."""
    key = "town" if attr == "born" else attr
    value = ent["founder"]["name"] if attr == "founder" else ent[key]
    if answerable:
        sub = {"question": question, "paragraph": qa_paragraph(rng, ent, attr, long, person),
               "long_answer": rng.choice(QA_LEAD) + qa_fact(attr, ent)}
        if span:
            sub["answer"] = value
    else:
        fmt = {"p": ent["name"]} if person else {"e": ent["name"]}
        sub = {"question": question, "paragraph": qa_paragraph(rng, ent, attr, long, person, state=False),
               "long_answer": QA_UNKNOWN[attr].format(**fmt), "unanswerable": True}
        if span:
            sub["answer"] = None
    return sub


def qa_single(rng, org, long):
    """A single question (squad.json), sometimes unanswerable from its paragraph."""
    attr = rng.choice(["year", "town", "founder"] + (["born"] if rng.random() < 0.3 else []))
    ent, person = (org["founder"], True) if attr == "born" else (org, False)
    q = QA_ASK[attr].format(e=ent["name"], p=ent["name"])
    answerable = rng.random() >= 0.25
    sub = qa_sub(rng, q, ent, attr, long, person, answerable)
    return {"src": "squad.json", "question": q, "final_answer": sub["long_answer"],
            "answer": sub["answer"], "sub_questions": [sub]}


def qa_boolq(rng, org, towns, long):
    """A yes/no single question (boolq.json): reasoning, then the answer."""
    yes = rng.random() < 0.5
    town = org["town"] if yes else rng.choice([t for t in towns if t != org["town"]])
    q = f"Is {org['name']} in {town}?"
    sub = {"question": q, "paragraph": qa_paragraph(rng, org, "town", long)}
    verdict = "So the answer is yes." if yes else f"It is not in {town}, so the answer is no."
    sub["long_answer"] = f"{rng.choice(QA_LEAD)}{qa_fact('town', org)} {verdict}"
    return {"src": "boolq.json", "question": q, "final_answer": sub["long_answer"],
            "answer": "yes" if yes else "no", "sub_questions": [sub]}


def qa_bridge(rng, org, long):
    """A bridge question (musicque.json): each hop's answer names the next hop's entity."""
    p, k, known = org["founder"], org["kind"], org["known"]
    which = QA_ASK["which"].format(k=k, v=known)
    kind = "three" if long else rng.choice(["founder_born", "which_year"])
    # Musique's negatives: the last hop's paragraph lacks its fact.
    answerable = rng.random() >= 0.25
    if kind == "founder_born":
        q = f"In which town was the founder of {org['name']} born?"
        subs = [qa_sub(rng, QA_ASK["founder"].format(e=org["name"]), org, "founder", long),
                qa_sub(rng, QA_ASK["born"].format(p=p["name"]), p, "born", long, True, answerable)]
        known_part = f"{p['name']} founded {org['name']}"
        if answerable:
            thought = f"{known_part}, and {p['name']} was born in {p['town']}."
            final = f"The founder of {org['name']} was born in {p['town']}."
        else:
            thought = f"{known_part}, but the context does not say where {p['name']} was born."
            final = f"I cannot tell where the founder of {org['name']} was born."
    elif kind == "which_year":
        q = f"When was the {k} known for its {known} founded?"
        subs = [qa_sub(rng, which, org, "known", long),
                qa_sub(rng, QA_ASK["year"].format(e=org["name"]), org, "year", long, False, answerable)]
        subs[0]["answer"] = org["name"]
        subs[0]["long_answer"] = f"{rng.choice(QA_LEAD)}{org['name']} is the {k} known for its {known}."
        known_part = f"{org['name']} is the {k} known for its {known}"
        if answerable:
            thought = f"{known_part}, and it was founded in {org['year']}."
            final = f"The {k} known for its {known} was founded in {org['year']}."
        else:
            thought = f"{known_part}, but the context does not say when it was founded."
            final = f"I cannot tell when the {k} known for its {known} was founded."
    else:  # three hops
        q = f"In which town was the founder of the {k} known for its {known} born?"
        subs = [qa_sub(rng, which, org, "known", long),
                qa_sub(rng, QA_ASK["founder"].format(e=org["name"]), org, "founder", long),
                qa_sub(rng, QA_ASK["born"].format(p=p["name"]), p, "born", long, True, answerable)]
        subs[0]["answer"] = org["name"]
        subs[0]["long_answer"] = f"{rng.choice(QA_LEAD)}{org['name']} is the {k} known for its {known}."
        known_part = f"{org['name']} is the {k} known for its {known} and {p['name']} founded it"
        if answerable:
            thought = f"{known_part}; {p['name']} was born in {p['town']}."
            final = f"The founder of the {k} known for its {known} was born in {p['town']}."
        else:
            thought = f"{known_part}, but the context does not say where {p['name']} was born."
            final = f"I cannot tell where the founder of the {k} known for its {known} was born."
    for sub in subs:
        sub.setdefault("unanswerable", False)
    return {"src": "musicque.json", "question": q, "final_answer": f"{thought}\nFinal answer: {final}",
            "answer": subs[-1].get("answer"), "sub_questions": subs}


def qa_compare(rng, a, b, long):
    """A comparison of two entities (gen_qa.json); sub-questions carry no span answer."""
    if rng.random() < 0.5:
        q = f"Which was founded earlier, {a['name']} or {b['name']}?"
        subs = [qa_sub(rng, QA_ASK["year"].format(e=e["name"]), e, "year", long, span=False) for e in (a, b)]
        first = a if int(a["year"]) < int(b["year"]) else b
        thought = (f"{a['name']} was founded in {a['year']} and {b['name']} was founded in {b['year']}, "
                   f"so {first['name']} is older.")
        final = f"{first['name']} was founded earlier."
    else:
        q = f"Are {a['name']} and {b['name']} in the same town?"
        subs = [qa_sub(rng, QA_ASK["town"].format(e=e["name"]), e, "town", long, span=False) for e in (a, b)]
        thought = f"{a['name']} is in {a['town']} and {b['name']} is in {b['town']}."
        same = a["town"] == b["town"]
        final = f"Yes, both are in {a['town']}." if same else "No, they are in different towns."
    return {"src": "gen_qa.json", "question": q, "final_answer": f"{thought}\nFinal answer: {final}",
            "answer": None, "sub_questions": subs}


# The kinds of ten consecutive items: 40% single questions (squad, boolq), 60% multi-hop; the
# fifth is long, a three-hop bridge or a comparison of two long paragraphs, in turn.
QA_CYCLE = ["squad", "bridge", "compare", "squad", "long", "boolq", "bridge", "squad", "compare", "bridge"]


def qa_item(rng, orgs, org, towns, kind, long):
    if kind == "squad":
        return qa_single(rng, org, long)
    if kind == "boolq":
        return qa_boolq(rng, org, towns, long)
    if kind == "bridge":
        return qa_bridge(rng, org, long)
    # Same-town pairs now and then, so that "the same town?" is not always no; never equal years.
    same = [o for o in orgs if o is not org and o["town"] == org["town"] and o["year"] != org["year"]]
    others = same if same and rng.random() < 0.3 else [o for o in orgs if o is not org and o["year"] != org["year"]]
    return qa_compare(rng, org, rng.choice(others), long)


def qa_items(rng, orgs, towns, count):
    """`count` items over `orgs` in QA_CYCLE's proportions, no question twice."""
    items, asked = [], set()
    for i in range(count):
        kind = QA_CYCLE[i % len(QA_CYCLE)]
        long = kind == "long"
        if long:
            kind = "bridge" if (i // len(QA_CYCLE)) % 2 == 0 else "compare"
        item = qa_item(rng, orgs, orgs[i % len(orgs)], towns, kind, long)
        while item["question"] in asked:
            item = qa_item(rng, orgs, rng.choice(orgs), towns, kind, long)
        asked.add(item["question"])
        items.append(item)
    return items


def qa_expert_text(item):
    """The training text khaimt/qa_expert (commit 88c788a) builds from an item, as written before
    tokenization: "{role}: {content}<|eot|>\n" per message, the system message first."""
    msgs = [("user", item["question"])]
    subs = item["sub_questions"]
    if len(subs) > 1:
        before = None
        for sub in subs:
            call = "<|bof|>retrieve:\n" + json.dumps({"query": sub["question"]}, ensure_ascii=False) + "<|eof|>"
            msgs.append(("assistant", call if before is None else f"{before}\n{call}"))
            msgs.append(("retrieved context", sub["paragraph"]))
            before = sub["long_answer"].strip()
        msgs.append(("assistant", f"{before}\nSummary: {item['final_answer'].strip()}"))
    else:
        call = "<|bof|>retrieve:\n" + json.dumps({"query": item["question"]}, ensure_ascii=False) + "<|eof|>"
        msgs += [("assistant", call), ("retrieved context", subs[0]["paragraph"]), ("assistant", item["final_answer"])]
    return "".join(f"{role}: {text}<|eot|>\n" for role, text in [("system", QA_SYSTEM)] + msgs)


QA_MARKERS = ["<|bof|>", "<|eof|>", "<|eot|>"]


def qa_expert_stripped(item):
    """The text as QA-Expert's tokenizer saw it: transformers 4.34's legacy added tokens strip the
    whitespace on both sides of each marker (runner/data/qa_expert.rs does the same)."""
    return re.sub(r"\s*(<\|bof\|>|<\|eof\|>|<\|eot\|>)\s*", r"\1", qa_expert_text(item))


def make_qa_expert(out):
    rng = random.Random(5005)
    orgs = qa_world(rng, 48)
    towns = sorted({o["town"] for o in orgs} | {o["founder"]["town"] for o in orgs})
    data = {"train": qa_items(rng, orgs[:38], towns, 96), "dev": qa_items(rng, orgs[38:], towns, 16)}

    # Checks: the format the reference reads, facts where they belong, no entity in both splits.
    for split, items in data.items():
        for it in items:
            subs = it["sub_questions"]
            assert it["question"] and it["final_answer"] and subs, it
            assert (len(subs) == 1) == (it["src"] in ("squad.json", "boolq.json")), it
            for sub in subs:
                assert sub["question"] and sub["paragraph"] and sub["long_answer"], sub
                if sub.get("answer") and not sub.get("unanswerable"):
                    assert sub["answer"] in sub["paragraph"], sub
                if sub.get("unanswerable"):
                    assert "does not say" in sub["long_answer"], sub
        questions = [it["question"] for it in items]
        assert len(set(questions)) == len(questions), split
    train_names = {o["name"] for o in orgs[:38]} | {o["founder"]["name"] for o in orgs[:38]}
    dev_text = json.dumps(data["dev"])
    assert not any(n in dev_text for n in train_names)

    out.mkdir(parents=True, exist_ok=True)
    for split, items in data.items():
        write_json(out / f"{split}.json", items)

    # A tokenizer in which the three markers are single tokens (ids 3-5; QA-Expert pads with
    # </s>, so there is no [PAD]), trained on the training dialogues. Training does not split
    # added tokens off, so each marker is given to it as "\n": a split of its own that BPE cannot
    # merge, after which the next word gets no Metaspace prefix, as after a marker when encoding.
    # The markers' own characters then take no merges ("<|", "|>", ...).
    marker = re.compile("|".join(re.escape(m) for m in QA_MARKERS))
    tok = llama_tokenizer(
        [marker.sub("\n", qa_expert_stripped(it)) for it in data["train"]],
        specials=["<unk>", "<s>", "</s>"] + QA_MARKERS,
        isolated=r"\n",
    )
    assert tok.get_vocab_size(with_added_tokens=True) == 512, tok.get_vocab_size()
    tok.save(str(out / "tokenizer.json"), pretty=False)

    # Checks: the ids, each marker one token, offsets that slice the text into the tokens, no
    # token across the end of "assistant:" (the label boundary), no <unk>; then the lengths.
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    specials = ["<unk>", "<s>", "</s>"] + QA_MARKERS
    assert [tok.token_to_id(t) for t in specials] == list(range(6)), specials
    assert not any("|" in t and t not in QA_MARKERS and len(t) > 1 for t in tok.get_vocab()), "a marker's merge"
    for split, items in data.items():
        lengths = []
        for it in items:
            text = qa_expert_stripped(it)
            enc = tok.encode(text)
            assert enc.ids[0] == 1 and enc.ids[-1] == 5 and 0 not in enc.ids and 2 not in enc.ids, enc.tokens
            spans = [(m.start(), m.end()) for m in marker.finditer(text)]
            assert [o for i, o in zip(enc.ids, enc.offsets) if 3 <= i <= 5] == spans
            end = 0
            for token, (a, b) in zip(enc.tokens[1:], enc.offsets[1:]):
                piece = token.replace("\u2581", " ")
                assert a == end and text[a:b] == (piece[1:] if a == 0 else piece), (token, text[a:b])
                end = b
            assert end == len(text)
            cuts = [m.end() for m in re.finditer("assistant:", text)]
            assert not any(a < c < b for c in cuts for a, b in enc.offsets), it["question"]
            lengths.append(len(enc.ids))
        over = {n: sum(n < x for x in lengths) for n in (384, 512)}
        print(f"qa_expert {split}: tokens (BOS included) {stats(lengths)}; longer than 384: {over[384]}, 512: {over[512]}")
    check_transformers(out / "tokenizer.json", specials)

    for split, items in data.items():
        srcs = {s: sum(it["src"] == s for it in items) for s in ("squad.json", "boolq.json", "musicque.json", "gen_qa.json")}
        hops = [len(it["sub_questions"]) for it in items]
        unans = sum(any(s.get("unanswerable") for s in it["sub_questions"]) for it in items)
        texts = [qa_expert_text(it) for it in items]
        chars = [len(t) for t in texts]
        words = [len(t.split()) for t in texts]
        print(f"qa_expert {split}: {len(items)} items, src {srcs}; sub-questions 1: {hops.count(1)}, "
              f"2: {hops.count(2)}, 3: {hops.count(3)}; with an unanswerable sub-question: {unans}")
        print(f"  rendered training text (system message included), characters: {stats(chars)}")
        print(f"  rendered training text, whitespace-separated words:            {stats(words)}")
        print(f"    histogram (words): {histogram(words, [150, 200, 250, 300, 350, 400])}")


# ---------------------------------------------------------------------------------------------


def write_json(path, items):
    # A JSON list, one item per line: valid JSON, small, and readable in diffs.
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("[\n" + ",\n".join(json.dumps(it, ensure_ascii=False) for it in items) + "\n]\n")


def stats(xs):
    s = sorted(xs)
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return f"min {s[0]}, median {statistics.median(s):g}, p95 {p95}, max {s[-1]}"


def histogram(xs, edges):
    out, lo = [], 0
    for hi in edges:
        out.append(f"<={hi}: {sum(lo < x <= hi for x in xs)}")
        lo = hi
    out.append(f">{edges[-1]}: {sum(x > edges[-1] for x in xs)}")
    return ", ".join(out)


def check_transformers(path, specials, vocab=512):
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        print("  (transformers not installed: PreTrainedTokenizerFast check skipped)")
        return
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path))
    ids = {t: fast.convert_tokens_to_ids(t) for t in specials}
    assert len(fast) == vocab, len(fast)
    assert list(ids.values()) == list(range(len(specials))), ids
    print(f"  PreTrainedTokenizerFast loads it: len {len(fast)}, ids {ids}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "tiny", help="output folder (default data/tiny)")
    args = ap.parse_args()
    make_longlora(args.out / "longlora")
    make_iag(args.out / "iag")
    make_coe(args.out / "coe")
    make_qa_expert(args.out / "qa_expert")
    total = sum(p.stat().st_size for p in sorted(args.out.rglob("*")) if p.is_file())
    print(f"wrote {args.out}: {total} bytes")
    for p in sorted(args.out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(args.out)}: {p.stat().st_size}")


if __name__ == "__main__":
    sys.exit(main())
