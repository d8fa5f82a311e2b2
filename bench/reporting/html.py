"""``index.html``: one page for people, written by ``report`` into the output directory.

The experiment's metadata, the leaderboard and its CD diagram, the metric tables, the reproduction
report and the figures. Self-contained and offline: inline CSS and a few lines of inline JavaScript
(click a column header to sort), no CDN, no font or script from the network; figures are the PNG
files beside the page, referenced by relative paths.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:12px 20px 48px}
h1{font-size:1.5em;margin:.6em 0 .2em}h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid
#ddd;padding-bottom:.2em}h3{font-size:1.02em;margin:1.1em 0 .3em}
nav a{margin-right:1em}p.note{color:#555;font-size:.9em;margin:.3em 0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.86em;background:#fff;margin:.4em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2";font-size:.7em}th.desc::after{content:" \\25BC";font-size:.7em}
td.best{font-weight:700}td.second{font-style:italic}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:.9em}
dl.meta dt{color:#555}dl.meta dd{margin:0}
figure{margin:.6em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #e4e4e4;background:#fff}
figcaption{font-size:.85em;color:#555}
.grid figure{width:calc(50% - 10px);margin-right:8px}
@media (max-width:900px){.grid figure{width:100%}}
"""

# Sort a table by the clicked column: numbers by value (data-sort when present), text otherwise.
_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute("data-sort");
        if (v === null) { v = cell.textContent.trim(); }
        var n = parseFloat(v);
        return isNaN(n) ? v.toLowerCase() : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return (typeof x === "number" ? -1 : 1) * (asc ? 1 : -1); }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def table(df: pd.DataFrame, table_id: str = "", sort_values: pd.DataFrame | None = None,
          classes: pd.DataFrame | None = None) -> str:
    """A sortable HTML table of ``df``'s text cells; ``sort_values`` (same shape) gives the value a
    cell sorts by, ``classes`` a CSS class per cell ("best", "second")."""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for i in range(len(df)):
        cells = []
        for j, c in enumerate(df.columns):
            attrs = ""
            if sort_values is not None:
                v = sort_values.iat[i, j]
                if isinstance(v, (int, float, np.floating)) and np.isfinite(v):
                    attrs += f' data-sort="{float(v):.9g}"'
            if classes is not None and classes.iat[i, j]:
                attrs += f' class="{esc(classes.iat[i, j])}"'
            cells.append(f"<td{attrs}>{esc(df.iat[i, j])}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    tid = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table class="sortable"{tid}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def figure(src: str, caption: str, alt: str = "") -> str:
    return (f'<figure><img src="{esc(src)}" alt="{esc(alt or caption)}" loading="lazy">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _meta(info: dict) -> str:
    return '<dl class="meta">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>"
                                         for k, v in info.items()) + "</dl>"


_SYMBOL = {"partial": "\u2020", "flagged": "\u2021", "threshold-extreme": "\u00a7"}


def _cell_marks(marks) -> dict[str, str]:
    """The CSV's ``marks`` text ("letter:partial+flagged;cardio:flagged") as dataset -> symbols."""
    out = {}
    for part in (marks.split(";") if isinstance(marks, str) else []):
        if ":" in part:
            d, words = part.split(":", 1)
            out[d] = "".join(_SYMBOL.get(w, "") for w in words.split("+"))
    return out


def metric_table(csv: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A metric table written by ``tables.write_tables`` (its CSV) as text cells, sort values and
    best/second classes."""
    from bench.reporting.tables import rank_marks

    t = pd.read_csv(csv)
    datasets = [c[:-5] for c in t.columns if c.endswith("_mean")]
    ranks = {d: rank_marks(t[f"{d}_mean"]) for d in datasets}
    ranks["average"] = rank_marks(t["average"])
    text, sort, cls = [], [], []
    for i, r in t.iterrows():
        marks = _cell_marks(r["marks"])
        row_t, row_s, row_c = [r["method"]], [np.nan], [""]
        for d in datasets:
            mu, sd = r[f"{d}_mean"], r[f"{d}_std"]
            if not np.isfinite(mu):
                row_t.append("no ok run")
            else:
                row_t.append(f"{mu:.3f}" + ("" if not np.isfinite(sd) else f" \u00b1 {sd:.3f}")
                             + marks.get(d, ""))
            row_s.append(mu)
            row_c.append(ranks[d].iat[i])
        avg = r["average"]
        row_t.append("" if not np.isfinite(avg) else f"{avg:.3f}")
        row_s.append(avg)
        row_c.append(ranks["average"].iat[i])
        text.append(row_t)
        sort.append(row_s)
        cls.append(row_c)
    cols = ["method", *datasets, "average"]
    return (pd.DataFrame(text, columns=cols), pd.DataFrame(sort, columns=cols),
            pd.DataFrame(cls, columns=cols))


def write_index(out_dir: Path, meta: dict, sections: list[tuple[str, str, str]]) -> Path:
    """Write ``out_dir/index.html``: ``meta`` (label -> value) and ``sections`` (anchor, title, HTML
    body) in order."""
    out_dir = Path(out_dir)
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(t)}</h2>{b}</section>' for a, t, b in sections)
    title = f"advae-bench: {meta.get('config', out_dir.name)}"
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>"
            f"<h1>{esc(title)}</h1>{_meta(meta)}<nav>{nav}</nav>{body}</main>"
            f"<script>{_JS}</script></body></html>\n")
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def versions_text(versions) -> str:
    if isinstance(versions, str):
        try:
            versions = json.loads(versions)
        except json.JSONDecodeError:
            return versions
    if not isinstance(versions, dict):
        return "not recorded"
    return ", ".join(f"{k} {v}" for k, v in versions.items())
