"""Word count over a folder of text files, map/reduce style: one task per file, the client merges the counts.

Each task reads one file and returns a dict word -> count (lowercased, split on anything that is not a
letter); the client adds the dicts up in a `Counter` and prints the most common words. Without
`--folder` it writes a small corpus of public-domain openings to a temporary folder and counts that.
Run from the repository root::

    python -m examples.wordcount                        # on a LocalCluster of 2 workers, built-in corpus
    python -m examples.wordcount --folder docs --top 20
    python -m examples.wordcount --ns-host 127.0.0.1 --folder /shared/texts  # workers need -I examples.wordcount

The tasks receive file paths, not file contents. A LocalCluster runs on this machine, so any path works;
on a real cluster the folder must be visible to every worker at the same absolute path (a shared
filesystem such as NFS), and the built-in corpus, written to a local temporary folder, does not qualify.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from examples.common import add_cluster_arguments, cluster_client

# Run as `python -m`, this file is __main__, which no worker can import: name the function by its module.
TASK = "examples.wordcount:count_words"
NOT_LETTERS = re.compile(r"[\W\d_]+")
"""Separators: any run of characters that are not letters."""

CORPUS = {
    "austen.txt": "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he "
    "is considered the rightful property of some one or other of their daughters.",
    "dickens.txt": "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of "
    "Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way.",
    "melville.txt": "Call me Ishmael. Some years ago -- never mind how long precisely -- having little or no "
    "money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little "
    "and see the watery part of the world. It is a way I have of driving off the spleen and regulating the "
    "circulation.",
    "lincoln.txt": "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
    "conceived in Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged "
    "in a great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long "
    "endure. We are met on a great battle-field of that war.",
    "carroll.txt": "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it had no pictures "
    "or conversations in it, 'and what is the use of a book,' thought Alice 'without pictures or conversations?'",
}
"""File name -> text of the built-in corpus (opening lines of public-domain works)."""


def count_words(path: str) -> dict[str, int]:
    """The task: word -> count for one text file."""
    text = Path(path).read_text(encoding="utf-8", errors="replace").lower()
    return dict(Counter(word for word in NOT_LETTERS.split(text) if word))


def write_corpus(folder: Path) -> None:
    """Write the built-in corpus into folder, one file per text."""
    for name, text in CORPUS.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")


def main() -> int:
    """Count the words of every file in a folder on the cluster and print the most common ones."""
    parser = argparse.ArgumentParser(prog="python -m examples.wordcount", description=main.__doc__)
    parser.add_argument("--folder", type=Path, help="folder of text files (default: a built-in corpus)")
    parser.add_argument("--top", type=int, default=10, help="how many words to print (default: %(default)s)")
    add_cluster_arguments(parser)
    args = parser.parse_args()

    with ExitStack() as stack:
        folder = args.folder
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wordcount-")))
            write_corpus(folder)
        files = sorted(str(p.resolve()) for p in folder.iterdir() if p.is_file())
        if not files:
            print(f"no files in {folder}")
            return 1
        client = stack.enter_context(cluster_client(args, "examples.wordcount"))

        started = time.perf_counter()
        totals: Counter[str] = Counter()
        for counts in client.gather(client.map(TASK, files)):  # map ...
            totals.update(counts)  # ... and reduce
        elapsed = time.perf_counter() - started

    print(f"{len(files)} files, {totals.total()} words, {len(totals)} distinct, in {elapsed:.3f} s")
    for word, count in totals.most_common(args.top):
        print(f"{count:>8}  {word}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
