#!/usr/bin/env python3
"""Writes FOLDER/tokenizer.json for a Qwen-VL(-Chat) folder, whose tokenizer ships as
qwen.tiktoken (a tiktoken BPE table) with its special tokens defined in tokenization_qwen.py:
<|endoftext|>, <|im_start|>, <|im_end|>, <|extra_0|>…<|extra_204|>, then <ref>, </ref>, <box>,
</box>, <quad>, </quad>, <img>, </img>, <imgpad>, numbered from the end of the BPE table (so
<img> is visual.image_start_id, 151857, in Qwen-VL-Chat). runner reads tokenizer.json through
the `tokenizers` crate.

The conversion is transformers' TikTokenConverter with Qwen's pre-tokenizer pattern (single
digits), after NFC normalisation as tokenization_qwen.py's tokenize() does; before writing, it
checks that the result encodes sample texts exactly as tiktoken itself does (on the NFC text)
with the same table, pattern and special tokens.

  .venv/bin/pip install tiktoken 'transformers>=5'   # once (5's TikTokenConverter signature)
  .venv/bin/python scripts/qwen_tokenizer.py pretrained_models/Qwen-VL-Chat
"""

import argparse
import sys
import unicodedata
from pathlib import Path

# tokenization_qwen.py's PAT_STR.
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = (
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    + [f"<|extra_{i}|>" for i in range(205)]
    + ["<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>"]
)
SAMPLES = [
    "Which of these states is farthest north?",
    "Lecture: Color is how an object looks in the light.\nSolution: 12345 apples, don't they?",
    "<|im_start|>user\nPicture: <img>x.png</img>\n你好，世界！<|im_end|>\n",
    "  spaces\t\ttabs\r\n\r\nand   more   ",
    "cafe\u0301 (a decomposed é)",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a Qwen-VL(-Chat) folder with qwen.tiktoken")
    args = parser.parse_args()
    table = args.folder / "qwen.tiktoken"
    if not table.is_file():
        sys.exit(f"{table}: not found (a Qwen-VL folder has qwen.tiktoken)")

    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = load_tiktoken_bpe(str(table))
    specials = {token: len(ranks) + i for i, token in enumerate(SPECIALS)}
    converted = TikTokenConverter(vocab_file=str(table), pattern=PATTERN, extra_special_tokens=SPECIALS).converted()
    converted.normalizer = normalizers.NFC()
    reference = tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    for token, id_ in specials.items():
        if converted.token_to_id(token) != id_:
            sys.exit(f"{token}: id {converted.token_to_id(token)}, tokenization_qwen.py gives {id_}")
    for text in SAMPLES:
        want = reference.encode(unicodedata.normalize("NFC", text), allowed_special="all")
        got = converted.encode(text, add_special_tokens=False).ids
        if got != want:
            sys.exit(f"the conversion encodes {text!r} as {got}, tiktoken as {want}")
    out = args.folder / "tokenizer.json"
    converted.save(str(out))
    print(f"{out}: {converted.get_vocab_size()} tokens ({len(ranks)} BPE + {len(SPECIALS)} special), checked on {len(SAMPLES)} texts")


if __name__ == "__main__":
    main()
