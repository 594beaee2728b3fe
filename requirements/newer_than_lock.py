"""Print the packages whose installed version is none of those requirements/lock.txt pins (make test-latest).

usage: python requirements/newer_than_lock.py LOCK FREEZE
"""

import re
import sys


def pins(path: str) -> dict[str, set[str]]:
    """name -> every version pinned for it (a universal lock may pin one per Python version)."""
    found: dict[str, set[str]] = {}
    for line in open(path, encoding="utf-8"):
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", line)
        if match:
            found.setdefault(re.sub(r"[-_.]+", "-", match.group(1)).lower(), set()).add(match.group(2))
    return found


def main(lock: str, freeze: str) -> None:
    locked, latest = pins(lock), pins(freeze)
    changed = sorted(name for name in latest if name in locked and not latest[name] <= locked[name])
    added = sorted(set(latest) - set(locked) - {"kinesis-lab", "pip", "setuptools"})
    print(f"== {len(changed)} package(s) at a version {lock} does not pin" + (":" if changed else ""))
    for name in changed:
        print(f"   {name}: {', '.join(sorted(latest[name]))} (locked: {', '.join(sorted(locked[name]))})")
    if added:
        print("== not in the lock: " + ", ".join(added))


if __name__ == "__main__":
    main(*sys.argv[1:3])
