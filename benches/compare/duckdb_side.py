"""The benchmark's DuckDB column: the same questions asked of our own data
directory (Hive-partitioned Parquet) with DuckDB, timed the way the Rust
side times its own (median of repeated runs), plus the size of DuckDB's own
database file holding the same rows.

Called by benches/compare.rs with one JSON argument:
  {"dir": <data dir>, "pc": .., "ppc": .., "end": <unix seconds>, "days": N,
   "mode": "main" | "month"}
("month": only the two 30-day questions, no database file).
Prints one JSON object: {"answers": {name: {"ms", "rows", "sum"}},
"db_bytes": {"host_perf": .., "process_perf": ..}, "rows": {...}}.
Exits 3 when the duckdb module is missing (`pip install duckdb`).
"""

import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

try:
    import duckdb
except ImportError:
    sys.exit(3)

args = json.loads(sys.argv[1])
DIR, PC, PPC, END, DAYS = args["dir"], args["pc"], args["ppc"], args["end"], args["days"]
MONTH = args.get("mode") == "month"
con = duckdb.connect()


def source(table, start):
    """The table's files from the partition of `start` on (the Hive `date`
    column prunes the rest, as an analyst would write it)."""
    day = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d")
    path = os.path.join(DIR, table, "*", "*.parquet")
    return f"(SELECT * FROM read_parquet('{path}', hive_partitioning = true) WHERE date >= '{day}')"


def ts(secs):
    return f"to_timestamp({secs})"


def bucket(step):
    return f'(epoch_us("at") // 1000000 // {step}) * {step}'


def host_timeline(hours, step):
    start = END - hours * 3600
    return f"""SELECT {bucket(step)} AS b, avg(cpu_pct) AS v FROM {source('host_perf', start)}
               WHERE pc_id = '{PC}' AND "at" >= {ts(start)} AND "at" < {ts(END)}
               GROUP BY b ORDER BY b"""


def fleet(hours, step):
    start = END - hours * 3600
    return f"""SELECT {bucket(step)} AS b, avg(cpu_pct) AS v FROM {source('host_perf', start)}
               WHERE "at" >= {ts(start)} AND "at" < {ts(END)} GROUP BY b ORDER BY b"""


def top5():
    since = END - 300
    return f"""SELECT pc_id, avg(cpu_pct) AS v FROM {source('host_perf', since)}
               WHERE "at" > {ts(since)} AND cpu_pct IS NOT NULL
               GROUP BY pc_id ORDER BY v DESC, pc_id LIMIT 5"""


def latest_tick():
    src = source("process_perf", END - 86400)
    return f"""SELECT pid, cpu_pct AS v FROM {src} WHERE pc_id = '{PPC}'
               AND "at" = (SELECT max("at") FROM {src} WHERE pc_id = '{PPC}')"""


def process_timeline(hours, step, top=5):
    start = END - hours * 3600
    return f"""WITH w AS (SELECT {bucket(step)} AS b, name, cpu_pct AS v FROM {source('process_perf', start)}
                        WHERE pc_id = '{PPC}' AND "at" >= {ts(start)} AND "at" < {ts(END)}),
               ranked AS (SELECT name FROM w GROUP BY name ORDER BY avg(v) DESC, name LIMIT {top})
               SELECT b, CASE WHEN name IN (SELECT name FROM ranked) THEN name ELSE 'other' END AS s,
                      avg(v) AS v
               FROM w GROUP BY b, s ORDER BY b, s"""


QUESTIONS = {
    "fleet 30 d": fleet(24 * DAYS, 7200),
    "host timeline 30 d": host_timeline(24 * DAYS, 3600),
} if MONTH else {
    "host timeline 1 h": host_timeline(1, 300),
    "host timeline N d": host_timeline(24 * DAYS, 3600),
    "fleet 24 h": fleet(24, 300),
    "top-5": top5(),
    "latest tick": latest_tick(),
    "process timeline 1 h": process_timeline(1, 60),
    "process timeline 24 h": process_timeline(24, 300),
    "process timeline N d": process_timeline(24 * DAYS, 3600),
}


def timed(sql):
    first = time.perf_counter()
    rows = con.execute(sql).fetchall()
    times = [time.perf_counter() - first]
    for _ in range(1, 3 if times[0] > 1 else 9):
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, rows


answers = {}
for name, sql in QUESTIONS.items():
    ms, rows = timed(sql)
    answers[name] = {
        "ms": ms,
        "rows": len(rows),
        "sum": sum(r[-1] or 0.0 for r in rows),
    }

# DuckDB's own file for the same rows.
db_bytes, counts = {}, {}
if MONTH:
    print(json.dumps({"answers": answers}))
    sys.exit(0)
with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(DIR))) as tmp:
    for table in ("host_perf", "process_perf"):
        path = os.path.join(tmp, f"{table}.duckdb")
        db = duckdb.connect(path)
        files = os.path.join(DIR, table, "*", "*.parquet")
        db.execute(f"CREATE TABLE t AS SELECT * EXCLUDE (date) FROM read_parquet('{files}', hive_partitioning = true)")
        counts[table] = db.execute("SELECT count(*) FROM t").fetchone()[0]
        db.execute("CHECKPOINT")
        db.close()
        db_bytes[table] = os.path.getsize(path) + (
            os.path.getsize(path + ".wal") if os.path.exists(path + ".wal") else 0
        )

print(json.dumps({"answers": answers, "db_bytes": db_bytes, "rows": counts}))
