"""Helper process for a cold tag scan: reads batches of paths on stdin, writes their tags on stdout.

Run as ``python -m loopcoder.tools.tag_worker ROOT`` by ``tag_index``; messages are length-prefixed pickles.
"""
from __future__ import annotations

import sys

from loopcoder.tools.tag_index import _tag_batch, read_message, write_message


def main() -> None:
    root = sys.argv[1]
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            rels = read_message(stdin)
        except EOFError:
            return
        write_message(stdout, _tag_batch(root, rels))


if __name__ == "__main__":
    main()
