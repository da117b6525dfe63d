#!/usr/bin/env python3
"""Build the test models under models/ and their reference predictions.

Run:  scripts/setup-venv && .venv/bin/python models/make_models.py

Deterministic: fixed seeds, single-threaded BLAS, fixed timestamps/uuids, so a
rerun with the pinned packages (scripts/requirements-models.txt) rewrites
byte-identical files. MLflow is NOT imported; the MLflow model directories are
written by hand in the format MLflow 3 writes (see models/README.md).
"""

import os

# Single-threaded BLAS/OpenMP before numpy is imported: keeps float results
# (and so the serialized weights) reproducible from run to run.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import skl2onnx  # noqa: E402
import sklearn  # noqa: E402
import yaml  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPRegressor  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# Fixed metadata (what an MLflow 3 save_model on this machine would record).
# ---------------------------------------------------------------------------
MLFLOW_VERSION = "3.17.2"
PYTHON_VERSION = "3.11.7"
PIP_VERSION = "23.2.1"
SETUPTOOLS_VERSION = "65.5.0"
UTC_TIME_CREATED = "2025-01-01 00:00:00.000000"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
N_CLASSES = 3
MLP_IN, MLP_HIDDEN, MLP_OUT = 64, 128, 10

MODEL_FILE_LIMIT = 100 * 1024

# mlp-large (--large DIR): the compute-bound example, generated at setup, never committed.
LARGE_NAME = "mlp-large"
LARGE_IN, LARGE_HIDDEN, LARGE_LAYERS, LARGE_OUT = 256, 2048, 3, 10
LARGE_SEED = 20251201


def model_uuid(name):
    return uuid.uuid5(uuid.NAMESPACE_URL, f"regserve:models/{name}").hex


# ---------------------------------------------------------------------------
# Small file helpers
# ---------------------------------------------------------------------------
def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def as_py(value):
    """numpy array -> nested lists of python ints/floats (exact float32 values)."""
    return np.asarray(value).tolist()


