"""Load the HDML authors' TensorFlow 1 code (github.com/wzzheng/HDML at fa03ef0) under TF 2, in memory.

The repository has no licence, so the project never contains its code: these functions take the path of a
checkout and run its files as they are, with the smallest shims for what TF 2 and Python 3 removed. Each
shim is listed here, with why it is needed; nothing else of their code is changed.

1. `tensorflow` resolves to `tf.compat.v1` with v2 behaviour disabled, while their modules are imported
   (they all `import tensorflow as tf`, directly or through `from FLAGS import *`). `tf.compat.v1.layers`
   needs the legacy Keras (`tf-keras`, `TF_USE_LEGACY_KERAS=1`): Keras 3 dropped it.
2. Integral floats as sizes: `HDML.Pulling` tiles by `FLAGS.batch_size / 2` (an int under Python 2's
   division, a float under Python 3's) and by `FLAGS.embedding_size`, a float flag that `fc_block` and
   `embedding_assign` also use as a shape; TF 1's `Dimension` took integral floats (`int(value) == value`),
   TF 2's refuses them. `tf.tile` multiples and the shapes of `tf.get_variable` and `tf.zeros` have
   integral floats cast to int; anything else is refused.
3. `tf.flags`: a fresh absl flag set per load (their `FLAGS.py` defines the flags at import, so a second
   load, e.g. the triplet variant after N-pair, would redefine them in absl's global set), parsed from the
   `argv` given to `load`, as TF 1's `tf.flags.FLAGS` parsed `sys.argv` on first access.
4. `FLAGS.py`: line 30's help string is unterminated (`'init_batch_per_epoch, 500 for cars and cub)`), so
   the file parses in no Python; the missing quote is added before the `)` in memory. The
   `CUDA_VISIBLE_DEVICES` it sets is restored after the import, so it cannot hide devices from the process.
5. `tensorlayer`: `lib/nn_Ops.py` imports it only for `tl.layers.get_variables_with_name(name, train_only,
   printable)`, the (trainable) variables whose name contains `name`; a stub module has that one function.
6. `datasets.data_provider` (fuel, the HDF5 datasets): imported at module level by
   `lib/Embedding_Visualization.py`, whose graph part (`embedding_assign`) needs none of it; an empty module
   stands in. The harness feeds its own batches.
7. `keep_dims`: `lib/Loss_ops.py` calls TF's internal `math_ops.reduce_*(..., keep_dims=True)`
   (`from tensorflow.python.ops import math_ops`), which no longer take the TF 1 keyword; its `math_ops`
   becomes a copy whose four `reduce_*` are `tf.compat.v1`'s, which still do.
8. Python 2 `print x` statements (`lib/evaluation.py`: `print 'done'`, ...) become `print(x)`, in memory.
9. Not a compatibility shim, a harness setting: `load(..., collector_block=k)` replaces the literal block of
   `data_collector` (`if np.shape(self.collector)[0] >= 64:`, lib/nn_Ops.py:292, the block of J_avg and
   J_gen_avg) by k, so a short run crosses a block (the suite's `hdml.block` is set to the same k).

`load(path, argv)` returns their modules by name (`FLAGS`, `lib.nn_Ops`, `lib.HDML`, `lib.Loss_ops`,
`lib.Embedding_Visualization`, and `lib.evaluation` when asked). `main_body(path, file)` compiles a main
script's `main()` up to the session (the graph they build) as a function `build(_)` returning its locals.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import io
import os
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

AUTHORS_COMMIT = "fa03ef0"
THEIR_PACKAGES = ("FLAGS", "lib", "datasets", "tensorlayer", "tensorflow")
FLAGS_LINE_30 = "'init_batch_per_epoch, 500 for cars and cub)"


class AuthorsCodeError(RuntimeError):
    """The checkout is missing, not the expected commit's layout, or TensorFlow cannot load it."""


