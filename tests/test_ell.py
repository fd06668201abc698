"""The ELL sparse-matrix primitive behind ``RayTransform(kernel="sparse")``: values and
every JAX transformation against a dense matrix."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sps

from uqrecon.operators import _ell, _ell_native
from uqrecon.operators._ell import ell_pair_from_coo

# module-level jits, the matrix an argument
_rmatvec = jax.jit(lambda E, y: E.rmatvec(y))
_per_device_grad = jax.vmap(jax.grad(lambda v, E: jnp.sum(E.matvec(v) ** 2)), in_axes=(0, None))


@pytest.fixture(scope="module")
def pair():
    """A random 30 x 50 sparse matrix (rows of unequal length, some empty) and its ELL."""
    S = sps.random(30, 50, density=0.15, random_state=1, format="coo")
    S = sps.coo_matrix(S.toarray() * (np.arange(30) % 7 != 3)[:, None])  # empty rows
    return ell_pair_from_coo(S.row, S.col, S.data, S.shape), S.toarray()


def _xy(dtype=jnp.float32):
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    return jax.random.normal(kx, (50,), dtype), jax.random.normal(ky, (30,), dtype)


def test_values_and_derivatives_match_the_dense_matrix(pair):
    """``A x``, ``A^T y``, ``grad``, ``jvp`` of ``grad`` (a Hessian-vector product) and
    ``linear_transpose`` against the dense matrix, and the gradient in the stored
    weights against its closed form. Catches a transpose rule that returns
    ``A x`` instead of ``A^T y`` (shapes differ: an error), a jvp that drops the tangent,
    and tables built from the wrong coordinate (``A^T`` stored for ``A``)."""
    E, D = pair
    x, y = _xy()
    np.testing.assert_allclose(E.matvec(x), D @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_rmatvec(E, y), D.T @ y, rtol=1e-5, atol=1e-5)
    f = lambda v: jnp.sum(jnp.sin(E.matvec(v)))
    np.testing.assert_allclose(jax.grad(f)(x), D.T @ np.cos(D @ x), rtol=1e-5, atol=1e-5)
    hvp = jax.jvp(jax.grad(f), (x,), (2 * x,))[1]
    H = D.T @ (-np.sin(D @ np.asarray(x))[:, None] * D)
    np.testing.assert_allclose(hvp, H @ (2 * np.asarray(x)), rtol=1e-4, atol=1e-4)
    (lt,) = jax.linear_transpose(E.matvec, x)(y)
    np.testing.assert_allclose(lt, D.T @ y, rtol=1e-5, atol=1e-5)
    # in the weights: d/dval_s[k, j] sum sin(A x) = cos((A x)_r) x[idx_s[k, j]], r the row
    # stored at slice s, place k (zero where padded)
    with_val = lambda v: E._replace(fwd=E.fwd._replace(val=v))
    g_val = jax.grad(lambda v: jnp.sum(jnp.sin(with_val(v).matvec(x))))(E.fwd.val)
    row_at = np.asarray(E.fwd.rows)                          # sorted place -> row
    c = np.cos(D @ np.asarray(x))[row_at]
    lo = 0
    for g, i in zip(g_val, E.fwd.idx):
        want = c[lo:lo + i.shape[0], None] * np.asarray(x)[np.asarray(i)]
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
        lo += i.shape[0]


def test_tables_are_sliced_by_row_length(pair):
    """Both tables are sliced ELL: rows sorted by their entry count, each slice padded
    to its own width, every stored entry a matrix entry and every matrix entry stored
    once. Catches rows put in the wrong slice or place (``rows`` not the sort's order), a width that cuts a row short, and an unsorted slicing (wider slices
    first)."""
    E, D = pair
    for table, M in ((E.fwd, D), (E.adj, D.T)):
        assert len(table.idx) > 1
        widths = [i.shape[1] for i in table.idx]
        assert widths == sorted(widths) and widths[0] < widths[-1]
        rebuilt = np.zeros_like(M)
        row_at = np.asarray(table.rows)
        lo = 0
        for i, v in zip(table.idx, table.val):
            for k in range(i.shape[0]):
                np.add.at(rebuilt[row_at[lo + k]], np.asarray(i[k]), np.asarray(v[k]))
            lo += i.shape[0]
        assert lo == M.shape[0]
        np.testing.assert_allclose(rebuilt, M, rtol=1e-6, atol=0)
        assert table.size >= np.count_nonzero(M)


def test_jvp_in_some_weight_slices_only(pair):
    """A tangent in one slice of the weights (the others symbolic zeros) gives the
    derivative of ``A x`` in that slice alone, in row order. Catches the zero slices
    dropped from the concatenation (rows misplaced) or given the tangent slice's rows."""
    E, D = pair
    x, _ = _xy()
    k = len(E.fwd.val) - 1
    dv = jnp.ones_like(E.fwd.val[k])
    f = lambda vk: E._replace(fwd=E.fwd._replace(
        val=(*E.fwd.val[:k], vk))).matvec(x)
    _, tangent = jax.jvp(f, (E.fwd.val[k],), (dv,))
    lo = sum(v.shape[0] for v in E.fwd.val[:k])
    want = np.zeros(D.shape[0], np.float32)
    rows = np.asarray(E.fwd.rows)[lo:]
    idx, dvn = np.asarray(E.fwd.idx[k]), np.asarray(dv)
    want[rows] = (dvn * np.asarray(x)[idx]).sum(1)
    np.testing.assert_allclose(tangent, want, rtol=1e-5, atol=1e-5)


