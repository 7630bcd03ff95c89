#!/usr/bin/env python3
"""Seed the configured store from data/: Elasticsearch when ELASTIC_URL or ELASTIC_CLOUD_ID is
set (with ELASTIC_API_KEY), else the embedded SQLite store.

On Elasticsearch it first creates every missing index with its mapping from mappings/, then
bulk-loads with stable ids (re-running creates no duplicates) and prints the counts; a rejected
document is reported on its own line (index/id: error type: reason), the load is undone, and the
exit code is 1. A bad document in data/ stops the load before anything is written, naming file,
index and position. Options: --data FILE, --store PATH (embedded store only).
"""

import sys

from safety_governor.cli import main

if __name__ == "__main__":
    sys.exit(main(["seed", *sys.argv[1:]]))
