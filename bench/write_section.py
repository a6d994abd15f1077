"""Replaces one marked section of a Markdown file (BENCHMARKS.md).

A section runs from a line that is exactly its first marker to the next line
that is exactly its last one (`<!-- NAME:start -->`, `<!-- NAME:end -->`):
the Rust driver (bench/src/report.rs, KEPT_SECTIONS) keeps such sections
when it rewrites the file. Used by bench/ldpreload.sh and
bench/secure_cost.sh.

    python3 bench/write_section.py FILE SECTION_FILE

SECTION_FILE holds the whole section, markers included; the first and last
lines name them.
"""

import sys


def replace_section(path, section):
    """Puts `section` (markers included) in place of the file's section with
    the same markers, or appends it."""
    section = section.rstrip("\n")
    start, end = section.split("\n")[0], section.split("\n")[-1]
    try:
        old = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        old = ""
    # The markers must be whole lines (as the Rust driver looks for them).
    lines = old.splitlines(keepends=True)
    bare = [line.rstrip("\r\n") for line in lines]
    if start in bare and end in bare[bare.index(start):]:
        s = bare.index(start)
        e = bare.index(end, s)
        new = "".join(lines[:s]) + section + "\n" + "".join(lines[e + 1:])
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + section + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    replace_section(sys.argv[1], open(sys.argv[2], encoding="utf-8").read())
    print(f"wrote its section of {sys.argv[1]}", file=sys.stderr)
