"""Checks that a tal Parquet dataset holds the same data as the JSONL
checkpoint converted from the same node logs, as pyarrow, DuckDB and
polars read it.

Usage: dataset_check.py JSONL DATASET_DIR [--merged]

Every event line of the JSONL must be a row of its table, found by
event_id, with every key equal (times as timestamps in ns; a key the JSONL
leaves out or writes as null is a null; fields without a column of their
own are in `extra` / `fields`); every task span a row of `tasks`; the
metric line and the session span those of the `session` table (for one
log). Column types must be what the JSONL's values are: float64 for
floats, int64 for integers, string for strings. With --merged (several
logs in one JSONL) SessionStarted and SessionEnded, which the merge makes
one for the whole session, are checked per node loosely, and the metric
line is not compared. Prints one line of counts; exits 1 on a mismatch.
"""

import json
import struct
import sys
from collections import Counter

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads

TABLES = ["samples", "gpu_samples", "tasks", "task_samples", "events", "session"]
ENVELOPE = {"section", "name"}
failures = []


def fail(msg):
    failures.append(msg)
    if len(failures) <= 20:
        print("MISMATCH:", msg, file=sys.stderr)


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def read(dir_):
    out = {}
    for t in TABLES:
        d = pads.dataset(f"{dir_}/{t}", format="parquet", partitioning="hive")
        tb = d.to_table()
        # the Hive column says the folder's node; rows name theirs
        if "node" in tb.schema.names:
            tb = tb.drop_columns(["node"])
        out[t] = tb
    return out


def rows_by(table, key):
    rows = {}
    for r in table.to_pylist():
        rows[r[key]] = r
    return rows