def dumps_compact(obj, indent=2, _level=0):
    """JSON like json.dumps(indent=2), but lists of scalars stay on one line."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [
            f"{inner}{json.dumps(k)}: {dumps_compact(v, indent, _level + 1)}" for k, v in obj.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (list, dict)) for v in obj):
        items = [f"{inner}{dumps_compact(v, indent, _level + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj)


def r4(x):
    """Round to 4 decimals via text, so the float prints as exactly 4 decimals in JSON."""
    return float(f"{x:.4f}")


# ---------------------------------------------------------------------------
# ONNX helpers
# ---------------------------------------------------------------------------
def tidy(model, graph_name):
    """Deduplicate opset imports (skl2onnx may list a domain twice and lowers
    them to the minimum the ops need), declare exactly TARGET_OPSET so every
    model imports the same opsets, and name the graph."""
    versions = {}
    for op in model.opset_import:
        versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    assert set(versions) <= set(TARGET_OPSET), versions
    assert all(v <= TARGET_OPSET[d] for d, v in versions.items()), versions
    versions = dict(TARGET_OPSET)
    del model.opset_import[:]
    for domain in sorted(versions):
        model.opset_import.append(helper.make_opsetid(domain, versions[domain]))
    model.graph.name = graph_name
    onnx.checker.check_model(model, full_check=True)
    return model


def convert(est, input_name, n_features):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_sklearn(
            est,
            initial_types=[(input_name, FloatTensorType([None, n_features]))],
            options={id(est): {"zipmap": False}} if hasattr(est, "classes_") else None,
            target_opset=TARGET_OPSET,
        )


def columns_wrapper(model):
    """Turn a classifier with one [N,4] input `float_input` into a model with one
    [N,1] input per iris column, concatenated (axis=1) in signature order."""
    m = copy.deepcopy(model)
    g = m.graph
    (old_input,) = list(g.input)
    assert old_input.name == "float_input"
    del g.input[:]
    for col in IRIS_COLUMNS:
        g.input.append(helper.make_tensor_value_info(col, TensorProto.FLOAT, [None, 1]))
    concat = helper.make_node(
        "Concat", IRIS_COLUMNS, [old_input.name], name="ConcatColumns", axis=1
    )
    nodes = [concat] + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return m


def fix_multioutput_reshape(model, output_name, n_out):
    """skl2onnx's MLPRegressor converter ends with Reshape(-1, 1), which is wrong
    for a multi-output regressor (it flattens [N,10] into [N*10,1]). Point that
    Reshape at [-1, n_out] and declare the output as [None, n_out]."""
    g = model.graph
    (reshape,) = [n for n in g.node if n.op_type == "Reshape" and output_name in n.output]
    (init,) = [i for i in g.initializer if i.name == reshape.input[1]]
    assert list(numpy_helper.to_array(init)) == [-1, 1], init
    init.CopyFrom(numpy_helper.from_array(np.array([-1, n_out], dtype=np.int64), init.name))
    (out,) = [o for o in g.output if o.name == output_name]
    out.type.tensor_type.shape.dim[1].dim_value = n_out
    return model


def session(model_bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def describe(sess):
    def one(x):
        return {"name": x.name, "type": x.type, "shape": list(x.shape)}

    return [one(x) for x in sess.get_inputs()], [one(x) for x in sess.get_outputs()]


# ---------------------------------------------------------------------------
# MLflow model directory (written without mlflow)
# ---------------------------------------------------------------------------
def col_schema(columns):
    return [{"type": "float", "name": c, "required": True} for c in columns]


def tensor_spec(name, dtype, shape):
    return {"name": name, "type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}


IRIS_OUTPUT_SCHEMA = [
    tensor_spec("label", "int64", [-1]),
    tensor_spec("probabilities", "float32", [-1, N_CLASSES]),
]


def write_mlflow_dir(name, model, inputs_schema, outputs_schema, example, root=HERE, session_options=None):
    """example: ("dataframe", columns, rows) or ("ndarray", rows). The directory is
    root/name; session_options is the onnx flavor's `onnx_session_options`."""
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    model_bytes = model.SerializeToString()
    write_bytes(os.path.join(d, "model.onnx"), model_bytes)

    if example[0] == "dataframe":
        _, columns, rows = example
        split = {"columns": columns, "data": rows}
        input_example = split
        serving = {"dataframe_split": split}
        example_info = {
            "artifact_path": "input_example.json",
            "pandas_orient": "split",
            "serving_input_path": "serving_input_example.json",
            "type": "dataframe",
        }
    else:
        _, rows = example
        input_example = rows  # MLflow 3 writes an ndarray example as the bare nested list
        serving = {"inputs": rows}
        example_info = {
            "artifact_path": "input_example.json",
            "serving_input_path": "serving_input_example.json",
            "type": "ndarray",
        }
    write_text(os.path.join(d, "input_example.json"), json.dumps(input_example))
    write_text(os.path.join(d, "serving_input_example.json"), json.dumps(serving, indent=2))

    mlmodel = {
        "flavors": {
            "onnx": {
                "code": None,
                "data": "model.onnx",
                "onnx_session_options": session_options,
                "onnx_version": onnx.__version__,
                "providers": ["CPUExecutionProvider"],
            },
            "python_function": {
                "data": "model.onnx",
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.onnx",
                "python_version": PYTHON_VERSION,
            },
        },
        "is_signature_from_type_hint": False,
        "mlflow_version": MLFLOW_VERSION,
        # as mlflow.onnx.save_model computes it: size of the model directory
        # when MLmodel is written (model + input examples)
        "model_size_bytes": sum(
            os.path.getsize(os.path.join(d, f))
            for f in ("model.onnx", "input_example.json", "serving_input_example.json")
        ),
        "model_uuid": model_uuid(name),
        "saved_input_example_info": example_info,
        "signature": {
            "inputs": json.dumps(inputs_schema),
            "outputs": json.dumps(outputs_schema),
            "params": None,
        },
        "type_hint_from_example": False,
        "utc_time_created": UTC_TIME_CREATED,
    }
    # Same call MLflow's Model.to_yaml uses (so long signature strings are
    # folded over several lines exactly as in real MLmodel files).
    write_text(os.path.join(d, "MLmodel"), yaml.safe_dump(mlmodel, default_flow_style=False))

    reqs = [
        f"mlflow=={MLFLOW_VERSION}",
        f"numpy=={np.__version__}",
        f"onnx=={onnx.__version__}",
        f"onnxruntime=={ort.__version__}",
    ]
    write_text(os.path.join(d, "requirements.txt"), "\n".join(reqs))  # MLflow: no final newline
    conda = {
        "channels": ["conda-forge"],
        "dependencies": [
            f"python={PYTHON_VERSION}",
            f"pip<={PIP_VERSION}",
            {"pip": reqs},
        ],
        "name": "mlflow-env",
    }
    write_text(os.path.join(d, "conda.yaml"), yaml.safe_dump(conda, default_flow_style=False))
    python_env = (
        f"python: {PYTHON_VERSION}\n"
        "build_dependencies:\n"
        f"- pip=={PIP_VERSION}\n"
        f"- setuptools=={SETUPTOOLS_VERSION}\n"
        "- wheel\n"
        "dependencies:\n"
        "- -r requirements.txt\n"
    )
    write_text(os.path.join(d, "python_env.yaml"), python_env)
    return model_bytes


