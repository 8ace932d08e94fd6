#!/usr/bin/env python3
"""Checks the architecture rules that `cargo` and `clippy` cannot:

1. No non-test Rust source file under crates/ is longer than 700 lines
   (test modules in their own files — `tests.rs`, `*_tests.rs`, `tests/` —
   are exempt).
2. No module cycle inside a crate: module A using an item of module B while
   B (or a module B uses, transitively) uses an item of A. A parent's
   `mod child;` and `pub use child::Item;` lines are declarations, not uses,
   and paths through a re-export are followed to the defining module.
3. No source, sink or processor crate depends on `deltaforge-config`, on a
   database driver it does not itself use, or on another source or sink
   crate (read from the Cargo.toml files, dev-dependencies included).

Usage: python3 scripts/check_architecture.py   (exit 1 when a rule breaks)
"""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 700
problems = []


def is_test_file(path):
    base = os.path.basename(path)
    return base == "tests.rs" or base.endswith("_tests.rs") or "/tests/" in path or "/benches/" in path


def check_file_sizes():
    for path in glob.glob(os.path.join(ROOT, "crates/**/*.rs"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if is_test_file(rel):
            continue
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            problems.append(f"{rel}: {n} lines (at most {MAX_LINES}; split it by concern)")


def strip_comments_and_tests(src):
    # Inline test modules use their parent freely; they are not part of the graph.
    src = re.split(r"#\[cfg\(test\)\]\s*mod \w+ \{", src)[0]
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return "\n".join(re.sub(r'//.*$', "", line) for line in src.split("\n"))


def crate_modules(src_dir):
    mods = {}
    for path in glob.glob(os.path.join(src_dir, "**/*.rs"), recursive=True):
        rel = os.path.relpath(path, src_dir)[:-3]
        parts = rel.split(os.sep)
        if parts[-1] in ("lib", "main") and len(parts) == 1:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        name = "::".join(["crate"] + parts)
        if is_test_file(path):
            continue
        with open(path, encoding="utf-8") as f:
            mods[name] = strip_comments_and_tests(f.read())
    return mods


def reexports(mods):
    """(module, item) -> module path the item is re-exported from."""
    table = {}
    for m, src in mods.items():
        for stmt in re.findall(r"pub(?:\([^)]*\))?\s+use\s+([^;]+);", src):
            stmt = re.sub(r"\s+", "", stmt)
            if "{" in stmt:
                prefix, items = stmt.split("{", 1)
                items = items.rstrip("}").split(",")
            else:
                prefix, items = "", [stmt]
            for item in items:
                if not item:
                    continue
                full = prefix + item
                name = full.split("::")[-1].split("as")[-1]
                table[(m, name)] = full.rsplit("::", 1)[0] if "::" in full else ""
    return table


def resolve(mods, rexp, cur, path, depth=0):
    parts = path.split("::")
    base = cur.split("::")
    if parts[0] == "crate":
        base, parts = ["crate"], parts[1:]
    elif parts[0] == "super":
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    elif parts[0] == "self":
        parts = parts[1:]
    else:
        return None
    best, rest = "::".join(base), parts
    for i in range(len(parts) + 1):
        cand = "::".join(base + parts[:i])
        if cand in mods:
            best, rest = cand, parts[i:]
    # Follow a re-export of the next name to where it is defined.
    if rest and (best, rest[0]) in rexp and depth < 5:
        target = rexp[(best, rest[0])]
        if target and not target.startswith(("self", "super", "crate")):
            target = "self::" + target
        if target:
            found = resolve(mods, rexp, best, target + "::" + rest[0], depth + 1)
            if found:
                return found
    return best


def declaration_only(src):
    """The source without `mod x;` and `pub use` lines (facade declarations)."""
    src = re.sub(r"(?m)^\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*;", "", src)
    return re.sub(r"pub(\([^)]*\))?\s+use\s+[^;]+;", "", src)


def check_cycles():
    for src_dir in sorted(glob.glob(os.path.join(ROOT, "crates/**/src"), recursive=True)):
        mods = crate_modules(src_dir)
        rexp = reexports(mods)
        edges = set()
        for m, src in mods.items():
            code = declaration_only(src)
            paths = re.findall(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", code)
            # Paths that start with a child module's name (`validate::check`).
            children = {c.rsplit("::", 1)[1] for c in mods if "::" in c and c.rsplit("::", 1)[0] == m}
            for child, tail in re.findall(r"(?<![\w:])([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", code):
                if child in children:
                    paths.append("self::" + child + tail)
            for prefix, sub, group in re.findall(r"\b(crate|super|self)((?:::\w+)*)::\{([^}]*)\}", code):
                for item in group.split(","):
                    item = item.strip().split(" as ")[0].split("::")[0]
                    if item and item != "self":
                        paths.append(prefix + sub + "::" + item)
            # Names the module's own code uses through its `pub use` lines.
            for (owner, name), target in rexp.items():
                if owner == m and target and re.search(r"\b" + re.escape(name) + r"\b", code):
                    first = target.split("::")[0]
                    paths.append(target + "::" + name if first in ("crate", "super", "self") else "self::" + target + "::" + name)
            for p in paths:
                t = resolve(mods, rexp, m, p)
                if t and t != m and t in mods:
                    edges.add((m, t))
        adj = {}
        for a, b in edges:
            adj.setdefault(a, set()).add(b)
        reported = set()
        for start in sorted(adj):
            stack, seen = [(start, [start])], set()
            while stack:
                node, path = stack.pop()
                for nxt in adj.get(node, ()):
                    if nxt == start:
                        cycle = tuple(sorted(path))
                        if cycle not in reported:
                            reported.add(cycle)
                            rel = os.path.relpath(src_dir, ROOT)
                            problems.append(f"{rel}: module cycle {' -> '.join(path + [start])}")
                    elif nxt not in seen:
                        seen.add(nxt)
                        stack.append((nxt, path + [nxt]))


def check_component_dependencies():
    component_dirs = glob.glob(os.path.join(ROOT, "crates/sources/*")) + glob.glob(
        os.path.join(ROOT, "crates/sinks/*")
    ) + [os.path.join(ROOT, "crates/processors")]
    for d in component_dirs:
        toml = os.path.join(d, "Cargo.toml")
        if not os.path.exists(toml):
            continue
        with open(toml, encoding="utf-8") as f:
            text = f.read()
        own = re.search(r'^name\s*=\s*"([^"]+)"', text, re.M).group(1)
        deps = re.findall(r"^([A-Za-z0-9_-]+)\s*(?:=|\.workspace)", text, re.M)
        rel = os.path.relpath(toml, ROOT)
        for dep in deps:
            if dep == own:
                continue
            if dep == "deltaforge-config":
                problems.append(f"{rel}: depends on deltaforge-config (use deltaforge-common / deltaforge-core)")
            if re.match(r"deltaforge-(source|sink|sinks)-", dep):
                problems.append(f"{rel}: depends on another component crate {dep}")
            if dep in ("rusqlite",) or (dep in ("tokio-postgres", "postgres-protocol") and "postgres" not in own):
                problems.append(f"{rel}: depends on the database driver {dep}")


check_file_sizes()
check_cycles()
check_component_dependencies()
for p in problems:
    print(p)
print(f"architecture check: {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