def secs(ns):
    """ns as the JSONL's float seconds (tal's ns_to_secs: whole seconds and
    the fraction apart)."""
    return float(ns // 1_000_000_000) + (ns % 1_000_000_000) / 1e9


def check_type(table_name, schema, key, value):
    if key not in schema.names or value is None:
        return
    t = schema.field(key).type
    if isinstance(value, bool):
        ok = pa.types.is_boolean(t)
    elif isinstance(value, int):
        ok = pa.types.is_int64(t) or pa.types.is_float64(t) and key.endswith("_bytes")
    elif isinstance(value, float):
        ok = pa.types.is_float64(t)
    elif isinstance(value, str):
        ok = pa.types.is_string(t)
    else:
        ok = True
    if not ok:
        fail(f"{table_name}.{key}: JSONL value {value!r} but column type {t}")


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return a == b


def check_event(line, row, table, schema, merged):
    eid = line["event_id"]
    if row is None:
        fail(f"event {eid} ({line['event_type']}) is in no row of {table}")
        return
    # the times, exactly as the JSONL's seconds are made from them
    for k, col in (("event_time", "time"), ("emit_time", "emit_time")):
        if secs(row[col]) != line[k]:
            fail(f"{table} {eid}: {k} {line[k]} vs {row[col]} ns")
    extra = json.loads(row["extra"]) if row.get("extra") else {}
    extra.update(json.loads(row["fields"]) if row.get("fields") else {})
    attrs = json.loads(row["attributes"]) if row.get("attributes") else {}
    for k, v in line.items():
        if k in ENVELOPE or k in ("event_time", "emit_time"):
            continue
        if merged and line["event_type"] in ("SessionStarted", "SessionEnded") and k in (
            "attributes", "duration_seconds", "event_id"):
            continue
        if k == "attributes":
            if v != attrs:
                fail(f"{table} {eid}: attributes {v} vs {attrs}")
            continue
        if k in extra:
            # a field without a column of its own, or whose value the
            # column cannot hold, or a client's field named like a column
            if extra[k] != v:
                fail(f"{table} {eid}: {k}={v!r} but extra/fields has {extra[k]!r}")
        elif k in row and k not in ("extra", "fields", "attributes"):
            got = row[k]
            check_type(table, schema, k, v)
            if k == "cpu_percent_per_core" and v is not None and got is not None:
                if [f32(x) for x in v] != got:
                    fail(f"{table} {eid}: {k} {v} vs {got}")
            elif k == "gpu_memory_bytes" and v is not None:
                if dict(got or []) != {a: b for a, b in v.items()}:
                    fail(f"{table} {eid}: {k} {v} vs {got}")
            elif v is None or got is None:
                if v is not None or got is not None:
                    fail(f"{table} {eid}: {k} {v!r} vs {got!r}")
            elif not same(v, got):
                fail(f"{table} {eid}: {k} {v!r} vs {got!r}")
        elif v is not None:
            fail(f"{table} {eid}: {k}={v!r} is in no column nor in extra/fields")


def check_span(line, row):
    sid = line["span_id"]
    if row is None:
        fail(f"task span {sid} is in no row of tasks")
        return
    if row["start_time"] != line["start_ns"] or row["end_time"] != line["end_ns"]:
        fail(f"span {sid}: times {line['start_ns']}..{line['end_ns']} vs {row['start_time']}..{row['end_time']}")
    for k in ("trace_id", "parent_span_id", "duration_ms", "status_code", "status_description"):
        if not same(line.get(k), row[k]) and not (line.get(k) is None and row[k] is None):
            fail(f"span {sid}: {k} {line.get(k)!r} vs {row[k]!r}")
    a = dict(line["attributes"])
    rebuilt = {
        "session_id": row["session_id"], "backend": row["backend"], "task_id": row["task_id"],
        "status": row["status"], "executable": row["executable"], "task_type": row["task_type"],
    }
    if row["error_type"] is not None:
        rebuilt["error_type"] = row["error_type"]
    if row["incomplete_lifecycle"]:
        rebuilt["incomplete_lifecycle"] = True
    if row["closed_at_session_end"]:
        rebuilt["closed_at_session_end"] = True
    if row["queued_time"] is not None:
        rebuilt["queued_time_s"] = secs(row["queued_time"])
    rebuilt.update(json.loads(row["attributes_json"]))
    if a != rebuilt:
        fail(f"span {sid}: attributes {a} vs {rebuilt}")
    # the typed resource columns agree with the attributes they come from
    for k in ("cpu_user_seconds", "cpu_system_seconds", "max_rss_bytes", "read_bytes", "write_bytes"):
        if a.get(k) is not None and not same(a[k], row[k]):
            fail(f"span {sid}: {k} {a[k]} vs {row[k]}")
    if "gpu_memory_peak_bytes" in a and dict(row["gpu_memory_peak_bytes"]) != a["gpu_memory_peak_bytes"]:
        fail(f"span {sid}: gpu_memory_peak_bytes {a['gpu_memory_peak_bytes']} vs {row['gpu_memory_peak_bytes']}")
    if "gpu_energy_joules" in a and dict(row["gpu_energy_joules"]) != a["gpu_energy_joules"]:
        fail(f"span {sid}: gpu_energy_joules {a['gpu_energy_joules']} vs {row['gpu_energy_joules']}")


def raw_times(tables):
    # timestamps as int ns (pyarrow's datetimes lose the ns)
    out = {}
    for name, t in tables.items():
        cols = {}
        for f in t.schema:
            if pa.types.is_timestamp(f.type):
                cols[f.name] = t.column(f.name).cast(pa.int64())
        for k, c in cols.items():
            t = t.set_column(t.schema.get_field_index(k), k, c)
        out[name] = t
    return out


def main():
    jsonl, dir_ = sys.argv[1], sys.argv[2]
    merged = "--merged" in sys.argv
    lines = [json.loads(l) for l in open(jsonl)]
    tables = raw_times(read(dir_))
    by_id = {t: rows_by(tables[t], "event_id") for t in ("samples", "gpu_samples", "task_samples", "events")}
    spans = rows_by(tables["tasks"], "span_id")
    seen = Counter()
    for line in lines:
        if line["section"] == "event":
            ty = line["event_type"]
            if ty == "ResourceUpdate":
                t = "samples" if line["resource_scope"] == "per_node" else "gpu_samples"
            elif ty == "tal.TaskResourceUpdate":
                t = "task_samples"
            else:
                t = "events"
            row = by_id[t].get(line["event_id"])
            if row is None:
                # a client's own event named like one of tal's (e.g. a
                # tal.TaskResourceUpdate it sent) is an event of its own
                for other in by_id:
                    if line["event_id"] in by_id[other]:
                        t, row = other, by_id[other][line["event_id"]]
            if merged and ty in ("SessionStarted", "SessionEnded"):
                if not any(r["event_type"] == ty for r in by_id["events"].values()):
                    fail(f"no {ty} in events")
                seen[t] += 1
                continue
            check_event(line, row, t, tables[t].schema, merged)
            seen[t] += 1
        elif line["section"] == "span" and line["name"] == "task":
            check_span(line, spans.get(line["span_id"]))
            seen["tasks"] += 1
        elif line["section"] == "span":
            if not merged:
                got = json.loads(tables["session"].column("session_span")[0].as_py())
                if got != line:
                    fail(f"session span {line} vs {got}")
        elif line["section"] == "metric" and not merged:
            # the agent's histograms, HdrHistogram V2 (its cookie first),
            # where the metric line has their percentiles
            for key, col in (("agent_sampling_jitter_p50_ms", "hist_jitter_ns"),
                             ("node_cpu_utilization_p50", "hist_cpu_permille")):
                h = tables["session"].column(col)[0].as_py()
                if key in line and (h is None or h[:4] not in (b"\x1c\x84\x93\x13", b"\x1c\x84\x93\x14")):
                    fail(f"session.{col}: no HdrHistogram ({h[:8] if h else h!r}) though the metric line has {key}")
            got = json.loads(tables["session"].column("metric")[0].as_py())
            if got != line:
                fail(f"metric line differs: {set(line) ^ set(got)} "
                     f"{[k for k in line if line[k] != got.get(k)]}")
    # row counts: as many rows as lines (one per node for session events)
    nodes = tables["session"].num_rows
    for t in ("samples", "gpu_samples", "task_samples", "tasks"):
        if tables[t].num_rows != seen[t]:
            fail(f"{t}: {tables[t].num_rows} rows, {seen[t]} JSONL lines")
    extra_session = 2 * (nodes - 1) if merged else 0
    if tables["events"].num_rows != seen["events"] + extra_session:
        fail(f"events: {tables['events'].num_rows} rows, {seen['events']} JSONL lines")
    # nothing in extra/fields that the JSONL lacks
    by_line = {l["event_id"]: l for l in lines if l["section"] == "event"}
    for t in ("samples", "gpu_samples", "task_samples", "events"):
        for col in ("extra", "fields"):
            if col not in tables[t].schema.names:
                continue
            for eid, text in zip(tables[t].column("event_id").to_pylist(), tables[t].column(col).to_pylist()):
                if text is None or eid not in by_line:
                    continue
                for k, v in json.loads(text).items():
                    if by_line[eid].get(k) != v:
                        fail(f"{t} {eid}: {col}.{k}={v!r} but the JSONL has {by_line[eid].get(k)!r}")
    # polars and DuckDB read the same rows, and DuckDB's Hive partitions
    # find every node with its samples
    for t in TABLES:
        n_pl = pl.scan_parquet(f"{dir_}/{t}/**/*.parquet", hive_partitioning=True).select(pl.len()).collect().item()
        n_dd = duckdb.sql(f"select count(*) from read_parquet('{dir_}/{t}/*/*.parquet', hive_partitioning=true)").fetchall()[0][0]
        if not (n_pl == n_dd == tables[t].num_rows):
            fail(f"{t}: pyarrow {tables[t].num_rows}, polars {n_pl}, DuckDB {n_dd} rows")
    per_node = Counter(l["node_id"] for l in lines if l.get("event_type") == "ResourceUpdate" and l.get("resource_scope") == "per_node")
    dd = dict(duckdb.sql(f"select node, count(*) from read_parquet('{dir_}/samples/*/*.parquet', hive_partitioning=true) group by node").fetchall())
    if dd != dict(per_node):
        fail(f"DuckDB samples per Hive node {dd} vs the JSONL's {dict(per_node)}")
    print(json.dumps({"lines": len(lines), "rows": {t: tables[t].num_rows for t in TABLES}, "nodes": nodes,
                      "mismatches": len(failures)}))
    sys.exit(1 if failures else 0)


main()
