"""Demand processes: moments, the paper's generator definitions, determinism, replay."""

from __future__ import annotations

import math
import re

import pytest
import torch

from deepstock_fast import demand


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def close(value, want, stderr):
    assert abs(float(value) - want) < 5 * stderr, (float(value), want, stderr)


def test_poisson_moments_per_sku():
    d = demand.Poisson(torch.tensor([2.0, 7.0]), num_skus=2).sample(4000, generator=gen(), paths=25)
    assert d.shape == (2, 25, 4000)
    for s, rate in enumerate((2.0, 7.0)):
        n = d[s].numel()
        close(d[s].mean(), rate, math.sqrt(rate / n))
        close(d[s].var(), rate, rate * math.sqrt(2 / n) * 2)


@pytest.mark.parametrize("rates", [[5.0], [0.0, 3.0, 40.0], list(range(1, 301))])
def test_poisson_frequencies_match_the_pmf(rates):
    process = demand.Poisson(torch.tensor(rates), num_skus=len(rates))
    d = process.sample(60000 // len(rates) + 200, generator=gen())
    for s, rate in list(enumerate(rates))[:3]:
        x = d[s].reshape(-1)
        for k in range(int(rate) - 3, int(rate) + 4):
            if k < 0:
                continue
            p = math.exp(k * math.log(rate) - rate - math.lgamma(k + 1)) if rate else float(k == 0)
            close((x == k).double().mean(), p, max(math.sqrt(p * (1 - p) / x.numel()), 1e-12))


def test_censored_normal_mean_and_rounding():
    mu, sigma = 3.0, 4.0
    d = demand.Normal(mu, sigma).sample(200000, generator=gen())
    z = mu / sigma  # E max(0, X) = mu Phi(z) + sigma phi(z)
    want = mu * 0.5 * (1 + math.erf(z / math.sqrt(2))) + sigma * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    close(d.mean(), want, sigma / math.sqrt(d.numel()))
    assert (d >= 0).all()
    r = demand.Normal(mu, sigma, round=True).sample(100, generator=gen())
    assert (r == r.round()).all()


def test_uniform_int_and_geometric():
    u = demand.UniformInt(3, 8).sample(100000, generator=gen())
    assert set(u.unique().tolist()) == {3.0, 4.0, 5.0, 6.0, 7.0}
    close(u.mean(), 5.0, math.sqrt(2.0 / u.numel()))
    g = demand.Geometric(4.0).sample(200000, generator=gen())
    assert (g == g.round()).all() and (g >= 0).all()
    close(g.mean(), 4.0, math.sqrt(4.0 * 5.0 / g.numel()))  # variance mean (1 + mean)
    close((g == 0).double().mean(), 1 / 5, math.sqrt(0.16 / g.numel()))


def test_paper_independent_definition():
    p = demand.PaperIndependent(horizon=29, num_skus=3, instance_seed=5)
    d = p.sample(29, generator=gen(), paths=400)
    assert ((d >= p.lows) & (d <= p.lows + 4)).all()  # low .. low + 4 on each day
    assert (d == d.round()).all()
    assert set((d - p.lows).unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    again = demand.PaperIndependent(horizon=29, instance_seed=5)
    assert torch.equal(again.lows, p.lows)


def test_ar1_stationary_mean_and_autocorrelation():
    process = demand.AR1(0.6, 50.0, 5.0)  # far from zero: the max(0, .) never binds
    d = process.sample(20000, generator=gen(), paths=20)[0]
    x = d[:, 1000:]
    close(x.mean(), 50.0, 5.0 / math.sqrt(1 - 0.36) / math.sqrt(x.numel() / 4))
    a, b = x[:, 1:] - x.mean(), x[:, :-1] - x.mean()
    close((a * b).mean() / (b * b).mean(), 0.6, 0.01)


def test_ar1_paper_parameter_ranges():
    p = demand.AR1.paper(500, generator=gen())
    assert p.phi.min() >= 0.3 and p.phi.max() <= 0.9
    assert p.base.min() >= 5 and p.base.max() <= 10
    assert p.sigma.min() >= 2 and p.sigma.max() <= 8
    assert (p.sample(30, generator=gen()) >= 0).all()


def test_paper_iid_normal():
    p = demand.paper_iid_normal(1000, generator=gen())
    assert p.std.min() >= 5 and p.std.max() <= 20 and (p.mean == 100).all()


@pytest.mark.parametrize("process", [
    demand.Poisson(5.0, num_skus=4), demand.Normal(10.0, 3.0, num_skus=4),
    demand.UniformInt(0, 9, num_skus=4), demand.Geometric(3.0, num_skus=4),
    demand.PaperIndependent(horizon=30, num_skus=4), demand.AR1(0.5, 8.0, 3.0, num_skus=4)])
def test_seeded_determinism_and_independence(process):
    a = process.sample(30, generator=gen(1), paths=3)
    b = process.sample(30, generator=gen(1), paths=3)
    c = process.sample(30, generator=gen(2), paths=3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # SKUs draw their own randomness


def test_replay_tensor_csv_split_and_missing(tmp_path):
    history = torch.arange(20, dtype=torch.float64).view(2, 10)
    r = demand.Replay(history)
    assert torch.equal(r.sample(10)[:, 0], history)
    path = tmp_path / "demand.csv"
    path.write_text("d0,d1,d2,d3,d4,d5,d6,d7,d8,d9\n" + "\n".join(
        ",".join(str(int(v)) for v in row) for row in history.tolist()) + "\n")
    assert torch.equal(demand.Replay.from_file(path).history, history)
    train, val, test = r.split(0.6, 0.2)
    assert [p.history.shape[1] for p in (train, val, test)] == [6, 2, 2]
    assert torch.equal(torch.cat([train.history, val.history, test.history], 1), history)
    path.write_text("1,2,3\n4,,6\n")
    with pytest.raises(ValueError, match="demand.csv: row 2, column 2 is empty"):
        demand.Replay.from_file(path)
    path.write_text("1,2,3\n4,5\n")
    with pytest.raises(ValueError, match="demand.csv: row 2 has 2 columns, row 1 has 3"):
        demand.Replay.from_file(path)


# ---- replay files: the accepted layout and every way a file can be bad ------------------------
DAYS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


@pytest.mark.parametrize("text,kwargs", [
    ("\ufeffd0,d1,d2\n1,2,3\n4,5,6\n", {}),                      # BOM before a header
    ("\ufeff1,2,3\n4,5,6\n", {}),                                 # BOM before data
    ("sku,d0,d1,d2\n101,1,2,3\n102,4,5,6\n", {}),                  # numeric ids, named column
    (",d0,d1,d2\n0,1,2,3\n1,4,5,6\n", {}),                         # pandas' index column
    ("SKU_ID,2024-01-01,2024-01-02,2024-01-03\nA,1,2,3\nB,4,5,6\n", {}),
    ("101,1,2,3\n102,4,5,6\n", {"id_column": True}),               # declared, no header
    ("1,2,3\n1,2,3\n4,5,6\n", {"header": True}),                  # numeric header, declared
    ("1,2,3\r\n4,5,6\r\n\r\n", {}),                                # trailing blank line, CRLF
    ('"1",2,3\n4,5,"6"\n', {}),                                    # quoted cells
])
def test_replay_csv_layouts(tmp_path, text, kwargs):
    path = tmp_path / "demand.csv"
    path.write_bytes(text.encode())
    assert demand.Replay.from_file(path, **kwargs).history.tolist() == DAYS


def test_replay_gzip_and_parquet_id_columns(tmp_path):
    import gzip

    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    assert demand.Replay.from_file(tmp_path / "d.csv.gz").history.tolist() == DAYS
    pa = pytest.importorskip("pyarrow", reason="Parquet replay needs the optional pyarrow")
    import pyarrow.parquet as pq

    days = {f"d{j}": [row[j] for row in DAYS] for j in range(3)}
    pq.write_table(pa.table({"sku": [7, 8], **days}), tmp_path / "named.parquet")
    assert demand.Replay.from_file(tmp_path / "named.parquet").history.tolist() == DAYS
    pq.write_table(pa.table({"store": ["a", "b"], **days}), tmp_path / "store.parquet")
    assert demand.Replay.from_file(tmp_path / "store.parquet",
                                   id_column=True).history.tolist() == DAYS


def test_replay_csv_errors_name_file_row_and_column(tmp_path):
    import gzip

    cases = [
        (b"", "demand.csv: is empty"),
        (b"\n\n", "demand.csv: is empty"),
        (b"d0,d1,d2\n", "demand.csv: has a header row but no SKU rows"),
        (b"d0,d1\n1,x\n", "demand.csv: row 2, column 2 'x' is not a number"),
        (b"1,2\n3,-1\n", "demand.csv: row 2, column 2: -1.0: demand must be finite"),
        (b"1,2\n3,inf\n", "demand.csv: row 2, column 2: inf: demand must be finite"),
        (b"1,2\nnan,3\n", "demand.csv: row 2, column 1: a missing value (NaN)"),
        (b"1,2\n3,4,5\n", "demand.csv: row 2 has 3 columns, row 1 has 2"),
        (b"1,2\n\n3,4\n", "demand.csv: row 2 is empty"),
        (b"A1,1,2\nA2,3,4\n", "row 2, column 1 'A2' is not a number (SKU ids in column 1?"),
        ("d0,d\xe9\n1,2\n".encode("latin-1"), "demand.csv: row 1, column 2: bytes"),
        ("1,2\n3,4\n".encode("utf-16"), "demand.csv: is UTF-16 text"),
        (gzip.compress(b"1,2\n"), "demand.csv: is gzip-compressed; name it .csv.gz"),
        (b"0,1,2,3,4,5,6\n1,2,3,4,5,6,7\n", "demand.csv: row 1 counts days (0, 1, ...)"),
    ]
    for raw, message in cases:
        path = tmp_path / f"case{cases.index((raw, message))}" / "demand.csv"
        path.parent.mkdir()
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=re.escape(message)):
            demand.Replay.from_file(path)


def test_replay_path_errors(tmp_path):
    import gzip

    with pytest.raises(ValueError, match="missing.csv: no such file"):
        demand.Replay.from_file(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}: is a directory")):
        demand.Replay.from_file(tmp_path)
    (tmp_path / "d.xlsx").write_bytes(b"1,2\n")
    with pytest.raises(ValueError, match="d.xlsx: unknown suffix; use .csv, .csv.gz or .parquet"):
        demand.Replay.from_file(tmp_path / "d.xlsx")
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"1,2\n3,4\n")[:-6])
    with pytest.raises(ValueError, match="d.csv.gz: not a valid gzip file"):
        demand.Replay.from_file(tmp_path / "d.csv.gz")


