"""The page: a `Report` collects the sections' HTML, writes each figure's files beside it, and
`write_page` lays out the whole as one self-contained report.html (CSS inline, figures as
base64 PNG linked to their PNG and SVG files)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from matplotlib.figure import Figure

from hdml.core.io import write_text, write_with
from hdml.eval.selection import selection_note
from hdml.report.figures import encode
from hdml.report.inputs import Inputs
from hdml.report.names import dataset_title, is_demo
from hdml.report.stats import MIN_SEEDS
from hdml.report.table import Table


def esc(text: object) -> str:
    """The one escaping rule for everything from the results that reaches the page: text,
    attribute values (ids, alt, captions) alike, quotes included."""
    return html.escape(str(text), quote=True)


def href(path: str) -> str:
    """A link to a file named after runs: percent-encoded (a `#` or `?` in a name stays part of
    it), then escaped as an attribute value."""
    return esc(quote(path, safe="/"))


@dataclass
class Report:
    """The page being built: its sections and contents list; figures also go to out_dir/figures."""

    out_dir: Path
    sections: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)

    def section(self, key: str, title: str, body: str) -> None:
        self.toc.append((key, title))
        self.sections.append(f'<section id="{esc(key)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>')

    def figure(self, name: str, fig: Figure, caption: str) -> str:
        """Save `fig` as figures/NAME.png and .svg; inline the PNG, link both files."""
        files = encode(fig)
        for fmt, data in files.items():
            write_with(self.out_dir / "figures" / f"{name}.{fmt}", lambda p, d=data: p.write_bytes(d))
        links = " ".join(f'<a href="{href(f"figures/{name}.{fmt}")}">{fmt.upper()}</a>' for fmt in files)
        return (f'<figure id="fig-{esc(name)}"><img alt="{esc(caption)}" '
                f'src="data:image/png;base64,{base64.b64encode(files["png"]).decode()}">'
                f'<figcaption>{esc(caption)} <span class="files">[{links}]</span></figcaption></figure>')

    def table(self, table: Table) -> str:
        text = table.caption("html")
        note = f'<p class="note">{esc(text)}</p>' if text else ""
        return f'<h3>{esc(table.title)}</h3>\n{table.html()}\n{note}'


def note(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hdml-repro report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1600px; margin: 1.5em auto; padding: 0 1em; color: #222; }}
h2 {{ border-bottom: 2px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }}
h3 {{ font-size: 1em; margin-bottom: 0.3em; }}
table.results {{ border-collapse: collapse; font-size: 0.8em; margin: 0.3em 0; }}
table.results th, table.results td {{ padding: 0.25em 0.35em; border-bottom: 1px solid #ddd; text-align: right;
  white-space: nowrap; }}
table.results th {{ background: #f3f3f3; text-align: center; }}
table.results th.sub {{ font-weight: normal; font-style: italic; }}
table.results td.stub {{ text-align: left; }}
div.scroll {{ overflow-x: auto; }}
table.results td.gs, table.results th.group {{ border-left: 1px solid #bbb; }}
td.best {{ color: #c00000; }}
td.bold {{ font-weight: bold; }}
td.muted {{ color: #888; }}
p.note {{ font-size: 0.8em; color: #555; margin-top: 0.2em; }}
p.missing {{ font-style: italic; color: #777; }}
figure {{ margin: 1em 0; }}
figure img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #444; }}
figcaption span.files {{ white-space: nowrap; }}
nav li {{ margin: 0.1em 0; }}
p.conclusion {{ background: #f4f7fb; border-left: 3px solid #5b7fb0; padding: 0.4em 0.6em; }}
div.banner {{ background: #fff4d6; border: 2px solid #d9a400; padding: 0.6em 0.9em; font-size: 1.05em; }}
</style></head><body>
<h1>Hardness-Aware Deep Metric Learning (Zheng et al., CVPR 2019): reproduction report</h1>
{banner}{intro}
<nav><ul>{toc}</ul></nav>
{body}
</body></html>
"""


def intro(data: Inputs) -> str:
    """The paragraph above the contents: what was run and how to read our numbers."""
    n_runs = data.metrics.groupby(["dataset", "method", "variant", "seed"]).ngroups
    return (f"<p>{n_runs} runs over {len(data.datasets)} dataset(s): {esc(', '.join(data.datasets))}. "
            "Our numbers are from the <b>last checkpoint</b>: mean ± 95% confidence interval over seeds "
            f"(Student t, n − 1 degrees of freedom), in %, given from {MIN_SEEDS} seeds on: fewer seeds give the "
            "mean marked (n=2) in tables, and each seed, with no band, in figures. A difference is marked (bold, "
            "red, “better”) only where its interval, paired by seed, excludes 0 after Holm's correction "
            "for the number of comparisons the table makes; each section ends with what its numbers support. "
            "Every table has the network before metric learning (the seed's initial weights, never trained) as "
            "its reference row. “Protocol” names the formulas (<code>protocol: code</code> or "
            "<code>paper</code>); “evaluation” which checkpoint is reported (paper evaluation: the last, "
            "no validation; fair evaluation: chosen on validation classes). The authors' code kept the "
            "checkpoint with the best <i>test</i> NMI; that number is reported separately, labelled as "
            "test-selected and optimistic. “Triplet hard” is the paper's name for its semi-hard triplet "
            "baseline (method <code>semihard</code> here: FaceNet's semi-hard mining, the closest negative "
            "farther from the anchor than the positive).</p>"
            + selection_note(data.runs))  # runs reporting another checkpoint than the last, labelled


def banner(data: Inputs) -> str:
    """A warning above everything when a dataset's plug-in declares it a demo: its numbers check
    the machinery, they are no evidence about the methods."""
    demos = [d for d in data.datasets if is_demo(d)]
    if not demos:
        return ""
    names = ", ".join(dataset_title(d) for d in demos)
    return (f'<div class="banner" id="demo-banner"><b>Machinery check, not evidence.</b> {html.escape(names)} '
            "is a demo dataset: a toy task at toy scale that exercises every step of the suite. Its numbers say "
            "nothing about how the methods compare on the paper's datasets; read them as a test that the pipeline "
            "runs end to end.</div>\n")


def write_page(rep: Report, data: Inputs) -> Path:
    """report.html from the sections built into `rep`; returns its path."""
    toc = "".join(f'<li><a href="#{href(k)}">{esc(t)}</a></li>' for k, t in rep.toc)
    out = rep.out_dir / "report.html"
    write_text(out, PAGE.format(banner=banner(data), intro=intro(data), toc=toc, body="\n".join(rep.sections)))
    return out
