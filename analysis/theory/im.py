"""Hardt & Ma, "Identity Matters in Deep Learning" (ICLR 2017), as reviewed in papers/004.

Two parts, both float64 numpy.

**Linear residual networks (IM-T1, IM-small, IM-spurious).** The network is

    h(x) = (I + A_l) ... (I + A_2)(I + A_1) x,

the labels are Y = R X + xi with X ~ N(0, Sigma) and xi ~ N(0, noise_variance * I_d) independent of
X, and the population risk is

    f(A) = E ||Y - h(X)||^2 = ||E(A) Sigma^{1/2}||_F^2 + d * noise_variance,
    E(A) = (I + A_l) ... (I + A_1) - R,

the "f(A) = ||E(A) Sigma^{1/2}||^2 + C" of the review (its C is the noise term; the review fixes
noise_variance = 1, we keep it a parameter). Its gradient, from d f = 2 tr(Sigma E^T dE) and
dE = L_i dA_i R_i, is

    grad_{A_i} f = 2 L_i^T E(A) Sigma R_i^T,
    L_i = (I + A_l) ... (I + A_{i+1}),   R_i = (I + A_{i-1}) ... (I + A_1).

The global minimum value is d * noise_variance (take A_1 = R - I, the others 0).

Mechanism of Theorem 1 (the review's "using that ||A_i|| are small, show that grad f = 0 forces
E(A) = 0"): with tau = max_i ||A_i||_2 < 1 every factor has sigma_min(I + A_j) >= 1 - tau, so
||grad_{A_i} f||_F >= 2 (1 - tau)^{l-1} ||E Sigma||_F and ||E Sigma||_F^2 >= sigma_min(Sigma)
||E Sigma^{1/2}||_F^2. Summed over the l layers:

    ||grad f||_F^2 >= 4 l (1 - tau)^{2(l-1)} sigma_min(Sigma) (f(A) - f*).        (IM eq. 2.3)

The review names eq. (2.3) without writing it; this is our derivation. The original paper states
the weaker constant (1 - tau)^{2l}; ours is the sharper one the same argument gives, and
:func:`gradient_domination_constant` returns it.

**Small-norm global minimum (IM-small, review footnote 4).** gamma = max(|log sigma_max(R)|,
|log sigma_min(R)|) (our reading of "a constant depending on the largest and smallest singular
values of R": it is the one the bound (4 pi + 3 gamma)/l needs, since the positive part of R must
be spread over the layers as exp(log(P)/k)). The review omits an assumption the construction needs:
det R > 0. If ||A_i||_2 < 1 then every real eigenvalue of I + A_i is positive, so det(I + A_i) > 0 and
the product has positive determinant; when (4 pi + 3 gamma)/l < 1 a minimiser with the claimed norms
therefore cannot reach an R with det R < 0 (theory_checks/test_im.py shows it).

Our construction (:func:`small_norm_global_minimum`) follows the polar decomposition R = W P, W
orthogonal with det W = +1, P = (R^T R)^{1/2} symmetric positive definite with log-eigenvalues in
[-gamma, gamma]. P is split into k_P equal factors exp(log(P)/k_P), each within e^{gamma/k_P} - 1 of
I; W into k_W factors exp(S/k_W) with S the principal real skew logarithm of W (rotation angles in
[-pi, pi]), each within 2 sin(pi/(2 k_W)) <= pi/k_W of I. The split k_W + k_P = l is chosen to
minimise the largest factor norm. (Hardt & Ma's own proof, as we recall it, splits an SVD
U K V^T into three groups of about l/3 layers, whence the 3 in l >= 3 gamma; the review does not
give it. The bound is checked on our construction in theory_checks/test_im.py, never assumed.)

**Perfect fit of n points with a ReLU residual net (IM-T2, Theorem 2).** See
:func:`fit_residual_relu_network`.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import scipy.linalg

from analysis.validation import (
    AssumptionError,
    as_matrix,
    check_int,
    check_positive_definite,
    check_real,
    check_square,
)

__all__ = [
    "residual_layers",
    "residual_product",
    "linear_residual_network",
    "population_risk",
    "global_minimum_risk",
    "population_risk_gradient",
    "max_layer_norm",
    "gradient_domination_constant",
    "gradient_descent",
    "condition_gamma",
    "small_norm_global_minimum",
    "small_norm_bound",
    "ResidualReluNetwork",
    "fit_residual_relu_network",
    "residual_relu_network_forward",
    "count_parameters",
    "theorem2_parameter_budget",
]

_ASSUME_T1 = "IM Theorem 1 needs max_i ||A_i||_2 = tau < 1"
_ASSUME_SMALL = "IM footnote 4 / Hardt & Ma Thm 2.1 needs det R > 0"
_ASSUME_T2 = "IM Theorem 2 needs distinct (rho-separated) training points"


# --------------------------------------------------------------------------------------------
# Linear residual networks
# --------------------------------------------------------------------------------------------
def residual_layers(A, dim: int | None = None) -> np.ndarray:
    """The layers A_1, ..., A_l as one float64 array of shape (l, d, d), validated.

    ``A`` is a sequence of d x d matrices (or an (l, d, d) array); A[0] is A_1, the layer applied
    first. ``dim`` enforces d (e.g. to match R).
    """
    if isinstance(A, np.ndarray) and A.ndim == 3:
        layers = [A[i] for i in range(A.shape[0])]
    elif isinstance(A, (list, tuple)) or (isinstance(A, np.ndarray) and A.ndim != 2):
        layers = list(A)
    else:
        raise TypeError(
            f"A must be a sequence of square matrices A_1, ..., A_l (or an array of shape (l, d, d)); "
            f"got {type(A).__name__}{' of shape ' + str(np.shape(A)) if hasattr(A, 'shape') else ''}. "
            f"Wrap a single layer as [A_1]."
        )
    if len(layers) == 0:
        raise ValueError("A must hold at least one layer (depth l >= 1); got an empty sequence")
    out = []
    for i, layer in enumerate(layers):
        m = check_square(f"A[{i}]", layer)
        want = out[0].shape if out else ((dim, dim) if dim is not None else m.shape)
        if m.shape != want:
            raise ValueError(f"A[{i}] must have shape {want} like {'A[0]' if out else 'R'}; got {m.shape}")
        out.append(m)
    return np.stack(out)


def _prefix_products(layers: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """R_i = (I+A_{i-1})...(I+A_1) and L_i = (I+A_l)...(I+A_{i+1}) for i = 1..l (0-based lists)."""
    l, d, _ = layers.shape
    eye = np.eye(d)
    factors = layers + eye
    right = [eye]
    for i in range(l - 1):
        right.append(factors[i] @ right[-1])
    left = [eye] * l
    acc = eye
    for i in range(l - 1, 0, -1):
        acc = acc @ factors[i]
        left[i - 1] = acc
    return left, right


def _product(layers: np.ndarray) -> np.ndarray:
    d = layers.shape[1]
    prod = np.eye(d)
    for a in layers:
        prod = (np.eye(d) + a) @ prod
    return prod


def residual_product(A) -> np.ndarray:
    """The end-to-end matrix (I + A_l) ... (I + A_1) of the linear residual network."""
    return _product(residual_layers(A))


def linear_residual_network(A, x) -> np.ndarray:
    """h(x) = (I + A_l) ... (I + A_1) x for one input (d,) or a batch of rows (n, d)."""
    layers = residual_layers(A)
    d = layers.shape[1]
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = as_matrix("x", arr.reshape(1, -1), shape=(None, d))[0]
        out = arr
        for a in layers:
            out = out + a @ out
        return out
    arr = as_matrix("x", arr, shape=(None, d))
    out = arr
    for a in layers:
        out = out + out @ a.T
    return out


def _check_problem(A, R, Sigma):
    R = check_square("R", R)
    d = R.shape[0]
    layers = residual_layers(A, dim=d)
    Sigma = check_positive_definite("Sigma", as_matrix("Sigma", Sigma, shape=(d, d)),
                                    assumption="the covariance of X must be positive definite")
    return layers, R, Sigma


def population_risk(A, R, Sigma, noise_variance: float = 1.0) -> float:
    """f(A) = E||Y - h(X)||^2 = tr(E Sigma E^T) + d * noise_variance, E = prod(I + A_i) - R.

    The review's f(A) = ||E(A) Sigma^{1/2}||_F^2 + C; tr(E Sigma E^T) is the same number without
    forming a square root.
    """
    layers, R, Sigma = _check_problem(A, R, Sigma)
    noise_variance = check_real("noise_variance", noise_variance, min_value=0.0)
    E = _product(layers) - R
    return float(np.sum((E @ Sigma) * E)) + R.shape[0] * noise_variance


def global_minimum_risk(R, noise_variance: float = 1.0) -> float:
    """f* = d * noise_variance: the noise cannot be predicted, and A_1 = R - I removes the rest."""
    R = check_square("R", R)
    noise_variance = check_real("noise_variance", noise_variance, min_value=0.0)
    return R.shape[0] * noise_variance


def population_risk_gradient(A, R, Sigma) -> np.ndarray:
    """grad_{A_i} f = 2 L_i^T E(A) Sigma R_i^T for every layer, as an array of shape (l, d, d).

    L_i = (I + A_l)...(I + A_{i+1}), R_i = (I + A_{i-1})...(I + A_1) (empty products are I). The
    noise term is constant in A, so the gradient does not depend on noise_variance.
    """
    layers, R, Sigma = _check_problem(A, R, Sigma)
    return _gradient(layers, R, Sigma)


def _gradient(layers: np.ndarray, R: np.ndarray, Sigma: np.ndarray) -> np.ndarray:
    left, right = _prefix_products(layers)
    G = (_product(layers) - R) @ Sigma
    return np.stack([2.0 * left[i].T @ G @ right[i].T for i in range(layers.shape[0])])


def max_layer_norm(A) -> float:
    """tau = max_i ||A_i||_2, the quantity Theorem 1 bounds."""
    layers = residual_layers(A)
    return float(max(np.linalg.norm(a, 2) for a in layers))


def gradient_domination_constant(A, Sigma) -> float:
    """c = 4 l (1 - tau)^{2(l-1)} sigma_min(Sigma), so that ||grad f||_F^2 >= c (f(A) - f*).

    The mechanism of Theorem 1 (our derivation of the review's eq. (2.3), module docstring). It
    needs tau = max_i ||A_i||_2 < 1; otherwise a factor I + A_i may be singular and the bound is
    void (IM-spurious), so this raises ``AssumptionError``.
    """
    layers = residual_layers(A)
    d = layers.shape[1]
    Sigma = check_positive_definite("Sigma", as_matrix("Sigma", Sigma, shape=(d, d)),
                                    assumption="the covariance of X must be positive definite")
    tau = max_layer_norm(layers)
    if not tau < 1.0:
        raise AssumptionError(
            f"A must satisfy max_i ||A_i||_2 < 1 ({_ASSUME_T1}); got tau = {tau:.6g}. "
            f"Rescale the layers or use more layers with smaller norms."
        )
    l = layers.shape[0]
    return 4.0 * l * (1.0 - tau) ** (2 * (l - 1)) * float(np.linalg.eigvalsh(Sigma)[0])


def gradient_descent(A, R, Sigma, step_size: float, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain gradient descent on f from A; returns (final layers (l, d, d), risk gaps f - f*).

    The risk gap history has num_steps + 1 entries (the start included), noise-free so that it
    is the optimality gap ||E(A) Sigma^{1/2}||_F^2 itself.
    """
    layers, R, Sigma = _check_problem(A, R, Sigma)
    step_size = check_real("step_size", step_size, min_value=0.0, include_min=False)
    num_steps = check_int("num_steps", num_steps, min_value=0)
    layers = layers.copy()
    gaps = np.empty(num_steps + 1)
    for t in range(num_steps + 1):
        E = _product(layers) - R
        gaps[t] = float(np.sum((E @ Sigma) * E))
        if t < num_steps:
            layers -= step_size * _gradient(layers, R, Sigma)
    return layers, gaps


# --------------------------------------------------------------------------------------------
# IM-small: a global minimum with small layer norms
# --------------------------------------------------------------------------------------------
def condition_gamma(R) -> float:
    """gamma = max(|log sigma_max(R)|, |log sigma_min(R)|) (our reading of footnote 4)."""
    R = check_square("R", R)
    s = np.linalg.svd(R, compute_uv=False)
    if s[-1] <= 0.0:
        raise AssumptionError("R must be invertible for gamma = max |log sigma(R)| to be finite; "
                              f"its smallest singular value is {s[-1]:.3g}")
    return float(max(abs(np.log(s[0])), abs(np.log(s[-1]))))


def small_norm_bound(R, depth: int) -> float:
    """The footnote-4 bound (4 pi + 3 gamma) / l on max_i ||A_i*||_2."""
    depth = check_int("depth", depth, min_value=1)
    return (4.0 * np.pi + 3.0 * condition_gamma(R)) / depth


def _skew_log_rotation(W: np.ndarray) -> np.ndarray:
    """Principal real logarithm S (skew-symmetric, angles in [-pi, pi]) of a rotation W, det W = 1.

    Via the real Schur form W = Z T Z^T: for an orthogonal (normal) W, T is block diagonal with
    2 x 2 rotation blocks and +-1 entries. The -1 entries come in pairs (det W = +1); each pair is a
    rotation by pi in its plane, which scipy's logm would turn into a complex logarithm.
    """
    d = W.shape[0]
    T, Z = scipy.linalg.schur(W, output="real")
    G = np.zeros((d, d))
    minus_ones = []
    i = 0
    while i < d:
        if i + 1 < d and abs(T[i + 1, i]) > 1e-12:
            theta = np.arctan2(T[i + 1, i], T[i, i])
            # Schur standardises a 2 x 2 block to [[c, b], [a, c]] with b = -a for a rotation.
            G[i + 1, i], G[i, i + 1] = theta, -theta
            i += 2
        else:
            if T[i, i] < 0:
                minus_ones.append(i)
            i += 1
    for p, q in zip(minus_ones[::2], minus_ones[1::2]):
        G[q, p], G[p, q] = np.pi, -np.pi
    return Z @ G @ Z.T


def small_norm_global_minimum(R, depth: int) -> np.ndarray:
    """Layers A_1..A_l (array (l, d, d)) with (I + A_l)...(I + A_1) = R and small max_i ||A_i||_2.

    Polar construction of the module docstring: R = W P; the first k_P layers are
    exp(log(P)/k_P) - I, the last k_W = l - k_P layers exp(S/k_W) - I (S = log W); the split
    minimises the largest norm. For l = 1 the only global minimum is A_1 = R - I. When
    l >= 3 gamma, IM-small claims max_i ||A_i||_2 <= (4 pi + 3 gamma)/l (checked in
    theory_checks/test_im.py, not assumed here).

    Raises ``AssumptionError`` if det R <= 0: no product of factors I + A_i with ||A_i||_2 < 1 has
    a non-positive determinant, so no small-norm global minimum exists.
    """
    R = check_square("R", R)
    depth = check_int("depth", depth, min_value=1)
    d = R.shape[0]
    U, s, Vt = np.linalg.svd(R)
    det = float(np.linalg.det(R))
    if not det > 0 or s[-1] <= 0:
        raise AssumptionError(
            f"R must have det R > 0 ({_ASSUME_SMALL}); got det R = {det:.3g}. Factors I + A_i with "
            f"||A_i||_2 < 1 all have positive determinant, so their product cannot equal this R."
        )
    if depth == 1:
        return (R - np.eye(d))[None]
    W = U @ Vt
    log_s = np.log(s)
    S = _skew_log_rotation(W)
    # Eigenvalues of S are +-i theta: its spectral norm is the largest rotation angle.
    theta_max = float(np.linalg.norm(S, 2))
    gamma = float(np.max(np.abs(log_s)))

    def worst(k_w: int) -> float:
        k_p = depth - k_w
        rot = 2.0 * np.sin(theta_max / (2 * k_w)) if k_w else (0.0 if theta_max == 0 else np.inf)
        pos = np.expm1(gamma / k_p) if k_p else (0.0 if gamma == 0 else np.inf)
        return max(rot, pos)

    k_w = min(range(depth + 1), key=worst)
    k_p = depth - k_w
    layers = []
    if k_p:
        root_p = (Vt.T * np.exp(log_s / k_p)) @ Vt
        layers += [root_p - np.eye(d)] * k_p
    if k_w:
        root_w = scipy.linalg.expm(S / k_w)
        layers += [root_w - np.eye(d)] * k_w
    return np.stack(layers)


# --------------------------------------------------------------------------------------------
# IM-T2: a ReLU residual network that fits n separated points
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResidualReluNetwork:
    """The network of Theorem 2: h_0 = A_0 x; h_j = h_{j-1} + V_j relu(U_j h_{j-1} + b_j) (eq. (1));
    output y = V_out relu(U_out h_l + b_out) in R^r.

    Shapes: projection (k, d); U, V (l, k, k); b (l, k); U_out (r, k); b_out (r,); V_out (r, r).
    """

    projection: np.ndarray
    U: np.ndarray
    V: np.ndarray
    b: np.ndarray
    U_out: np.ndarray
    b_out: np.ndarray
    V_out: np.ndarray

    @property
    def width(self) -> int:
        return self.U.shape[1]

    @property
    def depth(self) -> int:
        return self.U.shape[0]


def _separating_neurons(points: np.ndarray, batch: np.ndarray, others: np.ndarray):
    """Rows u_i = p_i and biases b_i with relu(u_i . q + b_i) > 0 at q = p_i only.

    b_i = -(||p_i||^2 + t_i)/2 with t_i = max over the other current points q of <p_i, q>; this
    separates iff t_i < ||p_i||^2, which holds whenever no other point has a larger projection on
    p_i (always for distinct points of equal norm). Returns (U, b, activation at p_i).
    """
    P = points[batch]
    G = P @ others.T
    # A point of the batch never counts against itself (same row).
    same = np.all(np.isclose(others[None, :, :], P[:, None, :], rtol=0.0, atol=0.0), axis=2)
    G = np.where(same, -np.inf, G)
    t = G.max(axis=1) if G.shape[1] else np.full(len(batch), -np.inf)
    sq = np.sum(P * P, axis=1)
    # -inf: no other point at all (n = 1), any threshold below ||p_i||^2 separates.
    t = np.where(np.isfinite(t), t, 0.0)
    margin = (sq - t) / 2.0
    return P, -(sq + t) / 2.0, margin


def fit_residual_relu_network(x, labels, width: int, num_classes: int | None = None,
                              seed: int = 0) -> ResidualReluNetwork:
    """Build a residual ReLU network (Theorem 2) whose output is the one-hot label of every x_i.

    Our reading of the construction the review sketches (the original proof only "as far as it
    goes"): the first layer embeds x in R^k (k = ``width``; zero padding if d <= k, else a Gaussian
    random projection, the review's footnote 7); r surrogate vectors q_1..q_r in R^k of equal norm,
    smaller than every embedded point, are fixed; residual layer j (eq. (1), k neurons) sends the
    j-th batch of k points to the q of their labels and leaves every other current point where it
    is: neuron i is relu(<p_i, h> + b_i), active at h = p_i only (see ``_separating_neurons``), and
    column i of V_j is (q_{y_i} - p_i)/activation. The output layer is the same device on the q's:
    y = V_out relu(U_out h + b_out) with V_out diagonal maps q_c to e_c. So l = ceil(n / k) layers
    when the embedded points have equal norms (unit-norm inputs, zero padding); after a random
    projection, points that fail the hyperplane test wait for a later layer (more layers, never a
    failure: the longest remaining point always passes).

    Parameters: l (2k^2 + k) + r k + r + r^2 (the r^2 is V_out). With k = O(log n) that is
    O(n log n + r^2), the budget of Theorem 2. The random projection (k d numbers) is fixed, as in the
    review, and counted separately by :func:`count_parameters`.

    Raises ``AssumptionError`` if two inputs coincide (rho = 0) or if the projection maps two of
    them (or one to 0) onto the same point (increase ``width``).
    """
    x = as_matrix("x", x)
    n, d = x.shape
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be n = {n} integers (one class index per row of x); got "
                         f"dtype {labels.dtype} and shape {labels.shape}")
    width = check_int("width", width, min_value=2)
    r = int(labels.max()) + 1 if num_classes is None else check_int("num_classes", num_classes, min_value=1)
    if labels.min() < 0 or labels.max() >= r:
        raise ValueError(f"labels must lie in 0..{r - 1} (num_classes = {r}); got range "
                         f"{labels.min()}..{labels.max()}")
    diffs = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2) + np.diag(np.full(n, np.inf))
    rho = float(diffs.min()) if n > 1 else np.inf
    if not rho > 0:
        i, j = np.unravel_index(np.argmin(diffs), diffs.shape)
        raise AssumptionError(f"x must hold distinct points ({_ASSUME_T2}); rows {i} and {j} coincide")
    gen = np.random.default_rng(seed)
    if d <= width:
        projection = np.eye(width, d)
    else:
        projection = gen.standard_normal((width, d)) / np.sqrt(width)
    h = x @ projection.T
    norms = np.linalg.norm(h, axis=1)
    if norms.min() <= 0:
        raise AssumptionError(f"the embedding of x sends row {int(np.argmin(norms))} to 0; "
                              "increase width or move the points off the origin")
    # Surrogate labels: equal norm (so each q_c is separable from the others) and half the
    # smallest data norm (so no q activates a data neuron: <p, q> <= ||p|| ||q|| < ||p||^2).
    q = gen.standard_normal((r, width))
    q *= 0.5 * norms.min() / np.linalg.norm(q, axis=1, keepdims=True)
    if r > 1 and np.min(np.linalg.norm(q[:, None] - q[None], axis=2) + np.diag(np.full(r, np.inf))) <= 0:
        raise AssumptionError("surrogate labels coincide; choose another seed")

    # Greedy batches: a point whose hyperplane test fails now (another current point projects
    # further along it) waits for a later layer. The unprocessed point of largest norm always
    # passes (Cauchy-Schwarz, and the q's are shorter), so every layer makes progress; for points
    # of (nearly) equal norm all pass and l = ceil(n / k), the count of Theorem 2.
    U, V, b = [], [], []
    current = h.copy()
    todo = np.arange(n)
    while todo.size:
        rows, bias, margin = _separating_neurons(current, todo, current)
        ok = margin > 1e-12 * np.sum(rows * rows, axis=1)
        if not ok.any():
            raise AssumptionError(
                f"no remaining point is separable from the others after embedding in R^{width} "
                f"({_ASSUME_T2}); increase width")
        pick = np.flatnonzero(ok)[:width]
        batch = todo[pick]
        Uj, Vj, bj = np.zeros((width, width)), np.zeros((width, width)), np.zeros(width)
        m = len(batch)
        Uj[:m], bj[:m] = rows[pick], bias[pick]
        Vj[:, :m] = ((q[labels[batch]] - current[batch]) / margin[pick][:, None]).T
        current = current + np.maximum(current @ Uj.T + bj, 0.0) @ Vj.T
        U.append(Uj), V.append(Vj), b.append(bj)
        todo = np.setdiff1d(todo, batch)
    U, V, b = np.stack(U), np.stack(V), np.stack(b)
    U_out, b_out, margin = _separating_neurons(q, np.arange(r), q)
    V_out = np.diag(1.0 / margin)
    return ResidualReluNetwork(projection, U, V, b, U_out, b_out, V_out)


