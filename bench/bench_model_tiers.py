"""EFS → NVMe copy throughput of the model store against ``cp`` of the same file, and the sha256 rate that
bounds an S3 → EFS copy (every byte is hashed on its way in).

Two local directories stand in for EFS and NVMe. Each round copies the file once with ``cp`` and once through
``LocalCache.admit`` (the path a worker takes: temporary name, ``copy_file_range``, rename, LRU bookkeeping),
alternating which goes first; the source stays in the page cache, so both sides measure the copy itself.
Usage: ``python bench/bench_model_tiers.py [--mib 384] [--rounds 5] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from comfyserve.model_store.copying import sha256_file
from comfyserve.model_store.local_cache import LocalCache

MiB = 2**20


def make_file(path: Path, size: int) -> None:
    block = os.urandom(16 * MiB)
    with open(path, "wb") as out:
        for offset in range(0, size, len(block)):
            out.write(block[: min(len(block), size - offset)])


def time_cp(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    elapsed = time.perf_counter() - start
    dst.unlink()
    return elapsed


def time_admit(src: Path, nvme: Path, size: int) -> float:
    cache = LocalCache(nvme, budget_bytes=2 * size)
    start = time.perf_counter()
    path = cache.admit("checkpoints/model.safetensors", src, size)
    elapsed = time.perf_counter() - start
    assert path is not None and path.stat().st_size == size
    cache.discard("checkpoints/model.safetensors")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=384, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the stand-in directories go")
    args = parser.parse_args()
    size = args.mib * MiB
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        efs, nvme = root / "efs", root / "nvme"
        efs.mkdir()
        src = efs / "model.safetensors"
        make_file(src, size)
        time_cp(src, root / "warm.bin")  # page-cache the source before either side is timed
        cp_s, ours_s = [], []
        for index in range(args.rounds):
            if index % 2:
                ours_s.append(time_admit(src, nvme, size))
                cp_s.append(time_cp(src, root / "cp.bin"))
            else:
                cp_s.append(time_cp(src, root / "cp.bin"))
                ours_s.append(time_admit(src, nvme, size))
        start = time.perf_counter()
        sha256_file(src)
        sha_s = time.perf_counter() - start
        shutil.rmtree(nvme, ignore_errors=True)
    cp_med, ours_med = statistics.median(cp_s), statistics.median(ours_s)
    figures = {
        "file_mib": args.mib,
        "rounds": args.rounds,
        "cp_mib_s": round(args.mib / cp_med, 1),
        "efs_to_nvme_mib_s": round(args.mib / ours_med, 1),
        "ratio_vs_cp": round(cp_med / ours_med, 3),
        "target_ratio": 0.9,
        "sha256_mib_s": round(args.mib / sha_s, 1),
        "cp_s": [round(s, 4) for s in cp_s],
        "efs_to_nvme_s": [round(s, 4) for s in ours_s],
    }
    write_results("model_tiers", figures)


if __name__ == "__main__":
    main()
