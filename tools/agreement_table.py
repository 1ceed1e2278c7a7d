"""Print the agreement table (model x exporter x composite: relative L2 error against Zennit).

Run the agreement tests with a log, then this script on the log::

    export ONNXLRP_AGREEMENT_LOG=/tmp/agreement.jsonl
    python -m pytest tests/test_zennit_agreement.py -k matches_zennit
    python tools/agreement_table.py /tmp/agreement.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    with open(path) as log:
        rows = [json.loads(line) for line in log]
    composites = list(dict.fromkeys(r["composite"] for r in rows))
    table: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        table[r["model"], r["exporter"]][r["composite"]] = r["error"]
    print("| model | exporter | " + " | ".join(composites) + " |")
    print("|---|---|" + "---|" * len(composites))
    for (model, exporter), errors in table.items():
        cells = [f"{errors[c]:.1e}" if c in errors else "-" for c in composites]
        print(f"| {model} | {exporter} | " + " | ".join(cells) + " |")
    print(f"\nworst: {max(r['error'] for r in rows):.2e} over {len(rows)} cases")


if __name__ == "__main__":
    main(sys.argv[1])