def test_even_rows_stay_one_table_and_few_rows_get_few_slices():
    """A matrix whose rows hold the same number of entries gains nothing from slicing:
    one table in row order (``rows`` the identity). A 5-row matrix gets at most 5
    slices. Both products match the dense matrix. Catches the whole-table path reading
    ``rows`` wrongly and slices of zero rows."""
    rng = np.random.default_rng(3)
    D = np.zeros((20, 40), np.float32)
    for r in range(20):
        D[r, rng.choice(40, 6, replace=False)] = rng.normal(size=6)
    S = sps.coo_matrix(D)
    E = ell_pair_from_coo(S.row, S.col, S.data, S.shape)
    assert len(E.fwd.idx) == 1 and np.array_equal(np.asarray(E.fwd.rows), np.arange(20))
    x, y = jnp.asarray(rng.normal(size=40), jnp.float32), jnp.asarray(rng.normal(size=20),
                                                                        jnp.float32)
    np.testing.assert_allclose(E.matvec(x), D @ np.asarray(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(E.rmatvec(y), D.T @ np.asarray(y), rtol=1e-5, atol=1e-5)
    D5 = np.triu(rng.normal(size=(5, 9))).astype(np.float32)
    S5 = sps.coo_matrix(D5)
    E5 = ell_pair_from_coo(S5.row, S5.col, S5.data, S5.shape)
    assert 1 <= len(E5.fwd.idx) <= 5 and all(i.shape[0] >= 1 for i in E5.fwd.idx)
    x5 = jnp.asarray(rng.normal(size=9), jnp.float32)
    np.testing.assert_allclose(E5.matvec(x5), D5 @ np.asarray(x5), rtol=1e-5, atol=1e-5)


def test_float64(pair):
    """Values in float64 when the input is float64 (the tables hold float32 weights: the
    result is exact for those weights)."""
    E, D = pair
    with jax.enable_x64(True):
        x, _ = _xy(jnp.float64)
        out = E.matvec(x)
        assert out.dtype == jnp.float64
        ref = D.astype(np.float32).astype(np.float64) @ np.asarray(x)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def _fresh(fn, *args):
    """``fn`` lowered and compiled now for ``args`` (a fresh ``jit``, on purpose: the native
    kernel is chosen when lowering, so a cached executable would hide a changed setting,
    e.g. ``UQRECON_NATIVE_KERNELS`` or the size gate). Call it for values; its
    ``as_text()`` is the optimised HLO, which says whether the kernel is called. One
    compilation serves both."""
    return jax.jit(lambda *a: fn(*a)).lower(*args).compile()


def _compiled(fn, *args) -> str:
    """The optimised HLO of :func:`_fresh`."""
    return _fresh(fn, *args).as_text()


def test_vmap_keeps_the_batch_in_one_product(pair, monkeypatch):
    """``vmap`` over images gives the batched product as one primitive on the batch
    (no ``scan`` in the jaxpr); lowered without the native kernel it loops over the
    batch (a ``while``) instead of batching the gather, which measured 3-7x slower on
    CPU. Batched tables (several matrices) fall back to the plain gather. Catches a
    batching rule that loses the batch axis position, vmaps the gather, or maps over
    the batch at the jaxpr level (which would hide the batch from the native kernel)."""
    E, D = pair
    x, _ = _xy()
    X = jnp.stack([x, -2 * x, x ** 2])
    np.testing.assert_allclose(jax.vmap(E.matvec)(X), X @ D.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.vmap(E.matvec, in_axes=1, out_axes=1)(X.T), D @ X.T,
                               rtol=1e-5, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(jax.vmap(E.matvec))(X))
    assert "scan" not in jaxpr and "uqrecon_ell_matvec" in jaxpr
    monkeypatch.setenv("UQRECON_NATIVE_KERNELS", "0")
    hlo = _compiled(jax.vmap(E.matvec), X)
    assert "while" in hlo and _ell_native.TARGET not in hlo
    g = jax.vmap(jax.grad(lambda v: jnp.sum(E.matvec(v) ** 2)))(X)
    np.testing.assert_allclose(g, 2 * (X @ D.T) @ D, rtol=1e-4, atol=1e-4)
    E2 = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), E)
    both = jax.vmap(lambda e, v: e.matvec(v))(E2, X[:2])
    np.testing.assert_allclose(both, X[:2] @ D.T, rtol=1e-5, atol=1e-5)