def test_replay_parquet_errors_name_the_column(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet replay needs the optional pyarrow")
    import pyarrow.parquet as pq

    cases = [
        ({"store": ["a", "b"], "d0": [1.0, 2.0]}, "column 1 ('store') has type string"),
        ({"d0": [1.0, 2.0], "flag": [True, False]}, "column 2 ('flag') has type bool"),
        ({"d0": [1.0, 2.0], "d1": [3.0, -4.0]}, "row 2, column 2 ('d1'): -4.0: demand must be"),
        ({"sku": [1, 2]}, "has no day columns"),
    ]
    for i, (columns, message) in enumerate(cases):
        path = tmp_path / f"case{i}.parquet"
        pq.write_table(pa.table(columns), path)
        with pytest.raises(ValueError, match=re.escape(f"case{i}.parquet: {message}")):
            demand.Replay.from_file(path)
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "case0.parquet").read_bytes()[:50])
    with pytest.raises(ValueError, match="cut.parquet: not a readable Parquet file"):
        demand.Replay.from_file(tmp_path / "cut.parquet")


def test_replay_file_is_parsed_once(tmp_path, monkeypatch):
    path = tmp_path / "demand.csv"
    path.write_text("1,2,3\n4,5,6\n")
    first = demand.Replay.from_file(path).history
    calls = []
    monkeypatch.setattr(demand, "_read_csv", lambda *a: calls.append(a) or torch.ones(3, 3).numpy())
    assert demand.Replay.from_file(str(path)).history is first  # same file: the cached parse
    path.write_text("1,2,3\n4,5,6\n7,8,9\n")                  # changed: parsed again
    demand.Replay.from_file(path)
    assert len(calls) == 1


