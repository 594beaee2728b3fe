"""Print the packages whose installed version differs from requirements/lock.txt (make test-latest).

usage: python requirements/newer_than_lock.py LOCK FREEZE
"""

import re
import sys


def pins(path: str) -> dict[str, str]:
    found = {}
    for line in open(path, encoding="utf-8"):
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1).split("[")[0]).lower()] = match.group(2)
    return found


def main(lock: str, freeze: str) -> None:
    locked, latest = pins(lock), pins(freeze)
    changed = sorted(name for name in latest if name in locked and locked[name] != latest[name])
    added = sorted(set(latest) - set(locked) - {"kinesis-lab"})
    print(f"== {len(changed)} package(s) newer than {lock}" + (":" if changed else ""))
    for name in changed:
        print(f"   {name}: {locked[name]} -> {latest[name]}")
    if added:
        print("== not in the lock: " + ", ".join(added))


if __name__ == "__main__":
    main(*sys.argv[1:3])