def tensorflow_v1() -> types.ModuleType:
    """`tf.compat.v1` with v2 behaviour disabled (graph mode, reference variables, as TF 1 ran)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # shim 1: tf.compat.v1.layers needs tf-keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # the plain kernels: no oneDNN reordering of sums
    try:
        import tensorflow as tf
    except ImportError as err:
        raise AuthorsCodeError("tensorflow is not installed: pip install -e '.[authors]'") from err
    tf.compat.v1.disable_v2_behavior()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    return tf.compat.v1


def _int_sizes(multiples: Any) -> Any:
    """Shim 2: integral floats in a Python list of sizes become ints, as TF 1's Dimension took them."""
    if not isinstance(multiples, (list, tuple)):
        return multiples
    out = []
    for m in multiples:
        if isinstance(m, float):
            if not m.is_integer():
                raise ValueError(f"tf.tile multiple {m} is not an integer")
            m = int(m)
        out.append(m)
    return out


def _flags_module(v1: types.ModuleType) -> types.ModuleType:
    """Shim 3: a `tf.flags` whose DEFINE_* and FLAGS use a fresh absl flag set, parsed on first read."""
    from absl import flags as absl_flags
    from tensorflow.python.platform import flags as tf_flags

    values = absl_flags.FlagValues()
    mod = types.ModuleType("tensorflow.flags")
    for kind in ("string", "integer", "float", "bool", "boolean"):
        setattr(mod, f"DEFINE_{kind}", functools.partial(getattr(absl_flags, f"DEFINE_{kind}"), flag_values=values))
    mod.FLAGS = tf_flags._FlagValuesWrapper(values)  # parses sys.argv on the first read, as tf.flags did
    return mod


def _tf_proxy(v1: types.ModuleType) -> types.ModuleType:
    """Shims 1-3: a module that is `tf.compat.v1` except for `tile`, `zeros`, `get_variable` and `flags`."""
    proxy = types.ModuleType("tensorflow")
    proxy.__dict__.update({k: getattr(v1, k) for k in dir(v1) if not k.startswith("__")})
    proxy.tile = lambda input, multiples, name=None: v1.tile(input, _int_sizes(multiples), name=name)  # noqa: A002
    proxy.zeros = lambda shape, *args, **kw: v1.zeros(_int_sizes(shape), *args, **kw)
    proxy.get_variable = lambda name, shape=None, *args, **kw: v1.get_variable(name, _int_sizes(shape), *args, **kw)
    proxy.flags = _flags_module(v1)
    proxy.__path__ = []  # a package, so `from tensorflow.python.ops import ...` finds the real submodules
    return proxy


def _tensorlayer_stub(v1: types.ModuleType) -> types.ModuleType:
    """Shim 5: `tensorlayer.layers.get_variables_with_name`, the one function their code calls."""

    def get_variables_with_name(name: str, train_only: bool = True, printable: bool = False) -> list:
        pool = v1.trainable_variables() if train_only else v1.global_variables()
        return [v for v in pool if name in v.name]

    tl = types.ModuleType("tensorlayer")
    tl.layers = types.SimpleNamespace(get_variables_with_name=get_variables_with_name)
    return tl


def _math_ops_v1(v1: types.ModuleType) -> types.ModuleType:
    """Shim 7: TF's math_ops with the v1 `reduce_*`, which accept `keep_dims`."""
    from tensorflow.python.ops import math_ops

    mod = types.ModuleType("math_ops")
    mod.__dict__.update(vars(math_ops))
    for name in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min"):
        setattr(mod, name, getattr(v1, name))
    return mod


def py2_prints(source: str) -> str:
    """Shim 8: `print x, y` statements -> `print(x, y)` (a line starting with `print` and no parenthesis)."""
    return re.sub(r"^(\s*)print (?!\()(.*?)\s*$", r"\1print(\2)", source, flags=re.MULTILINE)


def _exec_module(name: str, path: Path, source: str) -> types.ModuleType:
    """Run `source` as module `name`, registered in sys.modules, tracebacks pointing at `path`."""
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod
    exec(compile(source, str(path), "exec"), mod.__dict__)
    return mod


