"""The claims registry: every row of ../shared/CLAIMS.md, with the check that settles it.

A claim's verdict is never stored here: ``experiments.audit.run`` computes it from a check that ran
(a theory-check test, a reproduction, a training run). ``settled_by`` says which:

- ``"theory"``: the tests in ``theory_checks/`` marked ``@pytest.mark.claim(ID)``;
- ``"reproduce:NAME"``: ``blockaudit reproduce NAME`` (experiments.reproduce);
- ``"empirical:NAME"``: a training comparison of block vs baseline over paired seeds
  (``experiments.audit.empirical``: a CPU analogue in the quick profile, CIFAR-10 on a GPU in the full one).

To add a claim: append a ``Claim`` below and give it a check of one of these kinds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

VERDICTS = ("holds", "fails", "inconclusive", "not run")
KINDS = ("theorem", "structural", "numeric", "empirical", "structural + theorem", "empirical (numerics)",
         "empirical (landscape)", "theorem (counterexample)", "theorem (construction on small n)",
         "theorem (numeric check on quadratics)")

PAPERS = {
    "NRL": "Newton Residual Learning (ICLR 2020 submission), papers/000_cf0104831f5650bf.txt",
    "ND": "Shen et al., Newton design (Sci China Inf Sci 2023), papers/001_7d8a77c69ed28a39.txt",
    "OAI": "Li et al., Optimization Algorithm Inspired DNN Structure Design (2018), papers/002_605766797e3c4bb5.txt",
    "RN": "Chen et al., ResNEsts and DenseNEsts (NeurIPS 2021), papers/003_39cd59db41b06d3f.txt",
    "IM": "Hardt & Ma, Identity Matters in Deep Learning (ICLR 2017, review), papers/004_49889ba9d174fc35.txt",
}


@dataclass(frozen=True)
class Claim:
    id: str
    where: str
    statement: str
    kind: str
    settled_by: str
    tolerance: str = ""
    paper_figure: str = "-"

    @property
    def paper(self) -> str:
        return self.id.split("-", 1)[0]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one claim: status, the evidence, and the check that produced it."""

    claim_id: str
    status: str
    evidence: str
    check: str
    runs: tuple[str, ...] = field(default_factory=tuple)
    # Empirical checks: profile, setting, schedule, per-comparison statistics (effect, CI, n, region).
    details: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.status not in VERDICTS:
            raise ValueError(f"verdict status must be one of {VERDICTS}; got {self.status!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["runs"] = list(self.runs)
        if not d["details"]:
            del d["details"]
        return d


_T = "theory"
_THEORY_TOL = "tolerances derived per assertion in the test (float64 round-off or solver certificate)"

CLAIMS: tuple[Claim, ...] = (
    # --- NRL: Newton Residual Learning -------------------------------------------------------
    Claim("NRL-block", "eq (1)-(3), Alg. 1",
          "Newton block x_{t+1} = x_t + C x_t + a * N2(N1(x_t) * C x_t); with activations "
          "phi(x + f(x) + a*N2(N1(x)*f(x))); with a = 0 it is the residual block", "structural", _T, _THEORY_TOL),
    Claim("NRL-poly", "sec 3.1, 4.2",
          "with no activations a stack of residual blocks is one linear map of its input, while a stack "
          "of L Newton blocks is a polynomial of degree up to 2^L", "theorem", _T, _THEORY_TOL),
    Claim("NRL-params", "Table 1",
          "on CIFAR-10, Newton-ResNet [2,2,1,1] (6.0M) matches ResNet18 (11.2M) at 0.945; [3,3,2,2] "
          "(13.0M) matches ResNet34 (21.3M) at 0.948", "empirical", "empirical:nrl-params",
          "95% CI of the paired difference Newton [2,2,1,1] - ResNet18 inside (-1, +inf) pts", "~40% fewer params, same accuracy"),
    Claim("NRL-linear", "Table 2",
          "with all activations removed, CIFAR-10 accuracy: ResNet18 0.391; Newton-ResNet [1,1,1,1] "
          "0.876, [2,2,2,2] 0.908, [3,3,3,3] 0.916", "empirical", "empirical:nrl-linear",
          "95% CI of linear Newton [1,1,1,1] - linear ResNet18 inside (10, +inf) pts (quick analogue: (0, +inf))", "gap ~0.49"),
    Claim("NRL-c100", "Tables 4, 5",
          "CIFAR-100: Newton-ResNet [3,4,3,2] 14.7M = ResNet34 21.3M at 0.769; linear: ResNet18 0.168 vs "
          "Newton [1,1,1,1] 0.620", "empirical", "empirical:nrl-c100", "as NRL-params / NRL-linear"),
    Claim("NRL-fp16", "sec 4.4",
          "the second-order term can overflow in float16; a tanh on the second-order term fixes it",
          "empirical (numerics)", "empirical:nrl-fp16", "overflow observed without tanh, none with"),
    Claim("NRL-contour", "Fig. 1",
          "around the minimum, Newton-ResNet's loss contours show the minimum reached in fewer blocks",
          "empirical (landscape)", "empirical:nrl-contour", "qualitative (proxy: loss rise at the grid edge)", "qualitative"),
    # --- ND: Newton design ------------------------------------------------------------------
    Claim("ND-P1", "Prop. 1, eq (3)-(5)",
          "for symmetric invertible A and ReLU phi, grad F(x) = A[x - phi(Ax)] for F(x) = x^T A x / 2 - "
          "1^T P(Ax) with P' = phi, and x - A^{-1} grad F(x) = phi(Ax); the gradient formula needs A "
          "symmetric", "theorem", _T, _THEORY_TOL),
    Claim("ND-hess", "eq (6)", "Hessian of F is A - A Diag[phi'(Ax)] A (away from the ReLU kinks)",
          "theorem", _T, _THEORY_TOL),
    Claim("ND-neumann", "eq (7)",
          "if ||A||_2 < 1, [Hessian]^{-1} = sum_{n>=0} (Diag[phi'(Ax)] A)^n A^{-1}; the gap to A^{-1} is "
          "the tail, which is not negligible; truncating after m terms leaves an error bounded by "
          "||A||^{m+1}/(1-||A||) ||A^{-1}||", "theorem", _T, _THEORY_TOL),
    Claim("ND-linear-rate", "Appendix B (not in the text)",
          "the m = 0 quasi-Newton iteration converges only linearly", "theorem", _T, _THEORY_TOL),
    Claim("ND-resnet", "eq (8)-(9)",
          "the quasi-Newton step with H_k gives phi[(I - H_k A) x + H_k A phi(Ax)], the non-bottleneck "
          "ResNet block when its matrices are learned", "structural", _T, _THEORY_TOL),
    Claim("ND-table2", "Table 2, sec 3.3",
          "on F with n = 2048, gamma = 0.9999, eps = 1e-20, median of 10 runs, iterations to |F(x_k) - "
          "F(0)| < eps: quasi-Newton m = 0: 72, m = 1: 36, m = 2: 24; Newton-CG N = 3: 157, N = 4: 36, "
          "N = 6: 14.5, N = 8: 9, N = 10: 7", "numeric", "reproduce:nd-table2",
          "see `blockaudit reproduce nd-table2`", "the table"),
    Claim("ND-cg", "Alg. 1, eq (11)-(17)",
          "CG on Q y = b (Q = U^T U, U = I - Diag[phi'(Ax)]A, b = U^T r) solves U y = r in at most n "
          "steps; eq (17) expands g = Qy - b correctly", "theorem", _T, _THEORY_TOL),
    Claim("ND-block", "Alg. 2",
          "Newton-CG block: N CG blocks, each computing g_t from three conv branches with dropout, "
          "learnable alpha_t, beta_t; x_{k+1} = ReLU(x_k + y_N)", "structural", _T, _THEORY_TOL),
    Claim("ND-depth", "Table 3, Fig. 3a",
          "on C10+ Newton-CGNets are worse than ResNets of equal parameters with few CG blocks (N3 <= 5) "
          "and better with many (N3 >= 9): e.g. Newton-CGNet-56 (1.70M) 5.35% vs ResNet-110 (1.73M) 5.73%",
          "empirical", "empirical:nd-depth", "CI of block - baseline accuracy below 0 at N3 = 3 and above 0 at N3 = 9",
          "crossover near N3 = 5..9"),
    Claim("ND-best", "Table 4", "Newton-CGNet-82 (2.62M) 4.90% on C10+ vs ResNet-164 5.57%", "empirical",
          "empirical:nd-best", "CI of Newton-CGNet-82 - ResNet-164 accuracy above 0", "-0.67 pts"),
    # --- OAI: optimization-algorithm-inspired structures ------------------------------------
    Claim("OAI-lemma1", "Lemma 1, eq (8)-(10)",
          "for W symmetric positive definite and U = sqrt(W), gradient descent (step 1) on f(z) = "
          "||z||^2/2 - sum_i Psi(U_i^T z) with Psi' = phi, mapped back by x = U^{-1} z, is exactly "
          "x_{k+1} = phi(W x_k)", "theorem", _T, _THEORY_TOL),
    Claim("OAI-table1", "Table 1",
          "the objective for each activation (sigmoid, tanh, ReLU, leaky ReLU, ELU, swish) has "
          "derivative equal to that activation", "theorem", _T, _THEORY_TOL),
    Claim("OAI-hb-agd-admm", "eq (11)-(14)",
          "the same change of variables turns heavy-ball, Nesterov (both forms) and linearized ADMM into "
          "the stated x-space recurrences", "theorem", _T, _THEORY_TOL),
    Claim("OAI-agd-forms", "eq (3)-(5)", "Nesterov form (4) with weights (5) produces the same iterates as "
          "form (3)", "theorem", _T, _THEORY_TOL),
    Claim("OAI-rates", "sec 2",
          "on mu-strongly convex, L-smooth f, HB and AGD need O(sqrt(L/mu) log 1/eps) iterations vs "
          "O(L/mu log 1/eps) for GD", "theorem (numeric check on quadratics)", _T, _THEORY_TOL),
    Claim("OAI-table2", "Table 2, sec 5.3",
          "trained nets of depth 10..40 on 10,000 random N(0,I) pairs in R^100, sigmoid, MSE after 1000 "
          "epochs: HB, AGD, AGD2 below GD; ADMM worst", "numeric", "reproduce:oai-table2",
          "see `blockaudit reproduce oai-table2`", "differences ~0.5%"),
    Claim("OAI-special", "Table 3",
          "ResNet = HB form (16) with beta2 = 0; DenseNet = AGD form (18) with beta = 0, alpha = 1 (up to "
          "concatenation vs sum); DMRNet = ADMM form (20) with alpha = beta = 1/2", "structural", _T,
          _THEORY_TOL),
    Claim("OAI-cifar", "Table 4",
          "HB-Net (n = 18) 8.66 / 36.4 / 5.04 / 23.93 % error on C10 / C100 / C10+ / C100+ vs ResNet-110 "
          "9.17 / 38.13 / 5.06 / 24.71; AGD-Net beats DenseNet", "empirical", "empirical:oai-cifar",
          "CI of HB-Net - ResNet accuracy (same depth) above 0", "~0.5-1.7 pts"),
    # --- RN: ResNEsts and DenseNEsts ----------------------------------------------------------
    Claim("RN-P1", "Prop. 1",
          "squared loss + Assumption 1: (P_phi) is non-convex and non-concave; every critical point that "
          "is not a local minimum is a saddle", "theorem", _T, _THEORY_TOL),
    Claim("RN-P2", "Prop. 2",
          "with a loss convex in the prediction, (PA_phi) is convex, and eps = R(W_L*, W_{L+1}*) - A(H*) "
          ">= 0 for every local minimiser of (P_phi)", "theorem", _T, _THEORY_TOL),
    Claim("RN-unpredictable", "Question 2",
          "a block can strictly improve the A-ResNEst risk only if its features are not linearly "
          "predictable from earlier features", "theorem", _T, _THEORY_TOL),
    Claim("RN-T1", "Theorem 1",
          "Assumptions 2, 3 (M >= N_o) and 4: every critical point of (P_phi) with full-rank W_{L+1} is a "
          "global minimum, and eps = 0 at every local minimiser", "theorem", _T, _THEORY_TOL),
    Claim("RN-bottleneck", "eq (10)",
          "Assumption 4 needs M >= sum_{i<L} K_i (bottleneck condition); without expansion Assumption 4 "
          "fails for L > 1", "theorem", _T, _THEORY_TOL),
    Claim("RN-R2", "Remark 2, Cor. 2",
          "under the assumptions, residual representations improve monotonically over blocks; a deeper "
          "ResNEst is no worse than a shallower one", "theorem", _T, _THEORY_TOL),
    Claim("RN-C3", "Cor. 3",
          "under Assumptions 2-4, every local minimiser's risk <= the best linear predictor's risk; "
          "strictly, if the nonlinear features help", "theorem", _T, _THEORY_TOL),
    Claim("RN-T4", "Theorem 4",
          "squared loss, Assumptions 1, 3, 4: at every saddle of (P_phi) W_{L+1} is rank-deficient and "
          "there is a direction of strictly negative curvature", "theorem", _T, _THEORY_TOL),
    Claim("RN-P3", "Prop. 3",
          "every local minimum of a DenseNEst is <= the best linear predictor's risk, with no special "
          "design", "theorem", _T, _THEORY_TOL),
    Claim("RN-P4", "Prop. 4",
          "every DenseNEst equals a wide ResNEst with bottleneck blocks (same outputs for all inputs) with "
          "eps = 0 at all local minima", "structural + theorem", _T, _THEORY_TOL),
    Claim("RN-cifar", "tables",
          "CIFAR-10 accuracy, Standard / ResNEst / BN-ResNEst / A-ResNEst: ResNet-20 92.60 / 91.02 / "
          "92.56 / 92.47; ResNet-110 94.46 / 92.77 / 94.52 / 93.97; WRN-16-8 95.56 / 94.39 / 95.48 / 95.29; "
          "CIFAR-100 ResNet-20 68.56 / 64.73 / 68.47 / 68.16", "empirical", "empirical:rn-cifar",
          "CI of ResNEst - Standard below 0; of BN-/A-ResNEst - Standard inside (-0.5, +inf) pts", "ResNEst ~1.5 pts below, the others within ~0.5"),
    # --- IM: identity matters ------------------------------------------------------------------
    Claim("IM-T1", "Theorem 1",
          "for h(x) = (I + A_l)...(I + A_1) x and f(A) = E||Y - h(X)||^2 with Y = RX + noise, every "
          "critical point with max_i ||A_i|| <= tau < 1 is a global minimum", "theorem", _T, _THEORY_TOL),
    Claim("IM-small", "footnote 4",
          "a global minimum exists with max_i ||A_i*|| <= (4 pi + 3 gamma)/l when l >= 3 gamma", "theorem",
          _T, _THEORY_TOL),
    Claim("IM-spurious", "(complement of IM-T1)",
          "without the norm bound, spurious critical points exist (e.g. with l >= 3, every A_i = -I makes "
          "the product zero and the gradient zero)", "theorem (counterexample)", _T, _THEORY_TOL),
    Claim("IM-T2", "Theorem 2",
          "a ReLU residual net with O(n log n + r^2) parameters fits n points separated by rho > 0 "
          "perfectly", "theorem (construction on small n)", _T, _THEORY_TOL),
    Claim("IM-cifar", "experiments",
          "an all-convolutional ResNet with no batch norm and a fixed random last layer trains well on "
          "CIFAR-10", "empirical", "empirical:im-cifar", "95% CI of the test accuracy inside (80, 100)%"),
)

CLAIMS_BY_ID: dict[str, Claim] = {c.id: c for c in CLAIMS}


def get_claim(claim_id: str) -> Claim:
    try:
        return CLAIMS_BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim id {claim_id!r}; known ids: {', '.join(CLAIMS_BY_ID)}") from None


def check_names(paper: str) -> set[str]:
    """Names of the training checks (and their sweeps) that settle ``paper``'s empirical claims."""
    return {c.settled_by.split(":", 1)[1] for c in CLAIMS if c.paper == paper and c.settled_by.startswith("empirical:")}


def paper_of_check(name: str) -> str | None:
    """The paper whose empirical check is called ``name`` (or ``<prefix>-name``, as the audit's sweeps are)."""
    low = name.lower()
    for paper in PAPERS:
        names = check_names(paper)
        if low in names or any(low.endswith("-" + n) for n in names):
            return paper
    return None