def residual_relu_network_forward(net: ResidualReluNetwork, x) -> np.ndarray:
    """The network's outputs (n, r) for inputs x (n, d)."""
    x = as_matrix("x", x, shape=(None, net.projection.shape[1]))
    h = x @ net.projection.T
    for j in range(net.depth):
        h = h + np.maximum(h @ net.U[j].T + net.b[j], 0.0) @ net.V[j].T
    return np.maximum(h @ net.U_out.T + net.b_out, 0.0) @ net.V_out.T


def count_parameters(net: ResidualReluNetwork) -> dict[str, int]:
    """Parameter counts: ``trainable`` (residual layers and output layer) and ``projection``."""
    trainable = net.U.size + net.V.size + net.b.size + net.U_out.size + net.b_out.size + net.V_out.size
    return {"trainable": int(trainable), "projection": int(net.projection.size)}


def theorem2_parameter_budget(n: int, num_classes: int, constant: float = 16.0) -> float:
    """constant * (n log2 n + r^2), the O(n log n + r^2) of Theorem 2 with an explicit constant.

    16 covers the construction above with width k = ceil(log2 n) + 1 and n >= 4: l (2k^2 + k) + rk +
    r + r^2 <= 2nk + n + 2k^2 + k + rk + r + r^2, and with k <= 2 log2 n, rk <= (r^2 + k^2)/2,
    log2^2 n <= n log2 n, each term is at most a multiple of n log2 n or r^2 summing to < 16.
    """
    n = check_int("n", n, min_value=2)
    r = check_int("num_classes", num_classes, min_value=1)
    return float(constant) * (n * np.log2(n) + r * r)
