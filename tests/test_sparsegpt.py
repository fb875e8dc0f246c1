"""SparseGPT against independent references: a naive column-by-column OBS, brute-force errors."""
import pytest
import torch

from efficientllava.prune_engine.sparsegpt import Hessian, Pattern, PruneConfigError, sparsegpt


def correlated_inputs(n=2048, d=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5 + torch.eye(d)
    scale = torch.exp(torch.randn(d, generator=g))  # uneven feature scales, like LLM activations
    return (torch.randn(n, d, generator=g) @ mix) * scale


def hessian(X):
    h = Hessian(X.shape[1])
    h.add(X)
    return h.matrix()


def naive_obs(W, H, ratio=None, nm=None, blocksize=128, percdamp=0.01):
    """Textbook OBS loop: one column at a time, every update applied immediately, float64."""
    W, H = W.double().clone(), H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.diag(H).mean() * torch.eye(len(H), dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    rows, cols = W.shape
    mask = torch.zeros_like(W, dtype=torch.bool)
    for c in range(cols):
        if nm is None and c % blocksize == 0:
            j2 = min(c + blocksize, cols)
            k = round(ratio * rows * j2) - round(ratio * rows * c)
            score = (W[:, c:j2] ** 2 / torch.diag(U)[c:j2] ** 2).flatten()
            block = torch.zeros_like(score, dtype=torch.bool)
            block[torch.argsort(score)[:k]] = True
            mask[:, c:j2] = block.view(rows, j2 - c)
        if nm is not None and c % nm[1] == 0:
            score = W[:, c:c + nm[1]] ** 2 / torch.diag(U)[c:c + nm[1]] ** 2
            idx = torch.argsort(score, dim=1)[:, : nm[1] - nm[0]]
            mask[:, c:c + nm[1]].scatter_(1, idx, True)
        err = torch.where(mask[:, c], W[:, c], 0) / U[c, c]
        W[:, c:] -= torch.outer(err, U[c, c:])
    W[mask] = 0
    return W.float()


def recon_error(W, What, X):
    return ((X @ W.T - X @ What.T) ** 2).sum().item()


def magnitude(W, ratio):
    k = round(ratio * W.numel())
    out = W.clone()
    out.view(-1)[torch.argsort(W.abs().flatten())[:k]] = 0
    return out


def wanda(W, X, ratio):
    score = W.abs() * X.norm(dim=0)  # per row: |w| · ||x_col||
    k = round(ratio * W.shape[1])
    out = W.clone()
    out.scatter_(1, torch.argsort(score, dim=1)[:, :k], 0)
    return out


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_matches_naive_obs_unstructured(ratio):
    X = correlated_inputs(d=160)
    W = torch.randn(40, 160)
    (res,), = sparsegpt([W], hessian(X), [[ratio]], blocksize=64)
    ref = naive_obs(W, hessian(X), ratio, blocksize=64)
    assert torch.equal(res.weight == 0, ref == 0)
    torch.testing.assert_close(res.weight, ref, rtol=1e-3, atol=1e-3)


def test_matches_naive_obs_nm():
    X = correlated_inputs(d=96)
    W = torch.randn(24, 96)
    (res,), = sparsegpt([W], hessian(X), pattern=Pattern.parse("2:4"))
    ref = naive_obs(W, hessian(X), nm=(2, 4))
    assert torch.equal(res.weight == 0, ref == 0)
    torch.testing.assert_close(res.weight, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.6, 0.9])
def test_exact_sparsity_per_matrix_for_every_level(ratio):
    X = correlated_inputs(d=200)
    Ws = [torch.randn(30, 200), torch.randn(17, 200)]  # odd sizes: rounding must still be exact
    levels = [ratio, 0.5]
    out = sparsegpt(Ws, hessian(X), [levels, levels], blocksize=64)
    for W, per_level in zip(Ws, out):
        for r, res in zip(levels, per_level):
            assert int((res.weight == 0).sum()) == round(r * W.numel())
            assert res.weight.shape == W.shape


def test_levels_and_stacking_equal_separate_runs():
    """Pruning q,k,v together at several levels gives what separate single-level runs give."""
    X = correlated_inputs(d=128)
    H = hessian(X)
    Ws = [torch.randn(32, 128), torch.randn(16, 128)]
    together = sparsegpt(Ws, H, [[0.4, 0.6], [0.5, 0.7]])
    for W, levels, results in zip(Ws, [[0.4, 0.6], [0.5, 0.7]], together):
        for r, res in zip(levels, results):
            (alone,), = sparsegpt([W], H, [[r]])
            torch.testing.assert_close(res.weight, alone.weight, rtol=1e-4, atol=1e-5)
            assert res.sq_norm == pytest.approx(float(alone.weight.double().square().sum()), rel=1e-5)


@pytest.mark.parametrize("spec, d", [("2:4", 64), ("4:8", 64), ("1:4", 64), ("1:3", 96), ("2:6", 96), ("3:12", 96)])
def test_nm_pattern_holds_in_every_group(spec, d):
    p = Pattern.parse(spec)
    X = correlated_inputs(d=d)
    W = torch.randn(20, d)
    (res,), = sparsegpt([W], hessian(X), pattern=p)
    nonzero_per_group = (res.weight != 0).view(20, d // p.m, p.m).sum(-1)
    assert torch.all(nonzero_per_group == p.n)
    assert res.ratio == pytest.approx(p.sparsity)


@pytest.mark.parametrize("ratio", [0.5, 0.7])
def test_reconstruction_error_beats_magnitude_and_wanda(ratio):
    X = correlated_inputs(n=4096, d=128, seed=1)
    W = torch.randn(64, 128)
    (res,), = sparsegpt([W], hessian(X), [[ratio]])
    e_sgpt = recon_error(W, res.weight, X)
    assert e_sgpt < recon_error(W, magnitude(W, ratio), X)
    assert e_sgpt < recon_error(W, wanda(W, X, ratio), X)


def test_nm_reconstruction_beats_magnitude_nm():
    X = correlated_inputs(n=4096, d=128, seed=2)
    W = torch.randn(64, 128)
    (res,), = sparsegpt([W], hessian(X), pattern=Pattern.parse("2:4"))
    mag = W.clone().view(64, 32, 4)
    mag.scatter_(2, torch.argsort(mag.abs(), dim=2)[..., :2], 0)
    assert recon_error(W, res.weight, X) < recon_error(W, mag.view(64, 128), X)


def test_dead_inputs_are_handled():
    X = correlated_inputs(d=64)
    X[:, [3, 10, 40]] = 0  # inputs that never fire: H_ii = 0
    W = torch.randn(16, 64)
    (res,), = sparsegpt([W], hessian(X), [[0.5]])
    assert torch.isfinite(res.weight).all()
    assert torch.all(res.weight[:, [3, 10, 40]] == 0)
    assert int((res.weight == 0).sum()) == round(0.5 * W.numel())


def test_singular_hessian_retries_with_more_damping():
    X = correlated_inputs(n=8, d=64)  # rank 8 << 64: H is singular, tiny damping may fail in float32
    W = torch.randn(16, 64)
    (res,), = sparsegpt([W], hessian(X), [[0.5]], percdamp=1e-12)
    assert torch.isfinite(res.weight).all()


def test_frobenius_norm_and_error_are_reported():
    X = correlated_inputs(d=64)
    W = torch.randn(16, 64)
    (res,), = sparsegpt([W], hessian(X), [[0.5]])
    assert res.sq_norm == pytest.approx(float(res.weight.double().square().sum()), rel=1e-6)
    assert res.error > 0


def test_hessian_ignores_padding_tokens():
    X = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    h = Hessian(8)
    h.add(X, mask)
    real = X[mask]
    torch.testing.assert_close(h.matrix(), 2 * real.T @ real / len(real))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_sparsity_is_rejected(bad):
    with pytest.raises(PruneConfigError, match="outside"):
        sparsegpt([torch.randn(4, 8)], torch.eye(8), [[bad]])


@pytest.mark.parametrize("spec", ["2-4", "4:2", "0:4", "a:b", "2:4:8"])
def test_malformed_nm_is_rejected(spec):
    with pytest.raises(PruneConfigError):
        Pattern.parse(spec)
