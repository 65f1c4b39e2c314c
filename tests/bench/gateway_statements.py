#!/usr/bin/env python3
"""Reads the statements PostgreSQL logged (log_statement = 'all') from the log
text on stdin, from the server backend that ran the request for gw_bench?id=eq.ID.
derive: writes the pgbench script (argv[3]) and its -D definitions (argv[4]).
compare: argv[3] is a statements dump of the gateway; the pgbench session's
statements must be the same texts with the same values (the id aside)."""
import json, re, sys

mode, who = sys.argv[1], sys.argv[2]
line_re = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (\S*)@(\S*) (LOG|DETAIL|ERROR|WARNING|STATEMENT):  (.*)$")
stmt_re = re.compile(r"^(?:execute [^:]+|statement): (.*)$", re.S)
param_re = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")

entries = []  # [pid, user, kind, text]
for raw in sys.stdin.read().split("\n"):
    m = line_re.match(raw)
    if m:
        entries.append([m.group(1), m.group(2), m.group(4), m.group(5)])
    elif entries and raw.startswith("\t"):
        entries[-1][3] += "\n" + raw[1:]

# per backend: its statements in order, each [sql, {n: value}]
by_pid = {}
for pid, user, kind, text in entries:
    if kind == "LOG":
        m = stmt_re.match(text)
        if m:
            by_pid.setdefault(pid, []).append([m.group(1), {}, user])
    elif kind == "DETAIL" and text.startswith("parameters: ") and by_pid.get(pid):
        for n, v in param_re.findall(text):
            by_pid[pid][-1][1][int(n)] = None if v == "NULL" else v[1:-1].replace("''", "'")

def transaction(user, want_id):
    """The last BEGIN ... COMMIT of a backend of this user whose SELECT on
    gw_bench had want_id (None: any) as its parameter."""
    found = None
    for pid, stmts in by_pid.items():
        for i, (sql, params, u) in enumerate(stmts):
            if u != user or not sql.startswith("BEGIN"):
                continue
            j = i + 1
            while j < len(stmts) and not stmts[j][0].startswith(("COMMIT", "BEGIN")):
                j += 1
            if j == len(stmts) or not stmts[j][0].startswith("COMMIT"):
                continue
            tx = [[s, p] for s, p, _ in stmts[i:j + 1]]
            sel = [t for t in tx if '"api"."gw_bench"' in t[0]]
            if len(sel) == 1 and (want_id is None or list(sel[0][1].values()) == [want_id]):
                found = tx
    return found

if mode == "derive":
    want = sys.argv[5]
    tx = transaction(who, want)
    if not tx:
        sys.exit(1)
    kinds = [("BEGIN", 0), ("SELECT pg_catalog.set_config(", None), ("WITH pgrst_source AS", 1), ("COMMIT", 0)]
    if len(tx) != 4 or any(not s.startswith(k) or (n is not None and len(p) != n)
                           for (s, p), (k, n) in zip(tx, kinds)):
        sys.stderr.write("unexpected statements for one request:\n%s\n" % json.dumps(tx, indent=1))
        sys.exit(2)
    defs, lines = [], []
    for si, (sql, params) in enumerate(tx):
        if re.search(r"[:\\]", re.sub(r"::", "", sql)):
            sys.stderr.write("a statement pgbench would misread (':' or '\\'): %s\n" % sql)
            sys.exit(2)
        def var(m, si=si, params=params):
            n = int(m.group(1))
            if '"api"."gw_bench"' in sql:
                return ":id"
            name = "s%dp%d" % (si, n)
            if params.get(n) is None or "\n" in params[n]:
                sys.stderr.write("parameter $%d of %s is NULL or multi-line\n" % (n, sql))
                sys.exit(2)
            defs.append("%s=%s" % (name, params[n]))
            return ":" + name
        lines.append(re.sub(r"\$(\d+)", var, sql) + ";")
    with open(sys.argv[3], "w") as f:
        f.write("\\set id random(1, 10000)\n\\startpipeline\n" + "\n".join(lines) + "\n\\endpipeline\n")
    with open(sys.argv[4], "w") as f:
        f.write("\n".join(defs) + "\n")
    with open(sys.argv[4] + ".json", "w") as f:
        json.dump(tx, f)
elif mode == "compare":
    gw = json.load(open(sys.argv[3]))
    pg = transaction(who, None)
    if not pg:
        sys.stderr.write("no transaction of %s found in the log\n" % who)
        sys.exit(1)
    # the SELECT's id is random on both sides; pgbench sends each statement
    # with the ';' that ends it in the script
    def norm(tx):
        return [[s[:-1] if s.endswith(";") else s, {} if '"api"."gw_bench"' in s else {str(k): v for k, v in p.items()}] for s, p in tx]
    if norm(gw) != norm(pg):
        sys.stderr.write("the gateway ran:\n%s\npgbench ran:\n%s\n" % (json.dumps(norm(gw), indent=1), json.dumps(norm(pg), indent=1)))
        sys.exit(2)
