"""The ResNEst risk gap eps = R - A* of a trained network, streamed over a dataset (RN, 003, Prop. 2).

RN eq. (5) defines the empirical risk R of the network's own prediction; eq. (6) the A-ResNEst
prediction y = sum_i H_i v_i; eq. (7) (PA_phi) minimises A(H_0..H_L) over the linear maps H with the
features phi fixed, a convex problem for a loss convex in the prediction (Assumption 2); eq. (8)
eps = R(W_L*, W_{L+1}*) - A(H*) >= 0 at every local minimiser of (P_phi). ``risk_gap`` reports,
for a model exposing ``pooled_block_features`` (``analysis.models``):

- R: the model's own loss at its trained head, on train (and test);
- A*: the minimum of (PA_phi) over all features [v_0, ..., v_L], fitted on train, evaluated on
  train and test; eps = R - A* (on test the same H* is only evaluated, so "eps" there is a
  generalisation comparison, not the theorem's quantity);
- the input-only linear baseline A(H_0) (v_0 = the pooled input image) and the whole per-block
  curve A(H_0, ..., H_i), i = 0..L (RN eq. (9) / Question 2: a block helps only if its features are
  not linearly predictable from the earlier ones), train and test.

Readings and choices, recorded:

- Features are the *globally pooled* v_i, as the conv A-ResNEst heads see them. Every fit has an
  intercept (every registered head is an ``nn.Linear`` with bias), so the A-ResNEst model's own
  heads are a feasible point of the fit and eps >= 0 holds for it exactly (up to the solver's
  certificate). For the conv ``standard``/``resnest``/``bn_resnest`` heads the logits are *not*
  exactly linear in the pooled v_i (zero padding at the image border, strided projection shortcuts
  on pre-activated inputs, the final BN-ReLU), so Prop. 2's eps >= 0 is then an empirical
  statement about those nets, not a consequence of the theorem.
- Squared loss: l(y_hat, y) = ||y_hat - e_y||^2 (sum over classes, no 1/2) with one-hot targets
  e_y; solved in closed form from streamed moments (sum z z^T, sum z e_y^T, sum ||e_y||^2).
- Cross-entropy: l = logsumexp(y_hat) - y_hat[y]; (PA_phi) is the multinomial logistic problem
  without regularisation, solved by L-BFGS (scipy) with loss and gradient streamed in chunks from a
  float32 memmap of the features written during the single forward pass. The solver works in
  standardised feature coordinates (train mean/std; the fitted class is unchanged because of the
  intercept). Its certificate is the Euclidean norm of the gradient of the mean loss in those
  coordinates at the returned point; ``converged`` means it is <= ``tol``. On linearly separable
  features A* = 0 is an infimum that no finite H attains: the certificate then reports
  non-convergence and A is an upper bound on A*, so the reported eps is a lower bound on the true
  one (the direction that matters for checking eps >= 0).

Memory: squared loss holds O(D^2) moments; cross-entropy holds O(chunk * D) in memory and
N * D float32 on disk (D = total feature width, N = samples).
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize

from analysis.theory.rn import least_squares_risk_from_moments, single_thread_blas
from analysis.validation import check_choice, check_int, check_real

__all__ = ["LOSSES", "SolverCertificate", "RiskGapResult", "risk_gap",
           "fit_multinomial_streamed", "FeatureMemmap"]

LOSSES = ("cross_entropy", "squared")
_CHUNK_BYTES = 1 << 24  # float64 working chunk of the CE solver: 16 MiB whatever N is


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class SolverCertificate:
    """How well one (PA_phi) fit was solved: ``grad_norm`` <= ``tol`` means converged."""

    method: str
    grad_norm: float
    tol: float | None  # None for a closed-form solve
    iterations: int
    converged: bool


@dataclass
class RiskGapResult:
    """R, A*, eps and the per-block curve A(H_0..H_i) of one model on one dataset (module docstring)."""

    loss: str
    n_train: int
    n_test: int
    feature_widths: list[int]
    model_risk_train: float
    a_star_train: float
    curve_train: list[float]
    certificates: list[SolverCertificate]
    model_risk_test: float | None = None
    a_star_test: float | None = None
    curve_test: list[float] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def eps_train(self) -> float:
        """eps = R - A* on the training data: RN eq. (8)."""
        return self.model_risk_train - self.a_star_train

    @property
    def eps_test(self) -> float | None:
        if self.model_risk_test is None or self.a_star_test is None:
            return None
        return self.model_risk_test - self.a_star_test

    @property
    def input_baseline_train(self) -> float:
        """A(H_0): the best linear predictor of the pooled input alone, on train."""
        return self.curve_train[0]

    @property
    def input_baseline_test(self) -> float | None:
        return None if self.curve_test is None else self.curve_test[0]

    def to_frame(self) -> pd.DataFrame:
        """One row per prefix i: A(H_0..H_i) on train/test with the fit's certificate."""
        cum = np.cumsum(self.feature_widths)
        rows = []
        for i, width in enumerate(self.feature_widths):
            c = self.certificates[i]
            rows.append({
                "block": i, "feature": "v_0 (input)" if i == 0 else f"v_{i}", "width": int(width),
                "cumulative_width": int(cum[i]), "A_train": self.curve_train[i],
                "A_test": math.nan if self.curve_test is None else self.curve_test[i],
                "grad_norm": c.grad_norm, "converged": c.converged, "iterations": c.iterations,
            })
        return pd.DataFrame(rows)

    def summary_frame(self) -> pd.DataFrame:
        """R, A*, eps and the input-only baseline on train and test."""
        nan = math.nan

        def v(x):
            return nan if x is None else x

        return pd.DataFrame([
            {"quantity": "R (trained head)", "train": self.model_risk_train, "test": v(self.model_risk_test)},
            {"quantity": "A* (all blocks)", "train": self.a_star_train, "test": v(self.a_star_test)},
            {"quantity": "eps = R - A*", "train": self.eps_train, "test": v(self.eps_test)},
            {"quantity": "A(H_0) input-only", "train": self.input_baseline_train, "test": v(self.input_baseline_test)},
        ])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eps_train"], d["eps_test"] = self.eps_train, self.eps_test
        return d

    def save(self, out_dir: Path | str, stem: str = "risk_gap") -> list[Path]:
        """Write ``stem.json`` (everything) and ``stem.csv`` (the per-block frame); return the paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
        json_path.write_text(json.dumps(self.to_dict(), indent=2))
        self.to_frame().to_csv(csv_path, index=False)
        return [json_path, csv_path]

    @classmethod
    def load(cls, path: Path | str) -> "RiskGapResult":
        """Read a result written by ``save`` (give the ``.json`` path)."""
        data = json.loads(Path(path).read_text())
        data.pop("eps_train", None)
        data.pop("eps_test", None)
        data["certificates"] = [SolverCertificate(**c) for c in data["certificates"]]
        return cls(**data)


# --------------------------------------------------------------------------------------------
# Streaming the features
# --------------------------------------------------------------------------------------------

def _forward(model, x):
    if hasattr(model, "forward_with_block_features"):
        logits, feats = model.forward_with_block_features(x)
    else:
        logits, feats = model(x), model.pooled_block_features(x)
    return logits, torch.cat([f.reshape(f.shape[0], -1) for f in feats], dim=1), [f.shape[1] for f in feats]


def _model_loss_sum(logits: torch.Tensor, y: torch.Tensor, loss: str) -> float:
    logits = logits.to(torch.float64)
    if loss == "cross_entropy":
        return float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    onehot = torch.nn.functional.one_hot(y, logits.shape[1]).to(torch.float64)
    return float(((logits - onehot) ** 2).sum())


class FeatureMemmap:
    """Pooled features appended batch by batch to a float32 file, then read back in chunks."""

    def __init__(self, directory: str) -> None:
        self._dir = directory
        self.path = Path(directory) / f"features_{id(self)}.f32"
        self._fh = self.path.open("wb")
        self.n = 0
        self.width: int | None = None
        self.labels: list[np.ndarray] = []
        self._sum: np.ndarray | None = None
        self._sumsq: np.ndarray | None = None
        self.array: np.memmap | None = None

    def append(self, z: np.ndarray, y: np.ndarray) -> None:
        if self.width is None:
            self.width = z.shape[1]
            self._sum = np.zeros(self.width)
            self._sumsq = np.zeros(self.width)
        self._fh.write(np.ascontiguousarray(z, dtype=np.float32).tobytes())
        z32 = z.astype(np.float32).astype(np.float64)  # stats of exactly what is stored
        self._sum += z32.sum(0)
        self._sumsq += (z32 ** 2).sum(0)
        self.labels.append(y.astype(np.int64))
        self.n += z.shape[0]

    def close(self) -> None:
        self._fh.close()
        self.array = np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.n, self.width))
        self.y = np.concatenate(self.labels)

    def standardisation(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self._sum / self.n
        var = np.maximum(self._sumsq / self.n - mean ** 2, 0.0)
        std = np.sqrt(var)
        # Constant features (dead ReLU channels) carry no information; leave them unscaled.
        return mean, np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)

    def chunks(self, p: int):
        rows = max(1, _CHUNK_BYTES // (8 * max(p, 1)))
        for start in range(0, self.n, rows):
            yield np.asarray(self.array[start:start + rows, :p], dtype=np.float64), self.y[start:start + rows]


class _Moments:
    def __init__(self) -> None:
        self.gram = self.cross = None
        self.target_sq = 0.0
        self.n = 0

    def append(self, z: np.ndarray, y: np.ndarray, num_classes: int) -> None:
        z1 = np.concatenate([np.ones((z.shape[0], 1)), z], axis=1)  # intercept first
        e = np.zeros((z.shape[0], num_classes))
        e[np.arange(z.shape[0]), y] = 1.0
        if self.gram is None:
            self.gram = np.zeros((z1.shape[1], z1.shape[1]))
            self.cross = np.zeros((z1.shape[1], num_classes))
        self.gram += z1.T @ z1
        self.cross += z1.T @ e
        self.target_sq += float(z.shape[0])  # ||e_y||^2 = 1
        self.n += z.shape[0]


@torch.no_grad()
def _stream(model, batches, loss: str, sink_factory):
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    dtype = params.dtype if params is not None else torch.float32
    sink, widths, num_classes, loss_sum, n = None, None, None, 0.0, 0
    for x, y in batches:
        x = x.to(device=device, dtype=dtype)
        y = torch.as_tensor(y).to(device=device, dtype=torch.int64)
        logits, z, w = _forward(model, x)
        if sink is None:
            widths, num_classes = w, logits.shape[1]
            sink = sink_factory()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}) to match the model's {num_classes} outputs; "
                             f"got range [{int(y.min())}, {int(y.max())}]")
        loss_sum += _model_loss_sum(logits, y, loss)
        n += y.shape[0]
        z_np, y_np = z.to(torch.float64).cpu().numpy(), y.cpu().numpy()
        if isinstance(sink, _Moments):
            sink.append(z_np, y_np, num_classes)
        else:
            sink.append(z_np, y_np)
    if sink is None or n == 0:
        raise ValueError("batches must yield at least one (images, labels) batch; got an empty iterable")
    return sink, widths, num_classes, loss_sum / n


# --------------------------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------------------------

def _squared_risk_from_moments(H: np.ndarray, m: _Moments, idx: np.ndarray) -> float:
    G, C = m.gram[np.ix_(idx, idx)], m.cross[idx]
    return float((m.target_sq - 2.0 * np.sum(H * C) + np.sum(H * (G @ H))) / m.n)


def _ce_pass(mm: FeatureMemmap, p: int, W: np.ndarray, b: np.ndarray, mean, std, grad: bool):
    """Mean CE of logits = ((x - mean)/std) W + b over the memmap, and its gradient if asked."""
    Ws = W / std[:, None]
    b_eff = b - (mean / std) @ W
    total = 0.0
    gX = np.zeros_like(W) if grad else None
    gsum = np.zeros(W.shape[1]) if grad else None
    for X, y in mm.chunks(p):
        logits = X @ Ws + b_eff
        mx = logits.max(1, keepdims=True)
        ex = np.exp(logits - mx)
        se = ex.sum(1, keepdims=True)
        rows = np.arange(X.shape[0])
        total += float(np.sum(np.log(se[:, 0]) + mx[:, 0] - logits[rows, y]))
        if grad:
            R = ex / se
            R[rows, y] -= 1.0
            gX += X.T @ R
            gsum += R.sum(0)
    n = mm.n
    if not grad:
        return total / n
    gW = (gX - mean[:, None] * gsum[None, :]) / std[:, None] / n
    return total / n, gW, gsum / n


def fit_multinomial_streamed(mm: FeatureMemmap, p: int, num_classes: int, *, tol: float = 1e-5,
                             max_iter: int = 500, init: np.ndarray | None = None, risk_floor: float = 1e-6):
    """Solve (PA_phi) with cross-entropy on the first ``p`` memmapped feature columns by L-BFGS.

    Returns ``(risk, (W, b, mean, std), certificate)``: W, b in standardised coordinates
    (logits = ((x - mean)/std) W + b), certificate = ||grad||_2 of the mean loss there.

    The solve also stops once the risk is <= ``risk_floor``: cross-entropy is >= 0, so then
    A* is within ``risk_floor`` of the returned risk whatever the gradient says. This is what
    ends fits on separable features (A* = 0 unattained), which otherwise run to ``max_iter``.
    """
    mean, std = (a[:p] for a in mm.standardisation())
    C = num_classes
    size = p * C + C
    theta0 = np.zeros(size) if init is None else init

    def fg(theta):
        W, b = theta[:p * C].reshape(p, C), theta[p * C:]
        f, gW, gb = _ce_pass(mm, p, W, b, mean, std, grad=True)
        return f, np.concatenate([gW.ravel(), gb])

    def stop_when_below_floor(intermediate_result):
        if intermediate_result.fun <= risk_floor:
            raise StopIteration

    # scipy stops on the max-abs gradient entry; tol/sqrt(size) there bounds the 2-norm by tol.
    with single_thread_blas():
        res = minimize(fg, theta0, jac=True, method="L-BFGS-B", callback=stop_when_below_floor,
                       options={"maxiter": max_iter, "gtol": tol / math.sqrt(size), "ftol": 1e-16, "maxcor": 20})
        f, g = fg(res.x)
    gnorm = float(np.linalg.norm(g))
    W, b = res.x[:p * C].reshape(p, C), res.x[p * C:]
    method = "L-BFGS (streamed, standardised)"
    if f <= risk_floor and gnorm > tol:
        method += f"; stopped at risk <= {risk_floor:g}, so A* is within {risk_floor:g} (separable features)"
    cert = SolverCertificate(method, gnorm, tol, int(res.nit), gnorm <= tol or f <= risk_floor)
    return f, (W, b, mean, std), cert


# --------------------------------------------------------------------------------------------
# The tool
# --------------------------------------------------------------------------------------------

def risk_gap(model: torch.nn.Module, train_batches: Iterable, test_batches: Iterable | None = None, *,
             loss: str = "cross_entropy", tol: float = 1e-5, max_iter: int = 500,
             rcond: float | None = None, workdir: str | None = None) -> RiskGapResult:
    """Compute R, A*, eps = R - A* and the per-block curve (module docstring) in one forward pass per split.

    ``train_batches`` / ``test_batches``: iterables of ``(images, labels)`` with images already
    normalised as the model expects and integer class labels. ``tol``/``max_iter``: the
    cross-entropy solver's gradient-norm target and iteration cap; ``rcond`` is passed to the
    squared-loss solve. ``workdir``: where the cross-entropy feature memmaps go (a temporary
    directory, removed afterwards, by default).
    """
    loss = check_choice("loss", loss, LOSSES)
    tol = check_real("tol", tol, min_value=0.0, include_min=False)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    if not (hasattr(model, "pooled_block_features") or hasattr(model, "forward_with_block_features")):
        raise TypeError(f"model must expose pooled_block_features(x) (see analysis.models); "
                        f"got {type(model).__name__} without it")
    was_training = model.training
    model.eval()
    try:
        if loss == "squared":
            return _risk_gap_squared(model, train_batches, test_batches, rcond)
        with tempfile.TemporaryDirectory(dir=workdir, prefix="risk_gap_") as tmp:
            return _risk_gap_ce(model, train_batches, test_batches, tol, max_iter, tmp)
    finally:
        model.train(was_training)


def _prefix_index(widths: list[int], i: int) -> np.ndarray:
    return np.arange(1 + int(np.sum(widths[:i + 1])))  # intercept column 0, then v_0..v_i


def _risk_gap_squared(model, train_batches, test_batches, rcond) -> RiskGapResult:
    tr, widths, C, r_train = _stream(model, train_batches, "squared", _Moments)
    te, r_test = None, None
    if test_batches is not None:
        te, _, _, r_test = _stream(model, test_batches, "squared", _Moments)
    curve_train, curve_test, certs = [], [] if te is not None else None, []
    for i in range(len(widths)):
        idx = _prefix_index(widths, i)
        risk, H = least_squares_risk_from_moments(tr.gram[np.ix_(idx, idx)], tr.cross[idx], tr.target_sq, tr.n,
                                                  rcond=rcond)
        H = np.asarray(H, dtype=np.float64)  # (features, classes): prediction = z^T H
        # Normal-equation residual: the exact-solve analogue of the CE solver's gradient norm.
        grad = 2.0 * (tr.gram[np.ix_(idx, idx)] @ H - tr.cross[idx]) / tr.n
        gnorm = float(np.linalg.norm(grad))
        certs.append(SolverCertificate("least squares from moments", gnorm, None, 1, True))
        curve_train.append(float(risk))
        if te is not None:
            curve_test.append(_squared_risk_from_moments(H, te, idx))
    return RiskGapResult(
        loss="squared", n_train=tr.n, n_test=0 if te is None else te.n, feature_widths=list(widths),
        model_risk_train=r_train, a_star_train=curve_train[-1], curve_train=curve_train, certificates=certs,
        model_risk_test=r_test, a_star_test=None if te is None else curve_test[-1], curve_test=curve_test,
        meta={"intercept": True, "loss_definition": "mean over samples of ||y_hat - onehot(y)||^2"})


def _risk_gap_ce(model, train_batches, test_batches, tol, max_iter, tmp) -> RiskGapResult:
    tr, widths, C, r_train = _stream(model, train_batches, "cross_entropy", lambda: FeatureMemmap(tmp))
    tr.close()
    te, r_test = None, None
    if test_batches is not None:
        te, _, _, r_test = _stream(model, test_batches, "cross_entropy", lambda: FeatureMemmap(tmp))
        te.close()
    curve_train, curve_test, certs = [], [] if te is not None else None, []
    theta = None
    p_prev = 0
    for i in range(len(widths)):
        p = int(np.sum(widths[:i + 1]))
        init = None
        if theta is not None:
            # Warm start: the previous prefix's solution with zero weights on the new block.
            W_prev, b_prev = theta
            init = np.concatenate([np.vstack([W_prev, np.zeros((p - p_prev, C))]).ravel(), b_prev])
        risk, (W, b, mean, std), cert = fit_multinomial_streamed(tr, p, C, tol=tol, max_iter=max_iter, init=init)
        theta, p_prev = (W, b), p
        curve_train.append(risk)
        certs.append(cert)
        if te is not None:
            curve_test.append(_ce_pass(te, p, W, b, mean, std, grad=False))
    return RiskGapResult(
        loss="cross_entropy", n_train=tr.n, n_test=0 if te is None else te.n, feature_widths=list(widths),
        model_risk_train=r_train, a_star_train=curve_train[-1], curve_train=curve_train, certificates=certs,
        model_risk_test=r_test, a_star_test=None if te is None else curve_test[-1], curve_test=curve_test,
        meta={"intercept": True, "loss_definition": "mean cross-entropy (natural log)", "tol": tol,
              "max_iter": max_iter})
