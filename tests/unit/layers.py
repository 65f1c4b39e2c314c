#!/usr/bin/env python3
"""The C import graph of gateway/ and workers/, checked (make layers, part of make check).

gateway/ is in layers, each a folder; a file may use its own folder and the folders
below it, never one above, and no group of modules may use each other in a circle:

    base       <- nothing of the gateway (workers/lib only)
    transport  <- base
    db         <- base
    postgrest  <- base, transport, db
    handlers   <- base, transport, db, postgrest
    gateway/*.c (main, router) <- everything

workers/: a daemon (workers/<name>/) uses workers/lib and itself, never another
daemon; workers/lib uses nothing of the daemons.

Two graphs are checked: the #include lines, and, when object files are given
(--objects DIR; the daemons' own objects are read where they build them), the
symbols each module really uses (nm): a call through a prototype declared
elsewhere is an arrow too. A module is x.c plus x.h; in the symbol graph a daemon
is one module (its files call each other), checked against what it uses outside.
"""
import os
import re
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORDER = ["base", "transport", "db", "postgrest", "handlers", "top"]
MAY_USE = {
    "lib": {"lib"},
    "base": {"base", "lib"},
    "transport": {"transport", "base", "lib"},
    "db": {"db", "base", "lib"},
    "postgrest": {"postgrest", "transport", "db", "base", "lib"},
    "handlers": {"handlers", "postgrest", "transport", "db", "base", "lib"},
    "top": {"top", "handlers", "postgrest", "transport", "db", "base", "lib"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources():
    out = []
    for root, folder in [("gateway", None), ("workers", None)]:
        for dirpath, dirs, files in os.walk(os.path.join(TOP, root)):
            dirs[:] = [d for d in dirs if d not in ("build", "testdata", "tests", "systemd")]
            for f in files:
                if f.endswith((".c", ".h")):
                    out.append(os.path.relpath(os.path.join(dirpath, f), TOP))
    return sorted(out)


def layer_of(path):
    parts = path.split("/")
    if parts[0] == "gateway":
        return "top" if len(parts) == 2 else parts[1]
    if parts[1] == "lib":
        return "lib"
    return "daemon:" + parts[1]


# Files that are one module split for size (they share an internal header).
GROUPS = {
    "gateway/postgrest/sql_write": "gateway/postgrest/sql_build",
    "gateway/postgrest/sql_rpc": "gateway/postgrest/sql_build",
    "gateway/postgrest/sql_embed": "gateway/postgrest/sql_build",
    "gateway/postgrest/sql_build_int": "gateway/postgrest/sql_build",
    "gateway/postgrest/error_respond": "gateway/postgrest/error",
}


def module_of(path):
    m = os.path.splitext(path)[0]
    return GROUPS.get(m, m)


def may_use(a, b):
    la, lb = layer_of(a), layer_of(b)
    if la.startswith("daemon:"):
        return lb in (la, "lib")
    return lb in MAY_USE[la]


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(graph, what):
    bad = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if not may_use(a, b):
                bad.append("%s: %s (%s) uses %s (%s), a layer it may not use"
                           % (what, a, layer_of(a), b, layer_of(b)))
    for comp in cycles(graph):
        bad.append("%s: a circle: %s" % (what, " <-> ".join(comp)))
    return bad


def include_graph(files):
    by_name = {}
    for f in files:
        if f.endswith(".h"):
            by_name.setdefault(os.path.basename(f), []).append(f)
    graph, bad = {}, []
    for f in files:
        src = open(os.path.join(TOP, f), encoding="utf-8").read()
        for inc in INCLUDE.findall(src):
            here = os.path.normpath(os.path.join(os.path.dirname(f), inc))
            if here in files:
                target = here
            else:
                cands = [c for c in by_name.get(os.path.basename(inc), [])
                         if c.startswith(f.split("/")[0] + "/") or c.startswith("workers/lib/")]
                if f.startswith("gateway/"):
                    cands = [c for c in cands if c.startswith("gateway/") or c.startswith("workers/lib/")]
                else:
                    # a daemon's bare include is its own folder's header, else lib's
                    own = [c for c in cands if os.path.dirname(c) == os.path.dirname(f)]
                    cands = own or [c for c in cands if c.startswith("workers/lib/")]
                if not cands:
                    continue  # outside the tree (extension/src, system)
                if len(cands) > 1:
                    bad.append("includes: %s: \"%s\" is ambiguous: %s" % (f, inc, ", ".join(cands)))
                    continue
                target = cands[0]
            a, b = module_of(f), module_of(target)
            if a != b:
                graph.setdefault(a, set()).add(b)
            graph.setdefault(a, set())
    return graph, bad


# libc functions a module defines to interpose them (db/pg_send.c's send(), which
# libpq's calls bind to): every caller of the libc function would otherwise "use"
# that module.
INTERPOSED = {"send"}


def symbol_graph(files, objdir):
    defined, undefined = {}, {}
    for f in files:
        if not f.endswith(".c"):
            continue
        o = os.path.join(objdir, f[:-2] + ".o")
        if not os.path.exists(o):
            o = os.path.join(TOP, f[:-2] + ".o")  # the daemons build their objects in place
        if not os.path.exists(o):
            continue
        out = subprocess.run(["nm", "-P", o], capture_output=True, text=True, check=True).stdout
        m = module_of(f)
        if layer_of(f).startswith("daemon:"):
            # a daemon is one program: its files' calls among themselves are its own
            # business here (the tracker's main loop and its protocol files call each
            # other); what it may use outside itself is still checked
            m = "workers/" + f.split("/")[1]
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            sym, kind = parts[0], parts[1]
            if kind == "U":
                undefined.setdefault(m, set()).add(sym)
            elif kind in ("T", "D", "B", "R", "C", "V", "W", "G", "S"):
                defined.setdefault(sym, m)
    graph = {}
    for m, syms in undefined.items():
        graph.setdefault(m, set())
        for s in syms:
            d = defined.get(s)
            if d and d != m and s not in INTERPOSED:
                graph[m].add(d)
    return graph


def self_test():
    """The checker itself must see an upward arrow, a daemon using another, and a circle."""
    up = {"gateway/transport/http": {"gateway/handlers/rest"}, "gateway/handlers/rest": set()}
    across = {"workers/seeder/main": {"workers/tracker/swarm"}, "workers/tracker/swarm": set()}
    circle = {"gateway/db/pool": {"gateway/db/listener"}, "gateway/db/listener": {"gateway/db/pool"}}
    down = {"gateway/handlers/rest": {"gateway/db/pool", "gateway/postgrest/error", "workers/lib/log"},
            "gateway/db/pool": {"gateway/base/buf"}, "gateway/postgrest/error": set(),
            "gateway/base/buf": set(), "workers/lib/log": set()}
    ok = (len(check(up, "t")) == 1 and len(check(across, "t")) == 1
          and len(check(circle, "t")) == 1 and check(down, "t") == [])
    print("layers: self-test %s" % ("passed" if ok else "FAILED"))
    return ok


def main():
    args = sys.argv[1:]
    if not self_test():
        return 1
    objdir = None
    if args[:1] == ["--objects"]:
        objdir = args[1]
    files = set(sources())
    graph, bad = include_graph(files)
    bad += check(graph, "includes")
    if objdir:
        bad += check(symbol_graph(files, objdir), "symbols")
    nmods = len(graph)
    if bad:
        print("\n".join(bad))
        print("layers: %d problem(s) in the import graph of gateway/ and workers/" % len(bad))
        return 1
    print("layers: %d modules of gateway/ and workers/, no circle, every arrow points down%s"
          % (nmods, " (includes and symbols)" if objdir else " (includes)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
