"""Draw the import graph of the code's layers (docs/import-graph.png) from the import statements.

    python tools/import_graph.py [--out docs/import-graph.png]

Each box is a layer (a folder of bench/, or engine/, methods/, tools/); an arrow A -> B says some
module of A imports one of B, with the number of such module pairs. The rule the picture shows, and
tests/test_layers.py checks: bench/'s layers import only the layers below them, and nothing of the
plumbing imports engine/, methods/ or tools/ (the registry loads those by name).
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Layers from the bottom up, with the packages or modules each holds.
LAYERS = [
    ("bench.contract", "contract"), ("bench.evaluation", "evaluation"), ("bench.execution", "execution"),
    ("bench.reporting", "reporting"), ("bench.cli|bench.commands", "cli"),
    ("engine", "engine"), ("methods", "methods"), ("tools", "tools"),
]


def layer_of(module: str) -> str | None:
    for prefixes, name in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes.split("|")):
            return name
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    mod = module_name(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def edges() -> Counter:
    """(from layer, to layer) -> number of (module, imported module) pairs."""
    counts: Counter = Counter()
    for folder in ("bench", "engine", "methods", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            src = layer_of(module_name(path))
            targets = {layer_of(name) for name in imports(path)} - {None, src}
            for t in targets:
                counts[(src, t)] += 1
    return counts


def draw(counts: Counter, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = {"contract": (1, 0), "evaluation": (1, 1), "execution": (1, 2), "reporting": (1, 3), "cli": (1, 4),
           "engine": (3.2, 1), "methods": (3.2, 2.2), "tools": (3.2, 3.4)}
    fig, ax = plt.subplots(figsize=(7.2, 6.0))
    for name, (x, y) in pos.items():
        plumbing = x < 2
        ax.text(x, y, name, ha="center", va="center", fontsize=11,
                bbox={"boxstyle": "round,pad=0.5", "fc": "#dbe9f6" if plumbing else "#fde8c8",
                      "ec": "0.3"})
    for (a, b), n in sorted(counts.items()):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        upward = (x0 < 2 and x1 < 2 and y1 > y0) or (x0 < 2 and x1 > 2)
        span = round(abs(y1 - y0), 1)
        rad = 0.0 if span <= 1.2 or x0 != x1 else (0.28 if round(span) % 2 else -0.28) * (1 if x0 < 2 else -1)
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "-|>", "color": "red" if upward else "0.35", "lw": 1.0,
                                "shrinkA": 16, "shrinkB": 16, "connectionstyle": f"arc3,rad={rad}"})
        dx, dy = x1 - x0, y1 - y0  # the label at the arc's midpoint (matplotlib's arc3 control point)
        lx, ly = (x0 + x1) / 2 + 0.5 * rad * dy, (y0 + y1) / 2 - 0.5 * rad * dx
        ax.text(lx + 0.05, ly, str(n), fontsize=7, color="0.2",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.text(1, -0.75, "bench/: plumbing (each layer imports only those below it)", ha="center", fontsize=8)
    ax.text(3.2, -0.75, "definitions and tools", ha="center", fontsize=8)
    ax.set_xlim(0.2, 4.0)
    ax.set_ylim(-1.0, 4.6)
    ax.axis("off")
    ax.set_title("Import graph of the layers (arrow: imports; number: module pairs; red: upward)", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "import-graph.png"))
    a = p.parse_args(argv)
    counts = edges()
    for (src, dst), n in sorted(counts.items()):
        print(f"{src:>10} -> {dst:<10} {n}")
    print(f"wrote {draw(counts, Path(a.out))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