def _matrices():
    """Sparse test matrices: rows of unequal length (sliced, rows permuted), some empty;
    rows of equal length (one table in row order); a wide one with long rows."""
    rng = np.random.default_rng(7)
    uneven = sps.random(70, 90, density=0.1, random_state=2, format="coo").toarray()
    uneven *= (np.arange(70) % 9 != 4)[:, None]
    uneven[5, :] = rng.normal(size=90)                       # one full row
    even = np.zeros((40, 60))
    for r in range(40):
        even[r, rng.choice(60, 7, replace=False)] = rng.normal(size=7)
    wide = sps.random(12, 3000, density=0.3, random_state=3, format="coo").toarray()
    # above 8 * threads * NATIVE_MIN_UNIT entries: units sized by the table, not the minimum
    large = sps.random(400, 2500, density=0.15, random_state=4, format="coo").toarray()
    return [m.astype(np.float32) for m in (uneven, even, wide, large)]


@pytest.fixture
def small_tables_native(monkeypatch):
    """The kernel also for single vectors of the small test tables (below
    ``NATIVE_SINGLE_MIN_ENTRIES`` they use XLA's gathers)."""
    monkeypatch.setattr(_ell, "NATIVE_SINGLE_MIN_ENTRIES", 0)


def _need_native():
    """Skip (saying why) when the kernel cannot be built here; with
    ``UQRECON_REQUIRE_NATIVE=1`` fail instead, so a broken build cannot pass a check as a
    skip (the developers' final checks set it; ``.ci/run`` does not, and prints whether
    the kernel built: the gathers give the same values)."""
    if not _ell_native.available():
        reason = f"native ELL kernel unavailable: {_ell_native.unavailable_reason()}"
        if os.environ.get("UQRECON_REQUIRE_NATIVE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _close(actual, ref):
    """float32 sums of up to ~900 products against float64: 1e-5 of the largest value
    (a missed, misplaced or mixed-up entry is off by O(1))."""
    np.testing.assert_allclose(actual, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("batch", [None, 1, 2, 3, 4, 8, 9])
def test_native_kernel_matches_the_dense_matrix(batch, small_tables_native):
    """The native CPU kernel (``_ell_native.cc``) against the dense matrix, one vector
    and batches of every size it specialises (1, 2, 4, 8) or not (3, 9), for ``A x``,
    ``A^T y`` and a gradient, on sliced (rows permuted), single and long-row tables
    (long rows are cut into several work units). The compiled program must call the
    kernel, so a silent fall-back to XLA's gathers fails. Broken once each and seen to
    fail: rows written in stored order instead of permuted back, the batch read
    batch-major instead of interleaved, a unit's row range off by one."""
    _need_native()
    rng = np.random.default_rng(0)
    for D in _matrices():
        S = sps.coo_matrix(D)
        E = ell_pair_from_coo(S.row, S.col, S.data, S.shape)
        m, n = D.shape
        lead = () if batch is None else (batch,)
        x = jnp.asarray(rng.normal(size=lead + (n,)), jnp.float32)
        y = jnp.asarray(rng.normal(size=lead + (m,)), jnp.float32)
        fwd = E.matvec if batch is None else jax.vmap(E.matvec)
        adj = E.rmatvec if batch is None else jax.vmap(E.rmatvec)
        forward = _fresh(fwd, x)
        assert _ell_native.TARGET in forward.as_text()
        D64, x64, y64 = (np.asarray(a, np.float64) for a in (D, x, y))
        _close(forward(x), x64 @ D64.T)
        _close(_fresh(adj, y)(y), y64 @ D64)
        loss = lambda v: jnp.sum(jnp.sin(0.1 * E.matvec(v)))
        grad = jax.grad(loss) if batch is None else jax.vmap(jax.grad(loss))
        _close(_fresh(grad, x)(x), 0.1 * np.cos(0.1 * x64 @ D64.T) @ D64)


def test_native_kernel_under_every_transformation(pair, small_tables_native):
    """The kernel's batch as the samplers build it: ``vmap`` over axis 1, two nested
    ``vmap`` (two leading dimensions), a Hessian-vector product (``jvp`` of ``grad``)
    and the gradient with respect to the stored weights with a batch of inputs (its rule
    gathers inputs, no product), compiled fresh (so the products lower to the kernel,
    which the first three assert) against the dense matrix. Catches a batching rule
    that loses the batch position or a dimension, a lowering that flattens the batch
    wrongly, and a weights-derivative that ignores the batch."""
    _need_native()
    E, D = pair
    x, y = _xy()
    X = jnp.stack([x, -2 * x, x ** 2, jnp.cos(x)])                       # (4, 50)
    across = _fresh(jax.vmap(E.matvec, in_axes=1, out_axes=1), X.T)
    assert _ell_native.TARGET in across.as_text()
    np.testing.assert_allclose(across(X.T), D @ np.asarray(X).T, rtol=1e-5, atol=1e-5)
    X2 = jnp.stack([X, 3 * X, -X])                                       # (3, 4, 50)
    nested = _fresh(jax.vmap(jax.vmap(E.matvec)), X2)
    assert _ell_native.TARGET in nested.as_text()
    np.testing.assert_allclose(nested(X2), np.asarray(X2) @ D.T, rtol=1e-5, atol=1e-5)
    f = lambda v: jnp.sum(jnp.sin(E.matvec(v)))
    hvp = _fresh(jax.vmap(lambda v: jax.jvp(jax.grad(f), (v,), (2 * v,))[1]), X)
    assert _ell_native.TARGET in hvp.as_text()
    for row, h in zip(np.asarray(X), np.asarray(hvp(X))):
        H = D.T @ (-np.sin(D @ row)[:, None] * D)
        np.testing.assert_allclose(h, H @ (2 * row), rtol=1e-4, atol=1e-4)

    def loss(vals, v):                     # the weights as variables, the batch summed over
        Ev = E._replace(fwd=E.fwd._replace(val=vals))
        return jnp.sum(jax.vmap(Ev.matvec)(v) * y)

    g = _fresh(jax.grad(loss), E.fwd.val, X)(E.fwd.val, X)   # gathers: no product needed
    # d/dval[s][r, k] of sum_b y[row] (A x_b)[row] = y[row] * sum_b x_b[idx[s][r, k]]
    xsum = np.asarray(X).sum(axis=0)
    rows = np.asarray(E.fwd.rows)
    start = 0
    for gs, i in zip(g, E.fwd.idx):
        i = np.asarray(i)
        r = rows[start:start + i.shape[0]] if len(E.fwd.idx) > 1 else np.arange(i.shape[0])
        np.testing.assert_allclose(gs, np.asarray(y)[r][:, None] * xsum[i], rtol=1e-5, atol=1e-5)
        start += i.shape[0]


def test_the_native_kernel_is_used_only_where_it_applies(pair, monkeypatch):
    """A single vector of a small table, float64 products and a switched-off kernel
    (``UQRECON_NATIVE_KERNELS=0``) use XLA's gathers and give the same values; a batch
    uses the kernel. Catches a kernel called on float64 data (which would be read as
    float32), a switch that does not switch, and a size gate that is ignored."""
    E, D = pair
    x, _ = _xy()
    if _ell_native.available():
        assert _ell_native.TARGET not in _compiled(E.matvec, x)       # a few hundred entries, 1 vector
        assert _ell_native.TARGET in _compiled(jax.vmap(E.matvec), jnp.stack([x, x]))
        monkeypatch.setattr(_ell, "NATIVE_SINGLE_MIN_ENTRIES", 0)
        assert _ell_native.TARGET in _compiled(E.matvec, x)
    monkeypatch.setenv("UQRECON_NATIVE_KERNELS", "0")
    assert not _ell_native.available()
    assert _ell_native.TARGET not in _compiled(E.matvec, x)
    X = jnp.stack([x, 2 * x, -x])
    gathers = _fresh(jax.vmap(E.matvec), X)
    assert _ell_native.TARGET not in gathers.as_text()
    np.testing.assert_allclose(gathers(X), X @ D.T, rtol=1e-5, atol=1e-5)
    monkeypatch.delenv("UQRECON_NATIVE_KERNELS")
    with jax.enable_x64(True):
        x64 = jnp.asarray(x, jnp.float64)
        assert _ell_native.TARGET not in _compiled(E.matvec, x64)


def test_bad_input(pair):
    E, _ = pair
    with pytest.raises(ValueError, match="outside the shape"):
        ell_pair_from_coo([0, 3], [1, 2], [1.0, 1.0], (3, 3))
    with pytest.raises(ValueError, match="length 50"):
        E.matvec(jnp.zeros(49))


def test_gradient_inside_shard_map(pair):
    """Inside ``shard_map`` (``check_vma=True``, the default) the product keeps the mesh
    axes its input varies over, so a gradient through it works and equals the dense one.
    Catches an abstract value built afresh (it drops them: the cotangent's type then
    mismatches and ``grad`` raises)."""
    from jax.sharding import Mesh, PartitionSpec as P

    E, D = pair
    x, _ = _xy()
    X = jnp.stack([x, -x])
    mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
    sharded = jax.shard_map(_per_device_grad, mesh=mesh, in_specs=(P("d"), P()),
                            out_specs=P("d"))
    np.testing.assert_allclose(sharded(X, E), 2 * (X @ D.T) @ D, rtol=1e-4, atol=1e-4)


_PER_DEVICE_TABLES = """
import jax, jax.numpy as jnp, numpy as np, scipy.sparse as sps
from jax.sharding import Mesh, PartitionSpec as P
from uqrecon.operators import _ell, _ell_native
from uqrecon.operators._ell import ell_pair_from_coo
S = sps.random(30, 50, density=0.15, random_state=1, format="coo")
E, D = ell_pair_from_coo(S.row, S.col, S.data, S.shape), S.toarray()
x = jnp.asarray(np.random.default_rng(0).normal(size=50), jnp.float32)
scaled = lambda t, c: t._replace(val=tuple(c * v for v in t.val))
E2 = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), E,
                            E._replace(fwd=scaled(E.fwd, 2.0), adj=scaled(E.adj, 2.0)))
mesh = Mesh(np.array(jax.devices()[:2]), ("d",))
def grad_x(E, x):
    E = jax.tree_util.tree_map(lambda a: a[0], E)
    return jax.grad(lambda v: jnp.sum(E.matvec(v) ** 2))(x)
g = jax.shard_map(grad_x, mesh=mesh, in_specs=(P("d"), P()), out_specs=P())(E2, x)
one = 2 * (D @ np.asarray(x)) @ D          # device 0's gradient; device 1's is 4x it
print(float(np.max(np.abs(np.asarray(g) - 5 * one)) / np.max(np.abs(one))))
"""


def test_per_device_tables_give_the_summed_gradient_of_a_replicated_input():
    """Inside ``shard_map`` with the tables split over two devices and ``x`` replicated,
    the product varies over the devices and ``grad`` with respect to ``x`` is the sum
    of the devices' gradients (JAX's rule for a replicated input). Catches operands
    bound without casting them to their union of varying axes: the product was then
    typed by ``x`` alone and the gradient was device 0's, silently (measured: off by
    4x the gradient). Two host devices, in a subprocess."""
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", _PER_DEVICE_TABLES], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.split()[-1]) < 1e-5

