"""Hostile names, state files and mirrors (issue 26): what a careless user or an attacker hands the
suite is refused with one line (exit 2) or escaped, never followed, executed or written elsewhere."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from hdml.cli import main
from hdml.eval.aggregate import aggregate
from test_aggregate import write_run

# Markup, quotes, an ampersand and a shell substitution: nothing of it may act in the page.
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&amp;$(touch PWNED)"


class Tags(HTMLParser):
    """Every tag and attribute of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [k for k, _ in attrs]


def files_under(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()}


def test_hostile_names_are_escaped_in_the_report_and_files_stay_under_out(tmp_path):
    runs = []
    for dataset, method, variant in ((f"d{HOSTILE}", f"m{HOSTILE}", "default"), ("cub200", "npair", f"v{HOSTILE}")):
        for seed in (0, 1):
            run = tmp_path / "runs" / dataset / method / variant / f"seed{seed}"
            write_run(run, "npair", "default", seed, None)
            runs.append(run)
    res = tmp_path / "res"
    aggregate(runs, res / "metrics.csv", res / "curves.csv", res / "runs.csv")
    metrics = pd.read_csv(res / "metrics.csv", dtype=str)
    metrics.loc[metrics.metric == "map@r", "metric"] = f"x{HOSTILE}"  # every string column hostile
    metrics.to_csv(res / "metrics.csv", index=False)
    before = files_under(tmp_path)
    out = tmp_path / "out dir"
    assert main(["report", "--metrics", str(res / "metrics.csv"), "--curves", str(res / "curves.csv"),
                 "--runs", str(res / "runs.csv"), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    tags = Tags()
    tags.feed(page)
    assert "script" not in tags.tags and "onerror" not in tags.attrs
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page  # the names are there, as text
    written = files_under(tmp_path) - before
    assert written and all(out.resolve() in p.parents for p in written)
    assert not list(Path.cwd().glob("PWNED"))


@pytest.mark.parametrize("dataset", ["../../escaped", "a/b", "tab\there", "..", ""])
def test_a_name_that_is_no_file_name_is_refused_before_anything_is_written(tmp_path, capsys, dataset):
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame([{"dataset": dataset, "method": "npair", "variant": "default", "seed": 0, "metric": "nmi",
                   "value": 0.5}]).to_csv(metrics, index=False)
    out = tmp_path / "a" / "b" / "out"
    assert main(["report", "--metrics", str(metrics), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metrics.csv" in err and "dataset" in err
    assert files_under(tmp_path) == {metrics.resolve()}


@pytest.mark.parametrize("name", ["..", "new\nline", "bell\x07"])
def test_aggregate_refuses_run_folders_whose_names_are_no_file_names(tmp_path, capsys, name):
    run = tmp_path / "runs" / "cub200" / "npair" / "default" / "seed0"
    write_run(run, "npair", "default", 0, None)
    bad = tmp_path / "runs" / "cub200" / name / "default" / "seed0"
    if name != "..":
        write_run(bad, "npair", "default", 0, None)
    out = tmp_path / "metrics.csv"
    assert main(["aggregate", str(bad), "--out", str(out), "--curves", str(tmp_path / "c.csv"),
                 "--runs-table", str(tmp_path / "r.csv")]) == 2
    assert "method" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------- the rules' shell lines

ODD = "d a'ta\"$(touch PWNED)`touch PWNED2`"


def test_every_path_in_the_rules_shell_lines_is_quoted(tmp_path, venv_env):
    """`snakemake -n -p` prints each job's shell line; split as the shell would, every path
    argument comes back whole, and nothing the paths hold is run."""
    import shlex

    from test_workflow import snakemake

    config = {"data_root": f"{ODD}/root", "results_dir": f"{ODD}/results", "report_dir": f"{ODD}/report",
              "seeds": [0], "datasets": {"digits": {"methods": ["triplet"], "train": {"steps": 8, "device": "cpu"},
                                                    "prepare": {"val_folds": 4}}},
              "tune": {"trials": 1, "startup_trials": 1},
              "variants": {"tuned": {"datasets": ["digits"], "methods": ["triplet"], "set": {"selection": "val"},
                                     "tuned": True}},
              "tsne": {"dataset": "digits", "method": "triplet", "seed": 0}}
    done = snakemake(tmp_path, config, venv_env, "-n", "-p")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
             if line.startswith("Shell command: hdml ")]
    seen = set()
    for line in lines:
        words = shlex.split(line)
        command = words[1] if words[1] != "-v" else words[2]
        seen.add(command)
        paths = [words[i + 1] for i, w in enumerate(words[:-1])
                 if w in ("--root", "--out", "--run", "--study", "--metrics", "--curves", "--runs", "--costs",
                          "--runs-table", "--benchmarks", "--embeddings", "--tsne", "--tuned", ">")]
        paths += [w for w in words if w.endswith(("/seed0", "losses.csv"))]
        assert paths, line
        for path in paths:
            assert path.startswith((ODD, str(tmp_path / ODD))), (path, line)
    assert seen == {"prepare", "cache", "train", "tune", "evaluate", "aggregate", "tsne", "report"}
    assert not list(tmp_path.rglob("PWNED*"))


@pytest.mark.parametrize("key, value", [("data_root", "a\nb"), ("results_dir", "r{dataset}"), ("report_dir", ""),
                                        ("prepare.urls", ["file:///etc/passwd"]),
                                        ("prepare.archive", "x\x1b[2Jy")])
def test_check_config_refuses_paths_no_rule_can_take(tmp_path, capsys, key, value):
    import yaml

    config = {"data_root": "data", "results_dir": "results", "report_dir": "report", "seeds": [0],
              "datasets": {"digits": {"methods": ["triplet"]}}}
    if key.startswith("prepare."):
        config["datasets"]["digits"]["prepare"] = {key.split(".")[1]: value}
    else:
        config[key] = value
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["check-config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and key.split(".")[-1] in err, err


# ---------------------------------------------------------------- downloads: provenance, schemes, hosts, caps

def body(seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(300_000)


def test_a_partial_download_is_never_resumed_from_another_mirror(http_server, tmp_path):
    from hdml.data.datasets.download import download

    a = http_server.add("/a/x.bin", body(1), drop_after=100_000, drops=5)
    b = http_server.add("/b/x.bin", body(2))  # another version of the file: no checksum tells them apart
    download([a, b], tmp_path / "x.bin", None, retries=1, wait=0)
    assert (tmp_path / "x.bin").read_bytes() == body(2)
    assert http_server.requests == [("/a/x.bin", None), ("/b/x.bin", None)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_a_changed_validator_restarts_from_zero(http_server, tmp_path):
    from hdml.data.datasets.download import PrepareError, download

    url = http_server.add("/x.bin", body(1), drop_after=100_000, drops=1, headers={"ETag": '"v1"'})
    with pytest.raises(PrepareError):
        download([url], tmp_path / "x.bin", None, retries=1, wait=0)
    http_server.add("/x.bin", body(2), headers={"ETag": '"v2"'})  # the mirror now serves a new version
    download([url], tmp_path / "x.bin", None, retries=1, wait=0)
    assert (tmp_path / "x.bin").read_bytes() == body(2)
    assert [r for _, r in http_server.requests] == [None, "bytes=100000-", None]


def test_a_checksum_failing_after_a_resume_restarts_from_zero_once(http_server, tmp_path):
    import hashlib

    from hdml.data.datasets.download import PrepareError, download

    url = http_server.add("/x.bin", body(1), drop_after=100_000, drops=1)  # no validators at all
    want = hashlib.md5(body(2)).hexdigest()
    with pytest.raises(PrepareError):
        download([url], tmp_path / "x.bin", want, retries=1, wait=0)
    http_server.add("/x.bin", body(2))
    assert download([url], tmp_path / "x.bin", want, retries=1, wait=0) == want
    assert [r for _, r in http_server.requests] == [None, "bytes=100000-", None]


@pytest.mark.parametrize("action, why", [("file:///etc/hostname", r"only http\(s\) is followed"),
                                         ("http://elsewhere.invalid/x", "not a host of this dataset's mirrors")])
def test_a_confirm_page_is_followed_only_to_http_on_the_datasets_hosts(http_server, tmp_path, action, why):
    from hdml.data.datasets.download import PrepareError, download

    page = (f'<form action="{action}" method="get"><input type="hidden" name="confirm" value="t"></form>').encode()
    url = http_server.add("/uc", page, content_type="text/html")
    with pytest.raises(PrepareError, match=why):
        download([url], tmp_path / "x.bin", None, wait=0)
    assert not list(tmp_path.iterdir()) and len(http_server.requests) == 1


def test_the_opener_speaks_http_only(tmp_path):
    from urllib.error import URLError

    from hdml.data.datasets.download import opener

    (tmp_path / "secret").write_text("x")
    with pytest.raises(URLError, match="unknown url type"):
        opener().open(f"file://{tmp_path / 'secret'}")


def test_a_server_declaring_no_length_is_cut_off(http_server, tmp_path):
    from hdml.data.datasets.download import Footprint, PrepareError, download

    url = http_server.add("/x.bin", body(1), length=False)
    with pytest.raises(PrepareError, match="more than 100,000 bytes without declaring its length"):
        download([url], tmp_path / "x.bin", None, wait=0, max_bytes=100_000)
    assert not list(tmp_path.iterdir())
    # the default cap: twice the dataset's published archive size
    with pytest.raises(PrepareError, match="more than 200,000 bytes"):
        download([url], tmp_path / "x.bin", None, wait=0, footprint=Footprint(archive=100_000, extracted=1))
    assert download([url], tmp_path / "x.bin", None, wait=0, max_bytes=300_000)


# ---------------------------------------------------------------- state files: malformed records

STATUS_CONFIG = {"data_root": "data", "results_dir": "results", "report_dir": "report", "seeds": [0],
                 "datasets": {"digits": {"methods": ["triplet"]}}}
RUN = "digits/triplet/default/seed0"


def status_folder(tmp_path: Path) -> Path:
    import yaml

    config = {**STATUS_CONFIG, "results_dir": str(tmp_path / "results"), "report_dir": str(tmp_path / "report")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    folder = tmp_path / "results" / "runs" / RUN
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("record", ["[1]", '{"state": "running", "host": "h", "pid": "abc", "updated": 1}',
                                    '{"state": "running", "host": "h", "updated": 1}',
                                    '{"state": "running", "host": "h", "pid": 1, "updated": null}',
                                    '{"state": "running", "host": "h", "pid": -1, "updated": 1}', "{"])
def test_a_malformed_progress_record_shows_the_run_unknown(tmp_path, capsys, record):
    folder = status_folder(tmp_path)
    (folder / "progress.json").write_text(record)
    assert main(["status", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs: 1 pending, 1 unknown\n")  # the run and its reference (untrained)
    assert f"unknown     {RUN}  {folder / 'progress.json'}: " in out
    assert main(["summary", str(tmp_path / "c.yaml")]) == 0
    assert "unknown: 1" in capsys.readouterr().out


def test_training_in_a_folder_with_a_malformed_progress_record_reports_its_own_error(digits_root, tmp_path, capsys):
    (tmp_path / "progress.json").write_text("[1]")
    assert main(["train", "--dataset", "digits", "--method", "triplet", "--root", str(digits_root),
                 "--out", str(tmp_path), "--set", "steps=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hdml train: error: ") and "steps" in err and len(err.strip().splitlines()) == 1


def test_the_summary_names_a_malformed_metrics_table_and_goes_on(tmp_path, capsys):
    status_folder(tmp_path)
    (tmp_path / "results" / "metrics.csv").write_text("dataset,method,variant,seed,metric,value\nd,m,v,zero,nmi,x\n")
    assert main(["summary", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "metrics.csv: row 2: seed = 'zero' is not an integer" in out and "failures: 0" in out


def study_db(folder: Path) -> Path:
    """A real study.db of one complete trial (Optuna's SQLite storage), as `hdml tune trial` leaves it."""
    from hdml.workflow.tune import DB, Spec, locked, open_study

    with locked(folder):
        study = open_study(folder, Spec("digits", "triplet", "map@r", 0, 1))
        trial = study.ask()
        trial.set_user_attr("index", 0)
        trial.suggest_float("triplet.margin", 0.01, 0.5)
        study.tell(trial, 0.5)
    return folder / DB


@pytest.mark.parametrize("damage", ["truncated", "random", "zeroed-end"])
def test_a_corrupt_study_is_one_line_from_tune_trial_and_tune_best(tmp_path, capsys, damage):
    import random

    db = study_db(tmp_path / "study")
    data = db.read_bytes()
    db.write_bytes({"truncated": data[: len(data) // 3], "random": random.Random(3).randbytes(len(data)),
                    "zeroed-end": data[:4096] + bytes(len(data) - 4096)}[damage])
    assert main(["tune", "best", "--study", str(db.parent), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{db}: not a readable tuning study" in err
    assert main(["tune", "trial", "--dataset", "digits", "--method", "triplet", "--index", "1", "--study",
                 str(db.parent), "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{db}: not a readable tuning study" in err


# ---------------------------------------------------------------- state files: a property-style sweep

POOL = [None, True, -1, 0, 3, 2**70, 0.5, 1e308, float("nan"), "", "abc", "running", "<b>", "../x", [], {}, [1, "a"]]
KEYS = {"progress.json": ["state", "host", "pid", "updated", "step", "steps", "eta_seconds", "error"],
        "metrics.json": ["train_seconds", "metrics", "selection", "embeddings_sha256"],
        "evaluation.json": ["metrics", "test_selected", "selection"]}
CELLS = ["", "nan", "x<y>", "1e400", "-1", "0.5", "..", "a/b", "digits", "default", "7", "1.5", '"q,"']
COLUMNS = {"metrics.csv": "dataset,method,variant,seed,metric,value",
           "runs.csv": "dataset,method,variant,seed,protocol,alpha,lambda0,softmax,recon,steps,selected_step,selection,"
                       "selection_metric"}
ROUNDS = 8  # per file and kind of junk: bounded, seeded, a few seconds in all


def junk(name: str, seed: int) -> list[bytes]:
    """Random bytes, random JSON values, and near-misses of the file's own shape."""
    import json
    import random

    rng = random.Random(f"{name}-{seed}")
    out = [rng.randbytes(rng.randint(1, 200)) for _ in range(ROUNDS)]
    for _ in range(ROUNDS):
        if name in KEYS:
            record = {k: rng.choice(POOL) for k in rng.sample(KEYS[name], rng.randint(0, len(KEYS[name])))}
            for k in ("metrics", "test_selected", "selection"):
                if k in record and rng.random() < 0.5:
                    record[k] = {m: rng.choice(POOL) for m in ("nmi", "recall@1", "step", "mode", "score")}
            out.append(json.dumps(rng.choice([record, rng.choice(POOL)])).encode())
        elif name in COLUMNS:
            width = COLUMNS[name].count(",") + 1
            rows = ["digits,npair,default,0,nmi,0.5" if name == "metrics.csv" and rng.random() < 0.5 else
                    ",".join(rng.choice(CELLS) for _ in range(rng.choice([width - 1, width, width]))) for _ in range(2)]
            out.append("\n".join([COLUMNS[name], *rows, ""]).encode())
        else:
            out.append(json.dumps(rng.choice(POOL)).encode())
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, digits_root) -> dict:
    """One folder of each kind the commands read: a workflow's results, a trained-looking run, a
    study; every file valid until a test overwrites one."""
    import numpy as np
    import yaml

    from hdml.core.io import write_json
    from hdml.eval.evaluate import Embeddings

    root = tmp_path_factory.mktemp("sandbox")
    folder = status_folder(root)
    run = root / "evalrun" / "digits" / "npair" / "default" / "seed0"
    write_run(run, "npair", "default", 0, None)
    (run / "config.yaml").write_text(yaml.safe_dump({"eval_ks": [1, 2], "seed": 0}))
    rng = np.random.default_rng(0)
    Embeddings(rng.normal(size=(20, 4)).astype(np.float32), np.repeat(np.arange(4), 5)).save(run / "embeddings.npz")
    write_json(run / "metrics.json", {"train_seconds": 1.0})
    study = root / "study"
    study_db(study)
    (root / "metrics.csv").write_text(COLUMNS["metrics.csv"] + "\ndigits,npair,default,0,nmi,0.5\n")
    return {"root": root, "folder": folder, "run": run, "study": study, "data": digits_root}


def commands(s: dict, name: str) -> list[tuple[list[str], tuple[int, ...], Path]]:
    """(argv, allowed exit codes, file to overwrite) of every command that reads `name`."""
    root, cfg = s["root"], str(s["root"] / "c.yaml")
    report = ["report", "--metrics", str(root / "metrics.csv"), "--out", str(root / "report")]
    train = ["train", "--dataset", "digits", "--method", "triplet", "--root", str(s["data"]), "--out",
             str(s["folder"]), "--set", "steps=abc"]
    return {
        "progress.json": [(["status", cfg], (0,), s["folder"] / name), (["summary", cfg], (0,), s["folder"] / name),
                          (train, (2,), s["folder"] / name)],
        "metrics.json": [(["status", cfg], (0,), s["folder"] / name), (["summary", cfg], (0,), s["folder"] / name),
                         (["evaluate", "--run", str(s["run"])], (0, 2), s["run"] / name)],
        "evaluation.json": [(["aggregate", str(s["run"]), "--out", str(root / "agg.csv"), "--curves",
                              str(root / "cur.csv"), "--runs-table", str(root / "runs-out.csv")], (0, 2),
                             s["run"] / name)],
        "metrics.csv": [(["summary", cfg], (0,), root / "results" / name), (report, (0, 2), root / name)],
        "runs.csv": [([*report, "--runs", str(root / name)], (0, 2), root / name)],
        "embeddings.npz": [(["tsne", "--embeddings", str(s["run"] / name), "--out", str(root / "t.csv")], (0, 2),
                            s["run"] / name), (["evaluate", "--run", str(s["run"])], (0, 2), s["run"] / name)],
        "study.db": [(["tune", "best", "--study", str(s["study"]), "--trials", "1"], (2,), s["study"] / name),
                     (["tune", "trial", "--dataset", "digits", "--method", "triplet", "--index", "1", "--study",
                       str(s["study"]), "--root", str(root / "nowhere")], (2,), s["study"] / name)],
    }[name]


@pytest.mark.parametrize("name", ["progress.json", "metrics.json", "evaluation.json", "metrics.csv", "runs.csv",
                                  "study.db", "embeddings.npz"])
def test_junk_in_any_state_file_is_exit_0_or_2_never_a_traceback(sandbox, capsys, name):
    from hdml.train import progress

    saved = {path: path.read_bytes() if path.exists() else None for _, _, path in commands(sandbox, name)}
    for i, content in enumerate(junk(name, 0)):
        for argv, allowed, path in commands(sandbox, name):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            code = main(argv)  # an exception escaping main (a traceback) fails the test
            err = capsys.readouterr().err
            assert code in allowed, (i, content, argv, err)
            if code == 2:
                assert len(err.strip().splitlines()) == 1 and err.startswith(f"hdml {argv[0]}: error: "), err
            if argv[0] == "train":
                assert "steps" in err, err
        if name == "progress.json":  # the reader itself: a checked record or a ValueError naming the file
            try:
                progress.read_checked(sandbox["folder"])
            except ValueError as exc:
                assert str(exc).startswith(str(sandbox["folder"] / name))
    for path, content in saved.items():  # the sandbox as it was, for the next file's commands
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_bytes(content)


# ---------------------------------------------------------------- .mat files, device, smaller items

def mat_junk() -> dict[str, bytes]:
    import random

    rng = random.Random(1)  # 68 random bytes on which scipy's reader raises IndexError
    return {"empty": b"", "one byte": b"\x00", "header only": b"MATLAB 5.0 MAT-file",
            "random": rng.randbytes(rng.randint(0, 300))}


@pytest.mark.parametrize("kind", list(mat_junk()))
def test_an_empty_or_tiny_mat_file_is_a_clear_error(tmp_path, kind):
    from hdml.data.datasets.cars196 import read_annotations
    from hdml.data.datasets.download import PrepareError
    from hdml.model.backbones import CaffeGoogLeNet, load_caffe_mat

    path = tmp_path / "x.mat"
    path.write_bytes(mat_junk()[kind])
    with pytest.raises(ValueError, match=f"weights: {path}: not a MATLAB v4/v5 .mat file"):
        load_caffe_mat(CaffeGoogLeNet(), str(path))
    with pytest.raises(PrepareError, match=f"{path}: cannot read the annotations"):
        read_annotations(path)


def test_device_bogus_is_refused_by_check_config_and_train(tmp_path, capsys, digits_root):
    import yaml

    config = {**STATUS_CONFIG, "datasets": {"digits": {"methods": ["triplet"], "train": {"device": "bogus"}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["check-config", str(tmp_path / "c.yaml")]) == 2
    assert "device: must be auto, cpu, cuda, cuda:N or mps, got 'bogus'" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--method", "triplet", "--root", str(digits_root), "--out",
                 str(tmp_path / "run"), "--set", "device=bogus"]) == 2
    assert "device: must be" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_train_refuses_val_fold_without_selection_val_as_check_config_does(tmp_path, capsys, carved_root):
    assert main(["train", "--dataset", "digits", "--method", "triplet", "--root", str(carved_root), "--out",
                 str(tmp_path / "run"), "--set", "val_fold=1"]) == 2
    assert "val_fold: 1 only applies to selection: val" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_tune_best_with_no_trials_says_so(tmp_path, capsys):
    study_db(tmp_path)
    assert main(["tune", "best", "--study", str(tmp_path), "--trials", "0"]) == 2
    err = capsys.readouterr().err
    assert "--trials 0: a study's budget is at least one trial" in err and "diverged" not in err


def test_best_yaml_may_set_only_the_tuned_search_space(tmp_path, capsys, digits_root):
    import yaml

    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"dataset": "digits", "method": "triplet", "set": {"triplet.margin": 0.2,
                                                                                      "steps": 1}}))
    assert main(["train", "--dataset", "digits", "--method", "triplet", "--root", str(digits_root), "--out",
                 str(tmp_path / "run"), "--tuned", str(best)]) == 2
    assert "`set` holds steps, outside triplet's search space (triplet.margin)" in capsys.readouterr().err
