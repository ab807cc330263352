"""Loss curves: rows appended to a CSV (resumable: rows past the resumed step are dropped) and a PNG."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class LossCurve:
    """``log(step, loss=..., lr=...)`` rows into ``<dir>/<name>.csv``; ``plot()`` draws ``<name>.png``."""

    def __init__(self, out_dir: str | Path, name: str = "loss") -> None:
        self.csv_path = Path(out_dir) / f"{name}.csv"
        self.png_path = Path(out_dir) / f"{name}.png"
        self.rows: list[dict[str, float]] = []
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                self.rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]

    def truncate(self, step: int) -> None:
        """Forget rows after ``step`` (a resumed run redoes them)."""
        self.rows = [r for r in self.rows if r["step"] <= step]
        self._write()

    def log(self, step: int, **values: float) -> None:
        self.rows.append({"step": float(step), **{k: float(v) for k, v in values.items()}})
        self._write()

    def _write(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys or ["step"])
            w.writeheader()
            for r in self.rows:
                w.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in r.items()})
        os.replace(tmp, self.csv_path)

    def plot(self, title: str = "") -> Path | None:
        if not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys and k not in ("step", "lr", "sec_per_step")]
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in keys:
            pts = [(r["step"], r[k]) for r in self.rows if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="." if len(pts) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(title or self.csv_path.stem)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = self.png_path.with_name(f".{self.png_path.stem}.tmp.png")
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, self.png_path)
        return self.png_path
