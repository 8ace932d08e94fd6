"""Reads back what the object_store sink wrote, with DuckDB as the independent
Parquet reader: every manifest, every data file, each Parquet file's DESCRIBE
and rows. S3 objects are first downloaded with boto3 (DuckDB's httpfs extension
is not installable offline). Prints one JSON document on stdout.

usage: read_lake.py URL ENDPOINT WORKDIR   (ENDPOINT empty for file:// URLs)
"""
import datetime
import decimal
import json
import os
import sys

import duckdb

url, endpoint, work = sys.argv[1], sys.argv[2], sys.argv[3]
if url.startswith("s3://"):
    import boto3

    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    root = work
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            rel = o["Key"][len(prefix):].lstrip("/")
            dest = os.path.join(root, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            s3.download_file(bucket, o["Key"], dest)
else:
    root = url[len("file://"):]

UTC_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
NAIVE_EPOCH = datetime.datetime(1970, 1, 1)


def plain(v):
    """A JSON-safe value: timestamps as epoch microseconds, decimals as text."""
    if isinstance(v, datetime.datetime):
        epoch = UTC_EPOCH if v.tzinfo else NAIVE_EPOCH
        return (v - epoch) // datetime.timedelta(microseconds=1)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return v


out = {"root": root, "data_files": [], "manifests": [], "files": {}}
for dirpath, _, names in os.walk(root):
    for name in sorted(names):
        if name.startswith("."):
            continue  # a file being written (the sink's temporary files)
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        if rel.startswith("_progress" + os.sep):
            continue  # the sink's restart bookkeeping, not data
        if rel.startswith("_manifest" + os.sep):
            with open(path) as f:
                out["manifests"].append(json.load(f))
        else:
            out["data_files"].append(rel)
con = duckdb.connect()
for rel in out["data_files"]:
    if not rel.endswith(".parquet"):
        continue
    path = os.path.join(root, rel).replace("'", "''")
    describe = con.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
    rel_rows = con.sql(f"SELECT * FROM read_parquet('{path}')")
    cols = rel_rows.columns
    rows = [{c: plain(v) for c, v in zip(cols, r)} for r in rel_rows.fetchall()]
    out["files"][rel] = {"describe": [[d[0], d[1]] for d in describe], "rows": rows}
json.dump(out, sys.stdout)
