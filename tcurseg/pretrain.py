"""Pretrain UNETR on the embedded tumour task: ``python -m tcurseg.pretrain`` (= ``tcurseg.train
+experiment=demo_pretrain``; any other override works as for train)."""

from __future__ import annotations

import sys

from tcurseg.train import main

if __name__ == "__main__":
    if not any(arg.startswith(("+experiment=", "experiment=")) for arg in sys.argv[1:]):
        sys.argv.append("+experiment=demo_pretrain")
    main()