def test_replay_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet replay needs the optional pyarrow")
    import pyarrow.parquet as pq

    history = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    table = pa.table({f"day{d}": history[:, d].tolist() for d in range(3)})
    pq.write_table(table, tmp_path / "demand.parquet")
    assert torch.equal(demand.Replay.from_file(tmp_path / "demand.parquet").history, history)
    pq.write_table(pa.table({"day0": [1.0, None], "day1": [2.0, 3.0]}), tmp_path / "gap.parquet")
    with pytest.raises(ValueError, match=re.escape("gap.parquet: row 2, column 1 ('day0'): a missing value")):
        demand.Replay.from_file(tmp_path / "gap.parquet")


@pytest.mark.parametrize("make,message", [
    (lambda: demand.Poisson(-1.0), "rate must be >= 0"),
    (lambda: demand.Poisson(torch.ones(3), num_skus=2), "rate needs 1 or num_skus = 2"),
    (lambda: demand.Normal(1.0, -1.0), "std must be >= 0"),
    (lambda: demand.UniformInt(5, 5), "0 <= low < high"),
    (lambda: demand.Geometric(0.0), "mean must be > 0"),
    (lambda: demand.AR1(1.0, 5.0, 1.0), "|phi| < 1"),
    (lambda: demand.Replay(torch.ones(3)), "shape \\[SKU, day\\]"),
    (lambda: demand.Replay(-torch.ones(2, 3)), "non-negative"),
    (lambda: demand.Poisson(1.0).sample(0, generator=gen()), "days and paths must be >= 1"),
    (lambda: demand.PaperIndependent(horizon=5).sample(6, generator=gen()), "exceeds the instance horizon"),
    (lambda: demand.Replay(torch.ones(1, 3)).split(0.5, 0.4), "too few"),
])
def test_bad_inputs(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---- the registry ----------------------------------------------------------------------------------
def test_registry_flags():
    # compare.identical_skus and held_out_instance read these flags (once hand lists there)
    kinds = demand.DEMAND_KINDS
    assert {k for k, c in kinds.items() if c.iid} == {"poisson", "normal", "uniform_int",
                                                      "geometric"}
    assert {k for k, c in kinds.items() if c.drawn} == {"paper_independent", "paper_ar1",
                                                        "paper_iid_normal"}
    assert {k for k, c in kinds.items() if c.has_std} == {"normal", "ar1", "paper_ar1",
                                                          "paper_iid_normal"}
    assert all(c.kind == k for k, c in kinds.items())
    with pytest.raises(ValueError, match="demand kind 'poisson' is registered already"):
        demand.register("poisson")(demand.Poisson)


def test_paper_kinds_draw_as_their_generators():
    # from_spec of the paper's kinds gives the parameters the documented generators draw
    ar1 = demand.DEMAND_KINDS["paper_ar1"].from_spec({"instance_seed": 3}, 50, 30, "cpu")
    want = demand.AR1.paper(50, generator=gen(3))
    assert torch.equal(ar1.phi, want.phi) and torch.equal(ar1.sigma, want.sigma)
    normal = demand.DEMAND_KINDS["paper_iid_normal"].from_spec({}, 50, 30, "cpu")
    assert torch.equal(normal.std, demand.paper_iid_normal(50, generator=gen(0)).std)
    lows = demand.DEMAND_KINDS["paper_independent"].from_spec({"instance_seed": 2}, 4, 30, "cpu")
    assert torch.equal(lows.lows, demand.PaperIndependent(30, 4, 2).lows)
