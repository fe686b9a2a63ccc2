#!/usr/bin/env python3
"""Checks the documentation's relative links: every `[text](target)`,
`![alt](target)` and `[label]: target` in README.md, docs/**/*.md and
slurm/README.md (or in the Markdown files named on the command line) must
name a file or folder inside the repository, and a `#anchor` must name a
heading of the Markdown file it points into, as GitHub makes anchors from
headings. Links with a scheme (`https:`, `mailto:`) are not followed, nor
is anything inside code spans and fenced code blocks.

usage: scripts/check-links.py [FILE.md ...]   -> exit 1, naming each broken link
       scripts/check-links.py --self-test     -> checks the checker

Standard library only: it runs in the test command's lints step, before
anything is built.
"""
import os
import re
import subprocess
import sys
import tempfile
import unicodedata

INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def slug(text):
    """GitHub's anchor for a heading: the rendered text, lower-cased, with
    everything but letters, digits, spaces, hyphens and underscores dropped,
    and spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in " -_" or cat[0] in "LN" or cat == "Mn":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def prose_lines(text, keep_code_spans=False):
    """The file's lines outside fenced code blocks, with code spans blanked
    (kept for headings, whose anchors are made from their text)."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        if keep_code_spans:
            yield n, line
        else:
            yield n, re.sub(r"(`+)(?:(?!\1).)+?\1", lambda c: " " * len(c.group(0)), line)


def anchors(path, cache={}):
    """The heading anchors of a Markdown file, numbered as GitHub numbers
    repeated ones (`x`, `x-1`, `x-2`)."""
    if path not in cache:
        seen, found = {}, set()
        with open(path, encoding="utf-8") as f:
            for _, line in prose_lines(f.read(), keep_code_spans=True):
                m = HEADING.match(line)
                if not m:
                    continue
                base = slug(m.group(2))
                k = seen.get(base, 0)
                seen[base] = k + 1
                found.add(base if k == 0 else f"{base}-{k}")
        cache[path] = found
    return cache[path]


def links(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for n, line in prose_lines(text):
        m = REFDEF.match(line)
        if m:
            yield n, m.group(1)
            continue
        for m in INLINE.finditer(line):
            yield n, m.group(1)


def ignored(paths, root):
    """Of these paths, those git ignores (so they never reach the
    repository, even when they exist here): none outside a git work tree."""
    if not paths:
        return set()
    try:
        r = subprocess.run(["git", "-C", root, "check-ignore", "--stdin", "-z"],
                           input="\0".join(paths) + "\0", capture_output=True, text=True)
    except OSError:
        return set()
    return set(p for p in r.stdout.split("\0") if p) if r.returncode in (0, 1) else set()


def check(files, root):
    root = os.path.realpath(root)
    broken = []
    found = []
    for md in files:
        here = os.path.dirname(os.path.realpath(md))
        for n, target in links(md):
            if not target or SCHEME.match(target):
                continue
            where = f"{os.path.relpath(md, root)}:{n}: {target}"
            path, _, frag = target.partition("#")
            dest = os.path.realpath(md) if not path else os.path.realpath(os.path.join(here, path))
            if path.startswith("/") or not (dest == root or dest.startswith(root + os.sep)):
                broken.append(f"{where}: not a relative path inside the repository")
                continue
            if not os.path.exists(dest):
                broken.append(f"{where}: no such file")
                continue
            found.append((where, os.path.relpath(dest, root)))
            if not frag:
                continue
            if not dest.endswith(".md") or os.path.isdir(dest):
                broken.append(f"{where}: an anchor into a file that is not Markdown")
            elif frag not in anchors(dest):
                broken.append(f"{where}: no heading with anchor #{frag} in {os.path.relpath(dest, root)}")
    gone = ignored(sorted(set(rel for _, rel in found)), root)
    broken += [f"{where}: ignored by git, so not in the repository" for where, rel in found if rel in gone]
    return broken


def default_files(root):
    files = [os.path.join(root, "README.md"), os.path.join(root, "slurm", "README.md")]
    for dp, dns, fs in os.walk(os.path.join(root, "docs")):
        dns.sort()
        files += [os.path.join(dp, f) for f in sorted(fs) if f.endswith(".md")]
    return [f for f in files if os.path.exists(f)]


def self_test():
    with tempfile.TemporaryDirectory() as top:
        d = os.path.join(top, "repo")
        os.makedirs(os.path.join(d, "docs", "img"))
        open(os.path.join(d, "docs", "img", "a.png"), "w").close()
        open(os.path.join(top, "outside.md"), "w").close()
        os.makedirs(os.path.join(d, "out"))
        open(os.path.join(d, "out", "made.md"), "w").close()
        with open(os.path.join(d, ".gitignore"), "w") as f:
            f.write("/out\n")
        try:
            has_git = subprocess.run(["git", "init", "-q", d], capture_output=True).returncode == 0
        except OSError:
            has_git = False
        with open(os.path.join(d, "docs", "b.md"), "w") as f:
            f.write("# B\n\n## What `tal run` reports\n\n## Twice\n\n## Twice\n\n## Files, temporaries and progress\n")
        with open(os.path.join(d, "README.md"), "w") as f:
            f.write(
                "# Top\n\n"
                "[ok](docs/b.md) [ok](docs/b.md#what-tal-run-reports) ![ok](docs/img/a.png)\n"
                "[ok](docs/b.md#twice-1) [ok](#top) [ok](https://example.org/x) [ok](docs/)\n"
                "[ok](docs/b.md#files-temporaries-and-progress)\n"
                "`[not a link](nowhere.md)`\n"
                "```\n[not a link](nowhere.md)\n```\n"
                "[bad1](docs/c.md) ![bad2](docs/img/missing.png) [bad3](docs/b.md#nope)\n"
                "[bad4](#twice) [bad5](../outside.md) [bad6](docs/b.md#twice-2)\n"
                "[ref]: docs/missing-ref.md\n"
                "[bad7](out/made.md)\n"
            )
        got = check([os.path.join(d, "README.md")], d)
    want = ["docs/c.md", "docs/img/missing.png", "docs/b.md#nope", "#twice", "../outside.md",
            "docs/b.md#twice-2", "docs/missing-ref.md"] + (["out/made.md"] if has_git else [])
    named = [g.split(": ")[1] for g in got]
    if named != want:
        print("check-links self-test failed:\n  want " + repr(want) + "\n  got  " + repr(got), file=sys.stderr)
        return 1
    print("check-links self-test: ok")
    return 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    root = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    files = argv or default_files(root)
    broken = check(files, root)
    for b in broken:
        print(f"broken link: {b}", file=sys.stderr)
    if broken:
        print(f"check-links: {len(broken)} broken link(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"check-links: every relative link in {len(files)} file(s) resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
