"""Curvature of the loss at trained weights: batched Hessian-vector products and the estimators built on them.

``HessianOperator`` is H = d^2 L / d theta^2 of the mean loss L over the given data (all batches
together: per-batch Hessians of the summed loss, divided by the total sample count), at the
model's parameters when the operator is built, optionally restricted to the parameters of one
named submodule (the other parameters are held fixed; H is then the corresponding principal
sub-block). The operator is a snapshot: it holds a copy of every parameter and buffer, so
editing the model afterwards changes neither kind of operator.
``op.matvec(V)`` takes one vector (dim,) or a batch (k, dim) and returns H v for every row in one
pass: forward-over-reverse ``torch.func.jvp(torch.func.grad(L))`` vmapped over the rows (chunked
by ``vectors_per_call`` to bound memory). A single vector goes through double backward instead
(``hvp="auto"``): measured on the CPU, the vmap/jvp wrappers cost more than they save for one
vector (tiny net 48 ms vs 12 ms; ResNet-20/4 on 16 images 380 ms vs 220 ms), while for 8 vectors
forward-over-reverse is on par or faster (900 ms vs 1060 ms); ``hvp`` forces either. The model
is never modified: everything runs on a deep copy whose BatchNorm layers are the vmap-safe
functional form of ``analysis.probes.batches``.

BatchNorm is an explicit choice, ``bn``: ``"eval"`` (running statistics held fixed: the loss of
the deployed model) or ``"batch"`` (each batch normalised by its own statistics, differentiated
through: the loss training sees). A train-mode model with BatchNorm and no choice raises; an
eval-mode model defaults to ``"eval"``.

Estimators (no host synchronisation inside their loops; results move to the host once):
- ``lanczos``: Lanczos with full reorthogonalisation (classical Gram-Schmidt, twice), run for
  several starting vectors at once; a breakdown (beta ~ 0) restarts on a fresh random vector
  orthogonal to the basis, selected with ``torch.where`` rather than a host-side branch.
- ``hessian_eigenvalues``: the k largest or k most negative eigenvalues (Ritz values) with the
  a-posteriori bound |beta_m s_mi| on their distance to an eigenvalue of H.
- ``power_iteration_eigenvalues``: PyHessian's method (one HVP at a time, a host sync per step
  for the convergence test, deflation against found vectors): the baseline for benchmarks.
- ``hutchinson_trace`` (Rademacher probes) and ``hutchpp_trace`` (Meyer, Musco, Musco &
  Woodruff 2021: a sketch of the top subspace, exact trace on it, Hutchinson on the rest).
- ``spectral_density``: stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019): per
  probe vector v the Ritz values theta_i and weights tau_i^2 (squared first components of T's
  eigenvectors) form a Gauss quadrature of the spectral measure of v, exact for polynomials of
  degree <= 2m - 1; the density averages them and smooths with a Gaussian kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from analysis.probes.batches import as_batches, functional_copy, has_batchnorm, per_sample_cross_entropy
from analysis.validation import check_choice, check_int, check_real

__all__ = [
    "CURVATURE_BN_CHOICES",
    "HVP_MODES",
    "HessianOperator",
    "LanczosResult",
    "lanczos",
    "EigenResult",
    "hessian_eigenvalues",
    "power_iteration_eigenvalues",
    "TraceEstimate",
    "hutchinson_trace",
    "hutchpp_trace",
    "SpectralDensity",
    "spectral_density",
    "plot_spectral_density",  # noqa: F822  (analysis.plotting.curvature, through __getattr__ below)
]

CURVATURE_BN_CHOICES = ("eval", "batch")
HVP_MODES = ("auto", "forward_over_reverse", "double_backward")


class HessianOperator:
    """The Hessian of the mean loss on ``data`` at ``model``'s parameters, as a batched linear operator.

    Parameters
    ----------
    model:
        Any ``nn.Module``; not modified.
    data:
        One ``(inputs, targets)`` batch or an iterable of them; inputs (and float targets) finite.
    loss_fn:
        ``loss_fn(logits, targets) -> per-sample losses`` of shape (N,) (default cross entropy);
        a reducing loss (``nn.CrossEntropyLoss()``) raises: pass ``reduction='none'``.
    bn:
        ``"eval"`` or ``"batch"`` (module docstring); required for a train-mode BatchNorm model.
    submodule:
        Name of a submodule (as in ``model.named_modules()``, e.g. ``"blocks.3"``) whose
        parameters alone vary; ``None`` for all parameters.
    vectors_per_call:
        At most this many vectors per vmapped HVP (memory grows linearly with it).
    hvp:
        ``"auto"``, ``"forward_over_reverse"`` or ``"double_backward"`` (module docstring).
    params:
        torch.func convention: the point, a dict ``{name: tensor}`` of some or all of
        ``model.named_parameters()`` (the others keep the model's values); default the model's own.

    Attributes: ``dim``, ``shape``, ``param_names`` (in the flat order), ``dtype``, ``device``,
    ``num_matvecs`` (Hessian-vector products done so far). ``op @ v`` is ``H v`` for a (dim,)
    vector or a (dim, k) matrix; ``unflatten(v)`` gives a flat vector (an eigenvector) back as
    per-parameter tensors; ``as_linear_operator()`` is H as a ``scipy.sparse.linalg.LinearOperator``.
    """

    def __init__(self, model: nn.Module, data, *, loss_fn=None, bn: str | None = None,
                 submodule: str | None = None, vectors_per_call: int = 64, hvp: str = "auto",
                 params: dict | None = None) -> None:
        point = params
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if bn is not None:
            check_choice("bn", bn, CURVATURE_BN_CHOICES)
        if has_batchnorm(model):
            if bn is None and model.training:
                raise ValueError(
                    "model is in train mode and has BatchNorm layers; choose bn='eval' (running "
                    "statistics fixed) or bn='batch' (batch statistics, differentiated through), "
                    "or call model.eval() first")
            self.bn = bn or "eval"
        else:
            self.bn = "none"
        self.vectors_per_call = check_int("vectors_per_call", vectors_per_call, min_value=1)
        self.hvp_mode = check_choice("hvp", hvp, HVP_MODES)
        self._clone, bns = functional_copy(model)
        # Every parameter comes from the private deep copy, never from ``model``: detached views of
        # the model's own tensors would let later in-place edits of the model leak into the fixed
        # (non-submodule) parameters while theta, a copy, stays put. The copy keeps the names.
        params = {k: p.detach() for k, p in self._clone.named_parameters()}
        params.update(_check_point(params, point))
        if submodule is not None:
            modules = dict(model.named_modules())
            if submodule not in modules:
                names = [n for n in modules if n][:8]
                raise ValueError(f"submodule {submodule!r} is not a submodule of the model; "
                                 f"names look like {names}{' ...' if len(modules) > 9 else ''}")
            prefix = f"{submodule}." if submodule else ""
            selected = [k for k in params if k.startswith(prefix)]
            if not selected:
                raise ValueError(f"submodule {submodule!r} has no parameters; pick one that does")
        else:
            selected = list(params)
        if not selected:
            raise ValueError("model has no parameters; there is no Hessian")
        self.submodule = submodule
        self.param_names = tuple(selected)
        first = params[selected[0]]
        self.dtype, self.device = first.dtype, first.device
        self._shapes = [params[k].shape for k in selected]
        self._sizes = [params[k].numel() for k in selected]
        self.dim = int(sum(self._sizes))
        self._fixed = {k: v for k, v in params.items() if k not in self.param_names}
        self.theta = torch.cat([params[k].reshape(-1) for k in selected])
        for _, fbn in bns:
            fbn.mode = "batch" if self.bn == "batch" else "eval"
        self._buffers = {k: v.detach() for k, v in self._clone.named_buffers()}
        self._batches = as_batches("data", data, self.device, self.dtype)
        self.num_samples = sum(int(x.shape[0]) for x, _ in self._batches)
        self._loss_fn = loss_fn or per_sample_cross_entropy
        self.num_matvecs = 0
        self._check_per_sample_loss()

        def loss_at(theta, x, y):
            return self._loss_fn(self._logits(theta, x), y).sum() / self.num_samples

        self._loss_at = loss_at
        grad_fn = grad(loss_at)

        def hvp(v, x, y):
            return jvp(lambda t: grad_fn(t, x, y), (self.theta,), (v,))[1]

        self._hvp_batched = vmap(hvp, in_dims=(0, None, None))

    def _logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(theta, self._sizes)
        p = dict(self._fixed)
        p.update({k: c.reshape(s) for k, c, s in zip(self.param_names, chunks, self._shapes)})
        return functional_call(self._clone, (p, self._buffers), (x,))

    def _check_per_sample_loss(self) -> None:
        # The mean is formed here (sum over samples / total count); a loss that already averages
        # over its batch would be divided by N twice: a Hessian N times too small, without an error.
        x, y = self._batches[0]
        with torch.no_grad():
            out = self._loss_fn(self._logits(self.theta, x), y)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if shape != (x.shape[0],):
            got = (f"a {type(out).__name__}" if shape is None else
                   "a scalar (a loss that reduces over the batch)" if shape == () else f"shape {shape}")
            raise ValueError(
                f"loss_fn must return one loss per sample, shape ({x.shape[0]},) on data[0]; got {got}. "
                "Pass reduction='none', e.g. nn.CrossEntropyLoss(reduction='none'): the operator "
                "averages over all samples itself")

    def loss(self) -> float:
        """The mean loss at the operator's parameters (those of the model when it was built)."""
        with torch.no_grad():
            return float(sum(self._loss_at(self.theta, x, y) for x, y in self._batches))

    def gradient(self) -> torch.Tensor:
        """The gradient of the mean loss (flat, in ``param_names`` order)."""
        g = grad(self._loss_at)
        return sum(g(self.theta, x, y) for x, y in self._batches)

    def matvec(self, vectors: torch.Tensor) -> torch.Tensor:
        """H v for a vector (dim,) or every row of a (k, dim) batch."""
        if not isinstance(vectors, torch.Tensor):
            raise TypeError(f"vectors must be a torch.Tensor; got {type(vectors).__name__}")
        single = vectors.dim() == 1
        v = vectors.reshape(1, -1) if single else vectors
        if v.dim() != 2 or v.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape ({self.dim},) or (k, {self.dim}); got {tuple(vectors.shape)}")
        v = v.to(device=self.device, dtype=self.dtype)
        mode = self.hvp_mode
        if mode == "auto":
            mode = "double_backward" if v.shape[0] == 1 else "forward_over_reverse"
        out = []
        for chunk in torch.split(v, self.vectors_per_call):
            if mode == "double_backward":
                out.append(self._double_backward(chunk))
                continue
            acc = torch.zeros_like(chunk)
            for x, y in self._batches:
                acc = acc + self._hvp_batched(chunk, x, y)
            out.append(acc)
        self.num_matvecs += v.shape[0]
        result = torch.cat(out).detach()
        return result[0] if single else result

    def _double_backward(self, chunk: torch.Tensor) -> torch.Tensor:
        theta = self.theta.detach().requires_grad_(True)
        acc = torch.zeros_like(chunk)
        with torch.enable_grad():
            for x, y in self._batches:
                (g,) = torch.autograd.grad(self._loss_at(theta, x, y), theta, create_graph=True)
                if chunk.shape[0] == 1:
                    (h,) = torch.autograd.grad(g, theta, grad_outputs=chunk[0])
                    acc = acc + h.unsqueeze(0)
                else:
                    (h,) = torch.autograd.grad(g, theta, grad_outputs=chunk, is_grads_batched=True)
                    acc = acc + h
        return acc

    def dense(self, max_dim: int = 4096) -> torch.Tensor:
        """The full (dim, dim) Hessian from dim products (small models only; symmetrised)."""
        if self.dim > max_dim:
            raise ValueError(f"dense() builds a {self.dim} x {self.dim} matrix; that exceeds max_dim={max_dim}. "
                             "Restrict to a submodule or use the matrix-free estimators.")
        h = self.matvec(torch.eye(self.dim, dtype=self.dtype, device=self.device))
        return (h + h.T) / 2

    shape = property(lambda self: (self.dim, self.dim))

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        """``H @ v``: v of shape (dim,) or (dim, k), as for a matrix."""
        return self.matvec(v) if v.dim() == 1 else self.matvec(v.T).T

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat (dim,) vector (an eigenvector, a gradient) as ``{parameter name: tensor}``."""
        if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != (self.dim,):
            raise ValueError(f"expected a tensor of shape ({self.dim},); got {getattr(vector, 'shape', vector)!r}")
        chunks = torch.split(vector, self._sizes)
        return {k: c.reshape(s) for k, c, s in zip(self.param_names, chunks, self._shapes)}

    def as_linear_operator(self):
        """H as a ``scipy.sparse.linalg.LinearOperator`` on float64 numpy vectors (for eigsh, cg, ...)."""
        def apply(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.asarray(x).T.reshape(-1, self.dim), dtype=self.dtype, device=self.device)
            out = self.matvec(v).double().cpu().numpy()
            return out.reshape(-1) if np.ndim(x) == 1 else out.T

        return LinearOperator(self.shape, matvec=apply, matmat=apply, rmatvec=apply, dtype=np.float64)

    def __repr__(self) -> str:
        where = f", submodule={self.submodule!r}" if self.submodule is not None else ""
        return f"HessianOperator(dim={self.dim}, bn={self.bn!r}{where}, samples={self.num_samples})"


def _check_point(own: dict, point: dict | None) -> dict:
    if point is None:
        return {}
    unknown = sorted(set(point) - set(own))
    if unknown:
        raise ValueError(f"params names {unknown}, which are not parameters of the model; names look like "
                         f"{list(own)[:4]}")
    wrong = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in point.items() if tuple(v.shape) != tuple(own[k].shape)}
    if wrong:
        raise ValueError(f"params shapes differ from the model's (given, expected): {wrong}")
    return {k: v.detach().to(own[k]).clone() for k, v in point.items()}


def _check_op(op) -> HessianOperator:
    if not (hasattr(op, "matvec") and hasattr(op, "dim")):
        raise TypeError(f"op must be a HessianOperator (or have .matvec and .dim); got {type(op).__name__}")
    return op


def _generator(op, seed: int) -> torch.Generator:
    seed = check_int("seed", seed, min_value=0)
    return torch.Generator(device=op.device).manual_seed(seed)


def _rademacher(shape, gen, op) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=op.device).to(op.dtype) * 2 - 1


# ----------------------------------------------------------------------------------------------
# Lanczos
# ----------------------------------------------------------------------------------------------

@dataclass
class LanczosResult:
    """Tridiagonal coefficients of one Lanczos run per starting vector.

    ``alpha`` (s, m) the diagonals, ``beta`` (s, m - 1) the off-diagonals, ``residual`` (s,)
    the norm of the final residual beta_m, ``basis`` (s, m, dim) the orthonormal Lanczos vectors
    (on the operator's device) when kept.
    """

    alpha: np.ndarray
    beta: np.ndarray
    residual: np.ndarray
    basis: torch.Tensor | None

    def tridiagonal(self, i: int = 0) -> np.ndarray:
        """The m x m tridiagonal matrix T of starting vector ``i``."""
        return np.diag(self.alpha[i]) + np.diag(self.beta[i], 1) + np.diag(self.beta[i], -1)

    def ritz(self, i: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the eigenvectors of T (columns) for starting vector ``i``."""
        return np.linalg.eigh(self.tridiagonal(i))


def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    # Classical Gram-Schmidt twice ("twice is enough", Giraud et al. 2005): one pass leaves
    # O(eps * kappa) components that grow over the iteration; two passes keep Q orthonormal to eps.
    for _ in range(2):
        w = w - torch.einsum("sm,smd->sd", torch.einsum("smd,sd->sm", basis, w), basis)
    return w


def lanczos(op, num_steps: int, *, start_vectors: torch.Tensor | None = None, num_starts: int = 1,
            seed: int = 0, keep_basis: bool = True) -> LanczosResult:
    """``num_steps`` Lanczos steps with full reorthogonalisation from each starting vector at once.

    ``start_vectors`` (s, dim) are used as given (normalised); otherwise ``num_starts`` Rademacher
    vectors are drawn from ``seed``. ``num_steps`` is capped at ``dim`` (the Krylov space is full).
    """
    op = _check_op(op)
    num_steps = check_int("num_steps", num_steps, min_value=1)
    m = min(num_steps, op.dim)
    gen = _generator(op, seed)
    if start_vectors is None:
        s = check_int("num_starts", num_starts, min_value=1)
        q = _rademacher((s, op.dim), gen, op)
    else:
        if not isinstance(start_vectors, torch.Tensor):
            raise TypeError(f"start_vectors must be a torch.Tensor; got {type(start_vectors).__name__}")
        q = start_vectors.reshape(-1, op.dim) if start_vectors.dim() == 1 else start_vectors
        if q.dim() != 2 or q.shape[1] != op.dim:
            raise ValueError(f"start_vectors must have shape (s, {op.dim}); got {tuple(start_vectors.shape)}")
        q = q.to(device=op.device, dtype=op.dtype)
        if bool((q.norm(dim=1) == 0).any()):
            raise ValueError("start_vectors must be nonzero")
        s = q.shape[0]
    q = q / q.norm(dim=1, keepdim=True)
    eps = torch.finfo(op.dtype).eps
    basis = torch.zeros((s, m, op.dim), dtype=op.dtype, device=op.device)
    alpha = torch.zeros((s, m), dtype=op.dtype, device=op.device)
    beta = torch.zeros((s, max(m - 1, 0)), dtype=op.dtype, device=op.device)
    q_prev = torch.zeros_like(q)
    b_prev = torch.zeros(s, dtype=op.dtype, device=op.device)
    scale = torch.zeros(s, dtype=op.dtype, device=op.device)
    b = b_prev
    for j in range(m):
        basis[:, j] = q
        w = op.matvec(q)
        a = (w * q).sum(dim=1)
        w = w - a[:, None] * q - b_prev[:, None] * q_prev
        w = _orthogonalise(w, basis[:, : j + 1])
        b = w.norm(dim=1)
        alpha[:, j] = a
        scale = torch.maximum(scale, a.abs() + b_prev)
        if j == m - 1:
            break
        # beta below ~eps^(3/4) of ||T|| means the Krylov space is (numerically) invariant: continue
        # on a fresh vector orthogonal to the basis, with beta = 0 decoupling T's blocks.
        ok = b > eps ** 0.75 * torch.clamp(scale, min=torch.finfo(op.dtype).tiny)
        fresh = _orthogonalise(_rademacher((s, op.dim), gen, op), basis[:, : j + 1])
        fresh = fresh / torch.clamp(fresh.norm(dim=1, keepdim=True), min=torch.finfo(op.dtype).tiny)
        q_next = torch.where(ok[:, None], w / torch.clamp(b, min=torch.finfo(op.dtype).tiny)[:, None], fresh)
        beta[:, j] = torch.where(ok, b, torch.zeros_like(b))
        q_prev, q, b_prev = q, q_next, beta[:, j]
    return LanczosResult(alpha.double().cpu().numpy(), beta.double().cpu().numpy(),
                         b.double().cpu().numpy(), basis if keep_basis else None)


# ----------------------------------------------------------------------------------------------
# eigenvalues
# ----------------------------------------------------------------------------------------------

@dataclass
class EigenResult:
    """Eigenvalue estimates: ``values`` (ordered as asked), ``error_bounds`` (an eigenvalue of H
    lies within each bound of its value, from the Lanczos residual with a rounding floor; NaN for
    power iteration), ``vectors`` (k, dim) when asked, ``num_matvecs`` Hessian-vector products
    used, ``method``."""

    values: np.ndarray
    error_bounds: np.ndarray
    vectors: torch.Tensor | None
    num_matvecs: int
    method: str


def hessian_eigenvalues(op, k: int = 1, *, which: str = "largest", num_steps: int | None = None,
                        seed: int = 0, return_vectors: bool = False) -> EigenResult:
    """The ``k`` largest (descending) or most negative (``which="smallest"``, ascending) eigenvalues.

    One Lanczos run of ``num_steps`` (default ``min(dim, max(30, 4k))``) products; Ritz pairs
    from T's eigendecomposition; error bound |beta_m s_{m,i}| (Parlett, The Symmetric Eigenvalue
    Problem, Thm 13.1.1: some eigenvalue of H lies within it), but at least the rounding floor
    ``m * eps * max |theta|`` (m steps, eps of ``op.dtype``): not 0 unless every Ritz value is.
    """
    op = _check_op(op)
    k = check_int("k", k, min_value=1, max_value=op.dim)
    check_choice("which", which, ("largest", "smallest"))
    steps = min(op.dim, max(30, 4 * k)) if num_steps is None else check_int("num_steps", num_steps, min_value=k)
    before = op.num_matvecs
    res = lanczos(op, steps, seed=seed, keep_basis=return_vectors)
    theta, s = res.ritz(0)
    order = np.argsort(theta)[::-1][:k] if which == "largest" else np.argsort(theta)[:k]
    # |beta_m s_mi| bounds the distance for the exact T and Q of H; the computed ones are exact for
    # a perturbed H + E, ||E|| = O(m eps ||H||) after m steps with full reorthogonalisation (Paige
    # 1976; Parlett Sec. 13.4), eps that of the products' dtype. Without that floor a breakdown
    # (beta_m = 0) or a converged Ritz vector (s_mi = 0) reports an error of exactly 0.
    # max |theta| <= ||H|| stands for ||H|| and is close to it once the extreme values converged.
    floor = res.alpha.shape[1] * float(torch.finfo(op.dtype).eps) * float(np.max(np.abs(theta)))
    bounds = np.maximum(np.abs(res.residual[0] * s[-1, order]), floor)
    vectors = None
    if return_vectors:
        sel = torch.as_tensor(s[:, order], dtype=op.dtype, device=op.device)
        vectors = (res.basis[0].T @ sel).T
    return EigenResult(theta[order], bounds, vectors, op.num_matvecs - before, "lanczos")


def power_iteration_eigenvalues(op, k: int = 1, *, max_iter: int = 100, tol: float = 1e-3,
                                seed: int = 0) -> EigenResult:
    """PyHessian's method: power iteration with deflation, one HVP and one host sync per step.

    Finds the ``k`` eigenvalues of largest *magnitude* (the top eigenvalue only when it dominates
    the negative end), stopping when the relative change of the Rayleigh quotient is below ``tol``.
    Kept as the benchmark baseline; ``hessian_eigenvalues`` is the better method.
    """
    op = _check_op(op)
    k = check_int("k", k, min_value=1, max_value=op.dim)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    tol = check_real("tol", tol, min_value=0.0)
    gen = _generator(op, seed)
    before = op.num_matvecs
    found: list[torch.Tensor] = []
    values = []
    for _ in range(k):
        v = torch.randn(op.dim, generator=gen, dtype=op.dtype, device=op.device)
        v = v / v.norm()
        eig = None
        for _ in range(max_iter):
            for u in found:
                v = v - (v @ u) * u
            v = v / v.norm()
            hv = op.matvec(v)
            new = float(hv @ v)  # the host sync PyHessian does every step
            v = hv / hv.norm()
            if eig is not None and abs(new - eig) / (abs(eig) + 1e-6) < tol:
                eig = new
                break
            eig = new
        found.append(v)
        values.append(eig)
    return EigenResult(np.array(values), np.full(k, np.nan), torch.stack(found), op.num_matvecs - before,
                       "power_iteration")


# ----------------------------------------------------------------------------------------------
# trace
# ----------------------------------------------------------------------------------------------

@dataclass
class TraceEstimate:
    """A trace estimate with its standard error (from the probes' spread) and cost."""

    value: float
    std_error: float
    num_matvecs: int
    method: str


def hutchinson_trace(op, num_matvecs: int = 100, *, seed: int = 0) -> TraceEstimate:
    """Hutchinson's estimator tr(H) ~ mean_i z_i^T H z_i over Rademacher z_i.

    Its variance is 2 (||H||_F^2 - sum_i H_ii^2) / num_matvecs.
    """
    op = _check_op(op)
    m = check_int("num_matvecs", num_matvecs, min_value=2)
    gen = _generator(op, seed)
    z = _rademacher((m, op.dim), gen, op)
    samples = (op.matvec(z) * z).sum(dim=1).double()
    return TraceEstimate(float(samples.mean()), float(samples.std() / np.sqrt(m)), m, "hutchinson")


def hutchpp_trace(op, num_matvecs: int = 99, *, seed: int = 0) -> TraceEstimate:
    """Hutch++ (Meyer et al. 2021, Alg. 1): k = m/3 sketch vectors S, Q = orth(H S), then
    tr(H) ~ tr(Q^T H Q) + tr(G^T P H P G) / (m - 2k) with P = I - Q Q^T and m - 2k Rademacher G.

    Exact when the sketch spans the whole space (k >= dim); ``std_error`` covers the Hutchinson part.
    """
    op = _check_op(op)
    m = check_int("num_matvecs", num_matvecs, min_value=4)
    k = m // 3
    g_count = m - 2 * k
    gen = _generator(op, seed)
    sketch = _rademacher((k, op.dim), gen, op)
    q, _ = torch.linalg.qr(op.matvec(sketch).T)  # (dim, min(k, dim))
    exact = float(torch.trace(q.T @ op.matvec(q.T).T))
    g = _rademacher((g_count, op.dim), gen, op)
    g = g - (g @ q) @ q.T
    samples = (op.matvec(g) * g).sum(dim=1).double()
    std = float(samples.std() / np.sqrt(g_count)) if g_count > 1 else float("nan")
    return TraceEstimate(exact + float(samples.mean()), std, 2 * k + g_count, "hutch++")


# ----------------------------------------------------------------------------------------------
# spectral density
# ----------------------------------------------------------------------------------------------

@dataclass
class SpectralDensity:
    """Stochastic Lanczos quadrature: ``nodes`` (s, m) Ritz values and ``weights`` (s, m) tau^2 / s.

    ``weights`` sum to 1 over everything; ``moment(p)`` is sum w theta^p, an unbiased estimate of
    tr(H^p) / dim for p <= 2m - 1.
    """

    nodes: np.ndarray
    weights: np.ndarray
    num_matvecs: int

    def moment(self, p: int) -> float:
        p = check_int("p", p, min_value=0)
        return float(np.sum(self.weights * self.nodes ** p))

    def density(self, grid, sigma: float) -> np.ndarray:
        """The Gaussian-smoothed density sum_i w_i N(x; theta_i, sigma^2) at the points of ``grid``."""
        sigma = check_real("sigma", sigma, min_value=0.0, include_min=False)
        x = np.asarray(grid, dtype=np.float64)[:, None]
        z = (x - self.nodes.reshape(1, -1)) / sigma
        return (np.exp(-0.5 * z ** 2) * self.weights.reshape(1, -1)).sum(axis=1) / (sigma * np.sqrt(2 * np.pi))

    def curve(self, num: int = 1000, sigma: float | None = None, pad: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """``(grid, density)`` over the node range padded by ``pad``; sigma default 1% of the range."""
        num = check_int("num", num, min_value=2)
        lo, hi = float(self.nodes.min()), float(self.nodes.max())
        span = max(hi - lo, 1e-12 * max(1.0, abs(hi)))
        sigma = 0.01 * span if sigma is None else sigma
        grid = np.linspace(lo - pad * span - 3 * sigma, hi + pad * span + 3 * sigma, num)
        return grid, self.density(grid, sigma)


def spectral_density(op, *, num_vectors: int = 8, num_steps: int = 60, seed: int = 0,
                     start_vectors: torch.Tensor | None = None) -> SpectralDensity:
    """The Hessian's spectral density by stochastic Lanczos quadrature, all probes run together.

    Probes are Rademacher vectors (or ``start_vectors``), so E[v v^T / ||v||^2] = I / dim.
    """
    op = _check_op(op)
    num_vectors = check_int("num_vectors", num_vectors, min_value=1)
    before = op.num_matvecs
    res = lanczos(op, num_steps, start_vectors=start_vectors, num_starts=num_vectors, seed=seed, keep_basis=False)
    s = res.alpha.shape[0]
    nodes, weights = [], []
    for i in range(s):
        theta, vecs = res.ritz(i)
        nodes.append(theta)
        weights.append(vecs[0] ** 2 / s)
    return SpectralDensity(np.stack(nodes), np.stack(weights), op.num_matvecs - before)
