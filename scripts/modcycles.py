#!/usr/bin/env python3
"""Fail when the modules of importer/src depend on each other in a cycle, naming it.

Every .rs file under importer/src is read. The paths it names, `use crate::a::b`, `crate::a::b::`
in code, `super::` and `self::` paths, and (in lib.rs and a directory's mod.rs) a path starting
with a module it declares, are resolved to module paths. Each becomes an edge between two
modules that are siblings: `import -> runtime` for a file of `import` naming `crate::runtime::x`
(the top level), `runtime/native/ingest -> runtime/native/image` for `super::image::x` inside
`runtime/native` (a module directory). A module naming one of its own ancestors (a child using
what its `mod.rs` holds) or its own children is not an edge: the parent is the facade of its
children. Test code (items under `#[cfg(test)]`, files declared only for tests, and files that start
with `#![cfg(test)]`) is left out
unless `--tests` is given: tests may reach anywhere.

    scripts/modcycles.py            exit 1 naming every cycle, with a file:line for each edge
    scripts/modcycles.py --edges    also print every edge
    scripts/modcycles.py --tests    count test code too

Python 3 standard library only.
"""

import argparse
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "importer", "src")


def set_root(path):
    global ROOT
    ROOT = path


def strip_code(text):
    """The text with comments, string and char literals blanked (newlines kept, for line numbers)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 64]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), else a lifetime or a label.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 16])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(code, start):
    """The index just past the brace that closes the one at `start`."""
    depth = 0
    for j in range(start, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def drop_test_items(code):
    """The code with every `#[cfg(test)]` item blanked, and the modules declared only for tests."""
    test_mods = []
    out, at = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        if m.start() < at:
            continue
        rest = code[m.end():]
        decl = re.match(r"\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", rest)
        if decl:
            test_mods.append(decl.group(1))
            end = m.end() + decl.end()
        else:
            brace = code.find("{", m.end())
            semi = code.find(";", m.end())
            if brace < 0 or (0 <= semi < brace):
                end = semi + 1
            else:
                end = matching_brace(code, brace)
        out.append(code[at:m.start()])
        out.append("\n" * code.count("\n", m.start(), end))
        at = end
    out.append(code[at:])
    return "".join(out), test_mods


def expand_use(tree):
    """`a::{b, c::{self, d}}` -> [a::b, a::c, a::c::d] (aliases and globs dropped)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(prefix, text):
        parts, depth, cur = [], 0, ""
        for ch in text:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        for part in filter(None, parts):
            if "{" in part:
                head, inner = part.split("{", 1)
                walk(prefix + [p for p in head.split("::") if p], inner[:-1])
            else:
                segs = [p for p in part.split("::") if p and p != "*"]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                paths.append(prefix + segs)

    walk([], tree)
    return paths


def module_files():
    """{module path tuple: file path} for every module file of the library."""
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), ROOT)
            parts = rel[:-3].split(os.sep)
            if parts == ["main"]:
                continue  # the binary: it uses the library from outside
            if parts == ["lib"]:
                mod = ()
            elif parts[-1] == "mod":
                mod = tuple(parts[:-1])
            else:
                mod = tuple(parts)
            files[mod] = rel
    return files


