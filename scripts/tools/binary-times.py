#!/usr/bin/env python3
"""Prints each test binary's wall time from nextest's JUnit report, slowest first.

Usage: binary-times.py target/nextest/default/junit.xml

A binary's wall time is from the start of its first test to the end of its last one (tests of
different binaries run side by side, so these overlap); "busy" is the sum of its tests' times,
and "slowest" its longest test.
"""

import sys
import xml.etree.ElementTree as ET
from datetime import datetime


def when(text):
    # nextest writes RFC 3339 timestamps, e.g. 2026-11-30T13:02:03.123+00:00
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def main(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        print(f"no test report at {path}: {error}")
        return 1
    rows = []
    for suite in root.iter("testsuite"):
        starts, ends, busy, slowest, count, failed = [], [], 0.0, (0.0, ""), 0, 0
        for case in suite.iter("testcase"):
            seconds = float(case.get("time") or 0)
            start = when(case.get("timestamp"))
            if start is not None:
                starts.append(start.timestamp())
                ends.append(start.timestamp() + seconds)
            busy += seconds
            count += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            if seconds > slowest[0]:
                slowest = (seconds, case.get("name", ""))
        wall = max(ends) - min(starts) if starts else busy
        rows.append((wall, busy, count, failed, slowest, suite.get("name", "?")))
    rows.sort(reverse=True)
    print(f"{'wall':>8} {'busy':>8} {'tests':>5}  binary (slowest test)")
    for wall, busy, count, failed, (slow, slow_name), name in rows:
        mark = f"  {failed} FAILED" if failed else ""
        print(f"{wall:7.1f}s {busy:7.1f}s {count:5}  {name} ({slow_name} {slow:.1f}s){mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/nextest/default/junit.xml"))
