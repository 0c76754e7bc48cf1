"""A Hydra app for the launcher tests: each job (each rank) records what its process saw."""

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(config_path=".", config_name="app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    rank = os.environ.get("RANK", "0")
    markers = Path(cfg.markers)
    markers.mkdir(parents=True, exist_ok=True)
    (markers / f"{cfg.job}_{rank}").touch()
    start = time.time()
    # Hold until `together` jobs have started: only a launcher that runs them at once gets there.
    released = False
    while not released and time.time() - start < cfg.timeout:
        released = len({p.name.split("_")[0] for p in markers.iterdir()}) >= cfg.together
        time.sleep(0.05)
    time.sleep(0.3)
    record = {"job": cfg.job, "rank": int(rank), "world": int(os.environ.get("WORLD_SIZE", "1")),
              "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time(),
              "released": released, "mode": str(HydraConfig.get().mode)}
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / f"seen_{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