# ---------------------------------------------------------------------------
# Reference cases
# ---------------------------------------------------------------------------
def split_body(columns, rows, index=None):
    split = {}
    if index is not None:
        split["index"] = index
    split["columns"] = columns
    split["data"] = rows
    return {"dataframe_split": split}


def csv_text(columns, rows):
    lines = [",".join(columns)] + [",".join(repr(v) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


def iris_cases(X, with_tensor_cases):
    """Returns [(case, request, csv, matrix [N,4] in signature column order)]."""

    def rows(idx):
        return [[float(v) for v in X[i]] for i in idx]

    cases = []
    r = [[5.1, 3.5, 1.4, 0.2]]
    cases.append(("split_1row", split_body(IRIS_COLUMNS, r), None, r))

    # one of each class, plus the versicolor/virginica borderline rows where
    # iris-v1 and iris-v2 disagree; carries a pandas `index`
    idx5 = [10, 70, 83, 106, 133]
    r = rows(idx5)
    cases.append(("split_5rows", split_body(IRIS_COLUMNS, r, index=idx5), None, r))

    r = rows([20, 80, 140])
    body = {"dataframe_records": [dict(zip(IRIS_COLUMNS, row)) for row in r]}
    cases.append(("records_3rows", body, None, r))

    r = rows([5, 50, 100, 77])
    cases.append(("csv_4rows", None, csv_text(IRIS_COLUMNS, r), r))

    r = rows([30, 119])
    body = {"inputs": {c: [row[j] for row in r] for j, c in enumerate(IRIS_COLUMNS)}}
    cases.append(("inputs_columns_dict", body, None, r))

    shuffled = ["petal_width", "sepal_length", "petal_length", "sepal_width"]
    r = rows([25, 72, 129])
    perm = [IRIS_COLUMNS.index(c) for c in shuffled]
    body = split_body(shuffled, [[row[p] for p in perm] for row in r])
    cases.append(("split_columns_shuffled", body, None, r))

    if with_tensor_cases:
        r = rows([40, 90])
        cases.append(("instances_2rows", {"instances": r}, None, r))
        r = rows([15, 65, 115])
        cases.append(("inputs_list", {"inputs": r}, None, r))
    return cases


def mlp_cases():
    rng = np.random.default_rng(12345)
    pool = [[r4(v) for v in row] for row in rng.standard_normal((13, MLP_IN))]
    one, eight, named, inst = pool[0:1], pool[1:9], pool[9:11], pool[11:13]
    return [
        ("inputs_1row", {"inputs": one}, None, one),
        ("inputs_8rows", {"inputs": eight}, None, eight),
        ("inputs_named", {"inputs": {"input": named}}, None, named),
        ("instances_2rows", {"instances": inst}, None, inst),
    ]


def run_case(sess, per_column, matrix):
    x = np.asarray(matrix, dtype=np.float32)
    if per_column:
        feeds = {c: x[:, j : j + 1] for j, c in enumerate(IRIS_COLUMNS)}
    else:
        feeds = {sess.get_inputs()[0].name: x}
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    return {n: as_py(o) for n, o in zip(names, outs)}


def write_reference(name, sess, cases, per_column=False):
    d = os.path.join(HERE, "reference", name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    results = {}
    for case, request, csv, matrix in cases:
        raw = run_case(sess, per_column, matrix)
        results[case] = raw
        doc = {"model": name, "request": request, "csv": csv, "raw_outputs": raw}
        text = dumps_compact(doc) + "\n"
        assert json.loads(text) == doc
        write_text(os.path.join(d, f"{case}.json"), text)
    return results


# ---------------------------------------------------------------------------
def check_versions():
    want = {}
    req = os.path.join(HERE, os.pardir, "scripts", "requirements-models.txt")
    with open(req) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                k, v = line.split("==")
                want[k.strip().lower()] = v.strip()
    have = {
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "pyyaml": yaml.__version__,
    }
    bad = {k: (v, want.get(k)) for k, v in have.items() if want.get(k) != v}
    if bad:
        print(f"warning: versions differ from {req}: {bad} (output may not be byte-identical)",
              file=sys.stderr)


def main():
    check_versions()
    X, y = load_iris(return_X_y=True)

    # iris-v1: logistic regression on all of iris
    lr = LogisticRegression(max_iter=1000).fit(X, y)
    m_v1 = tidy(convert(lr, "float_input", 4), "iris_v1")

    # iris-v2: a depth-2 decision tree (coarser, disagrees with v1 on borderline rows)
    dt = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
    m_v2 = tidy(convert(dt, "float_input", 4), "iris_v2")

    # iris-columns: v1's classifier behind one [N,1] input per column
    m_cols = tidy(columns_wrapper(m_v1), "iris_columns")

    # mlp: regressor on synthetic data, y = tanh(X W + b)
    rng = np.random.default_rng(0)
    Xm = rng.standard_normal((2000, MLP_IN))
    W = rng.standard_normal((MLP_IN, MLP_OUT)) / np.sqrt(MLP_IN)
    b = rng.standard_normal(MLP_OUT) * 0.1
    ym = np.tanh(Xm @ W + b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPRegressor(hidden_layer_sizes=(MLP_HIDDEN,), random_state=0, max_iter=300)
        mlp.fit(Xm, ym)
    m_mlp = convert(mlp, "input", MLP_IN)
    m_mlp = tidy(fix_multioutput_reshape(m_mlp, "variable", MLP_OUT), "mlp")

    iris_sig = col_schema(IRIS_COLUMNS)
    ex_rows = [[float(v) for v in X[i]] for i in (0, 100)]
    iris_example = ("dataframe", IRIS_COLUMNS, ex_rows)
    mlp_example_rows = [[r4(v) for v in np.random.default_rng(7).standard_normal(MLP_IN)]]

    built = {}
    built["iris-v1"] = write_mlflow_dir("iris-v1", m_v1, iris_sig, IRIS_OUTPUT_SCHEMA, iris_example)
    built["iris-v2"] = write_mlflow_dir("iris-v2", m_v2, iris_sig, IRIS_OUTPUT_SCHEMA, iris_example)
    built["iris-columns"] = write_mlflow_dir(
        "iris-columns", m_cols, iris_sig, IRIS_OUTPUT_SCHEMA, iris_example
    )
    built["mlp"] = write_mlflow_dir(
        "mlp",
        m_mlp,
        [tensor_spec("input", "float32", [-1, MLP_IN])],
        [tensor_spec("variable", "float32", [-1, MLP_OUT])],
        ("ndarray", mlp_example_rows),
    )

    # Reference predictions, from the files just written, with python onnxruntime.
    sessions = {}
    for name in built:
        with open(os.path.join(HERE, name, "model.onnx"), "rb") as f:
            data = f.read()
        assert data == built[name]
        sessions[name] = session(data)

    ref = {}
    ref["iris-v1"] = write_reference("iris-v1", sessions["iris-v1"], iris_cases(X, True))
    ref["iris-v2"] = write_reference("iris-v2", sessions["iris-v2"], iris_cases(X, True))
    ref["iris-columns"] = write_reference(
        "iris-columns", sessions["iris-columns"], iris_cases(X, False), per_column=True
    )
    ref["mlp"] = write_reference("mlp", sessions["mlp"], mlp_cases())

    # --- self checks -------------------------------------------------------
    expected_io = {
        "iris-v1": ([("float_input", "tensor(float)", [None, 4])],
                    [("label", "tensor(int64)", [None]),
                     ("probabilities", "tensor(float)", [None, 3])]),
        "iris-columns": ([(c, "tensor(float)", [None, 1]) for c in IRIS_COLUMNS],
                         [("label", "tensor(int64)", [None]),
                          ("probabilities", "tensor(float)", [None, 3])]),
        "mlp": ([("input", "tensor(float)", [None, MLP_IN])],
                [("variable", "tensor(float)", [None, MLP_OUT])]),
    }
    expected_io["iris-v2"] = expected_io["iris-v1"]
    for name, sess in sessions.items():
        ins, outs = describe(sess)
        got = ([(i["name"], i["type"], i["shape"]) for i in ins],
               [(o["name"], o["type"], o["shape"]) for o in outs])
        assert got == expected_io[name], (name, got)
        print(f"{name}: inputs={got[0]} outputs={got[1]}")

    # v2 must disagree with v1 somewhere in the committed payloads
    diff = [c for c in ref["iris-v1"] if ref["iris-v1"][c]["label"] != ref["iris-v2"][c]["label"]]
    assert diff, "iris-v2 predicts the same labels as iris-v1 on every reference case"
    print(f"iris-v1 vs iris-v2 labels differ in cases: {diff}")
    # iris-columns is v1's classifier: same answers on the shared cases
    for c, out in ref["iris-columns"].items():
        assert out == ref["iris-v1"][c], c
    # sanity: the ONNX models agree with sklearn
    x8 = np.asarray(mlp_cases()[1][3], dtype=np.float32)
    got = np.asarray(ref["mlp"]["inputs_8rows"]["variable"])
    assert got.shape == (8, MLP_OUT), got.shape
    assert np.allclose(got, mlp.predict(x8.astype(np.float64)), atol=1e-4)
    for case in ("split_5rows", "csv_4rows"):
        x = np.asarray([r[3] for r in iris_cases(X, True) if r[0] == case][0])
        assert ref["iris-v2"][case]["label"] == dt.predict(x).tolist()
        assert np.allclose(ref["iris-v1"][case]["probabilities"], lr.predict_proba(x), atol=1e-5)
    sk = lr.predict(np.asarray([[5.1, 3.5, 1.4, 0.2]]))
    assert ref["iris-v1"]["split_1row"]["label"] == sk.tolist()

    for root, _, files in os.walk(HERE):
        for fn in files:
            p = os.path.join(root, fn)
            size = os.path.getsize(p)
            assert size < MODEL_FILE_LIMIT, (p, size)
    print("ok")


# ---------------------------------------------------------------------------
# mlp-large: a compute-bound model (not committed; `--large DIR` writes it)
# ---------------------------------------------------------------------------
def large_weights():
    """[(W, b)] per layer, float32, He-scaled so activations keep their size through the ReLUs."""
    rng = np.random.default_rng(LARGE_SEED)
    dims = [LARGE_IN] + [LARGE_HIDDEN] * LARGE_LAYERS + [LARGE_OUT]
    layers = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        w = (rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
        b = rng.standard_normal(fan_out, dtype=np.float32) * np.float32(0.01)
        layers.append((w, b))
    return layers


def large_model(layers):
    """Gemm + Relu per hidden layer, a last Gemm to the outputs: `input` [N,256] -> 3 x 2048 -> `output` [N,10]."""
    nodes, inits, prev = [], [], "input"
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        out = "output" if last else f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [out], name=f"Gemm{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"Relu{i}"))
            prev = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "mlp_large",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, LARGE_IN])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, LARGE_OUT])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.producer_name = "regserve models/make_models.py"
    return tidy(model, "mlp_large")


def large_forward(layers, x):
    """The same network in float64 numpy, to check onnxruntime's answers."""
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64) + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def main_large(root):
    """Write root/mlp-large (an MLflow model directory) and check it; a few seconds."""
    import hashlib
    import time

    layers = large_weights()
    model = large_model(layers)
    example = [[r4(v) for v in np.random.default_rng(LARGE_SEED + 1).standard_normal(LARGE_IN)]]
    data = write_mlflow_dir(
        LARGE_NAME,
        model,
        [tensor_spec("input", "float32", [-1, LARGE_IN])],
        [tensor_spec("output", "float32", [-1, LARGE_OUT])],
        ("ndarray", example),
        root=root,
        # what MLflow (and MLServer's MLflow runtime) give each session: one thread, as regserve's
        session_options={"inter_op_num_threads": 1, "intra_op_num_threads": 1},
    )
    sess = session(data)
    ins, outs = describe(sess)
    assert [(i["name"], i["shape"]) for i in ins] == [("input", [None, LARGE_IN])], ins
    assert [(o["name"], o["shape"]) for o in outs] == [("output", [None, LARGE_OUT])], outs
    x = np.random.default_rng(LARGE_SEED + 2).standard_normal((8, LARGE_IN)).astype(np.float32)
    got = sess.run(None, {"input": x})[0]
    want = large_forward(layers, x)
    assert np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max()), np.abs(got - want).max()
    # What one run costs here (informative: a shared machine is noisy), one intra-op thread.
    cost = {}
    for n in (1, 64):
        xn = np.resize(x, (n, LARGE_IN))
        sess.run(None, {"input": xn})
        reps = 20 if n == 1 else 3
        t0 = time.perf_counter()
        for _ in range(reps):
            sess.run(None, {"input": xn})
        cost[n] = (time.perf_counter() - t0) / reps
    digest = hashlib.sha256(data).hexdigest()[:16]
    print(
        f"{os.path.join(root, LARGE_NAME)}: {len(data) / 1e6:.1f} MB, model.onnx sha256 {digest}…; one run, "
        f"1 thread: batch 1 {cost[1] * 1e3:.2f} ms, batch 64 {cost[64] * 1e3:.1f} ms "
        f"({cost[1] * 64 / cost[64]:.1f}x the rows per second)"
    )


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", metavar="DIR", help="write only the compute-bound mlp-large model, as DIR/mlp-large")
    args = ap.parse_args()
    if args.large:
        main_large(args.large)
    else:
        main()