def edges_of(files, tests):
    """[(scope, from, to, where)]: `from` and `to` are sibling modules under `scope`."""
    modules = set(files)
    edges = []
    test_only = set()
    texts = {}
    for mod, rel in sorted(files.items()):
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            code = strip_code(f.read())
        if not tests:
            if re.match(r"\s*(?:#!\[[^\]]*\]\s*)*#!\[cfg\(test\)\]", code):
                test_only.add(mod)  # `#![cfg(test)]`: the whole file is for tests
            code, test_mods = drop_test_items(code)
            test_only.update(mod + (t,) for t in test_mods)
        texts[mod] = code
    for mod, rel in sorted(files.items()):
        if not tests and any(mod[:k] in test_only for k in range(1, len(mod) + 1)):
            continue
        code = texts[mod]
        children = {m[-1] for m in modules if len(m) == len(mod) + 1 and m[:-1] == mod}
        found = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            line = code.count("\n", 0, m.start()) + 1
            for path in expand_use(m.group(1)):
                found.append((path, line))
        for m in re.finditer(r"\b(?:crate|super|self)(?:\s*::\s*\w+)+", code):
            line = code.count("\n", 0, m.start()) + 1
            found.append(([p.strip() for p in m.group(0).split("::")], line))
        for path, line in found:
            target = resolve(mod, path, children)
            if target is None:
                continue
            target = longest_module(target, modules)
            edge = sibling_edge(mod, target)
            if edge:
                edges.append(edge + (f"{shown_root()}/{rel}:{line}",))
    return edges


def resolve(mod, path, children):
    """The absolute path `path` names from module `mod`, or None (an outside crate, a local)."""
    if not path:
        return None
    head = path[0]
    if head == "crate":
        return tuple(path[1:])
    if head in ("super", "self"):
        base = list(mod)
        rest = list(path)
        while rest and rest[0] in ("super", "self"):
            if rest.pop(0) == "super":
                if not base:
                    return None
                base.pop()
        return tuple(base + rest)
    if head in children:
        return tuple(mod) + tuple(path)
    return None


def longest_module(path, modules):
    """`path` cut to the deepest module it names (the rest is an item inside it)."""
    for k in range(len(path), -1, -1):
        if tuple(path[:k]) in modules:
            return tuple(path[:k])
    return ()


def sibling_edge(src, dst):
    """(scope, a, b): `src` reaches `dst` through siblings a and b under scope; None if one
    holds the other."""
    k = 0
    while k < len(src) and k < len(dst) and src[k] == dst[k]:
        k += 1
    if k == len(src) or k == len(dst):
        return None
    return (src[:k], src[: k + 1], dst[: k + 1])


def shown_root():
    """The source directory as the lines name it: relative to the working directory."""
    rel = os.path.relpath(ROOT)
    return os.path.abspath(ROOT) if rel.startswith("..") else rel


def name(mod):
    return "/".join(mod) if mod else "(crate root)"


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def a_cycle(graph, comp):
    """One cycle through the first module of a component: the shortest path back to it."""
    start, members = comp[0], set(comp)
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, ())):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp + [comp[0]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edges", action="store_true", help="print every edge")
    ap.add_argument("--tests", action="store_true", help="count test code too")
    ap.add_argument("--root", default=ROOT, help="the crate's source directory [importer/src]")
    args = ap.parse_args()
    set_root(args.root)
    files = module_files()
    where = {}
    for _scope, a, b, loc in edges_of(files, args.tests):
        locs = where.setdefault((a, b), [])
        if loc not in locs:
            locs.append(loc)
    graph = {}
    for a, b in where:
        graph.setdefault(a, set()).add(b)
    if args.edges:
        for (a, b), locs in sorted(where.items()):
            print(f"{name(a)} -> {name(b)}  ({len(locs)}: {locs[0]})")
    found = cycles(graph)
    for comp in found:
        cycle = a_cycle(graph, comp)
        print(f"module cycle: {' -> '.join(name(m) for m in cycle)}", file=sys.stderr)
        for a, b in zip(cycle, cycle[1:]):
            locs = where[(a, b)]
            more = f" and {len(locs) - 1} more" if len(locs) > 1 else ""
            print(f"  {name(a)} -> {name(b)}: {locs[0]}{more}", file=sys.stderr)
        if len(comp) > len(cycle) - 1:
            print(f"  (the modules of this tangle: {', '.join(name(m) for m in comp)})", file=sys.stderr)
    if found:
        print(f"modcycles: {len(found)} cycle(s) among the modules of {shown_root()}", file=sys.stderr)
        return 1
    print(f"modcycles: no cycle among {len(files)} module files ({len(where)} edges)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