def check_checkout(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    need = ["FLAGS.py", "main_npair.py", "main_triplet.py", "lib/HDML.py", "lib/nn_Ops.py", "lib/Loss_ops.py",
            "lib/evaluation.py", "lib/Embedding_Visualization.py"]
    missing = [f for f in need if not (path / f).is_file()]
    if missing:
        raise AuthorsCodeError(f"{path}: not a checkout of wzzheng/HDML at {AUTHORS_COMMIT} "
                               f"(missing {', '.join(missing)})")
    return path


@contextlib.contextmanager
def _their_import_context(root: Path, v1: types.ModuleType) -> Iterator[None]:
    """sys.path, sys.argv and the module names their imports need, restored afterwards (their modules
    keep the references they bound)."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in THEIR_PACKAGES and k != "tensorflow"
             and not k.startswith("tensorflow.")}
    saved_tf = sys.modules.get("tensorflow")
    saved_path, saved_argv, saved_cuda = list(sys.path), list(sys.argv), os.environ.get("CUDA_VISIBLE_DEVICES")
    for k in saved:
        del sys.modules[k]
    try:
        sys.path.insert(0, str(root))
        sys.modules["tensorflow"] = _tf_proxy(v1)
        sys.modules["tensorlayer"] = _tensorlayer_stub(v1)
        datasets = types.ModuleType("datasets")  # shim 6
        datasets.__path__ = []
        datasets.data_provider = types.ModuleType("datasets.data_provider")
        sys.modules["datasets"], sys.modules["datasets.data_provider"] = datasets, datasets.data_provider
        yield
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in THEIR_PACKAGES and not k.startswith("tensorflow.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        if saved_tf is not None:
            sys.modules["tensorflow"] = saved_tf
        sys.path[:], sys.argv[:] = saved_path, saved_argv
        if saved_cuda is None:  # shim 4: FLAGS.py sets CUDA_VISIBLE_DEVICES=2
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda


COLLECTOR_BLOCK = "if np.shape(self.collector)[0] >= 64:"


def load(path: Path, argv: list[str], evaluation: bool = False,
         collector_block: int | None = None) -> dict[str, types.ModuleType]:
    """Import their FLAGS and lib modules from the checkout at `path`, flags parsed from `argv`
    (e.g. ["--batch_size=128", "--embedding_size=16"]). Each call imports them afresh (new flags).
    `collector_block`: see item 9 of the module doc (None: their 64)."""
    root = check_checkout(path)
    v1 = tensorflow_v1()
    with _their_import_context(root, v1):
        sys.argv[:] = ["authors", *argv]
        source = (root / "FLAGS.py").read_text()
        if FLAGS_LINE_30 not in source:
            raise AuthorsCodeError(f"{root / 'FLAGS.py'}: line 30 is not the one of {AUTHORS_COMMIT}")
        source = source.replace(FLAGS_LINE_30, FLAGS_LINE_30[:-1] + "')")  # shim 4
        with contextlib.redirect_stdout(io.StringIO()):  # their import-time prints
            mods = {"FLAGS": _exec_module("FLAGS", root / "FLAGS.py", source)}
            if collector_block is not None:  # item 9
                file = root / "lib" / "nn_Ops.py"
                source = file.read_text()
                if source.count(COLLECTOR_BLOCK) != 1:
                    raise AuthorsCodeError(f"{file}: data_collector's block is not the one of {AUTHORS_COMMIT}")
                lib = importlib.import_module("lib")
                lib.nn_Ops = _exec_module("lib.nn_Ops", file, source.replace(
                    COLLECTOR_BLOCK, COLLECTOR_BLOCK.replace("64", str(int(collector_block)))))
            for name in ("lib.nn_Ops", "lib.Loss_ops", "lib.HDML", "lib.Embedding_Visualization"):
                mods[name] = importlib.import_module(name)
            mods["lib.Loss_ops"].math_ops = _math_ops_v1(v1)
            if evaluation:
                file = root / "lib" / "evaluation.py"
                mods["lib.evaluation"] = _exec_module("lib.evaluation", file, py2_prints(file.read_text()))
    return mods


def main_body(path: Path, script: str) -> types.CodeType:
    """The body of `main()` in their `script` (main_npair.py, main_triplet.py) up to `with tf.Session`:
    the graph they build, as a function `build()` returning its locals."""
    file = check_checkout(path) / script
    tree = ast.parse(file.read_text(), str(file))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    body = []
    for node in main.body:
        if isinstance(node, ast.With) and "Session" in ast.unparse(node.items[0].context_expr):
            break
        body.append(node)
    else:
        raise AuthorsCodeError(f"{file}: main() opens no tf.Session")
    func = ast.FunctionDef(name="build", args=main.args, body=[*body, ast.parse("return locals()").body[0]],
                           decorator_list=[], returns=None, type_params=[])
    module = ast.fix_missing_locations(ast.Module(body=[func], type_ignores=[]))
    return compile(module, str(file), "exec")
