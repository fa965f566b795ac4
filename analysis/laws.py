"""Law forms: parametric curves of a metric against a cell's variables.

Every law here is *separable*: it is linear in some parameters (the offset ``E``
and the amplitudes) once the remaining, nonlinear parameters (the exponents) are
fixed,

    L(x) = sum_k lin_k * basis_k(x; nonlin),

which is what lets the fitter screen the exponents on a dense grid and solve the
linear parameters by non-negative least squares (variable projection) before
refining all of them together. All parameters are positive; the fitter works on
their logarithms. A new law (curation-aware, two-variable) is one more `Law`
record with its basis and the derivative of the basis with respect to the
nonlinear parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike

from analysis.errors import AnalysisError

D_REF: float = 1e6
"""Reference token count (tokens). Laws in D are written in ``D / D_REF`` so that the
amplitude ``B`` is the excess loss at one million tokens and stays O(1), which keeps
the fit well conditioned whatever the token range."""

BasisFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(x (n, k), nonlinear (q,)) -> basis (n, m)``."""
BasisGradFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(x (n, k), nonlinear (q,)) -> d basis / d nonlinear (n, m, q)``."""


@dataclass(frozen=True, kw_only=True)
class Law:
    """A separable parametric law ``L(x) = basis(x; nonlinear) @ linear``.

    Parameters are ordered ``linear_params + nonlinear_params`` everywhere a
    vector of them appears.
    """

    name: str
    """Registry key, e.g. ``"power_law_D"``."""
    formula: str
    """Human-readable formula, with units of every variable."""
    variables: tuple[str, ...]
    """Symbols of the law's variables, e.g. ``("D",)``."""
    columns: tuple[str, ...]
    """Results-table column holding each variable, e.g. ``("train_tokens",)``."""
    linear_params: tuple[str, ...]
    """Parameters the law is linear in, the offset first."""
    nonlinear_params: tuple[str, ...]
    """Exponents and other parameters entering the basis."""
    bounds: Mapping[str, tuple[float, float]]
    """Positive ``(lower, upper)`` per parameter, in the parameter's own units."""
    basis: BasisFn
    basis_grad: BasisGradFn
    offset_param: str
    """The linear parameter whose basis column is the constant 1 (the irreducible loss)."""
    references: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.variables) != len(self.columns):
            raise AnalysisError(f"law {self.name!r}: variables and columns differ in length")
        if set(self.bounds) != set(self.param_names):
            raise AnalysisError(f"law {self.name!r}: bounds must name exactly {self.param_names}")
        for p, (lo, hi) in self.bounds.items():
            if not 0.0 < lo < hi:
                raise AnalysisError(f"law {self.name!r}: bounds of {p!r} must be 0 < lo < hi")
        if self.offset_param not in self.linear_params:
            raise AnalysisError(f"law {self.name!r}: offset_param must be a linear parameter")

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.linear_params + self.nonlinear_params

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def design(self, x: ArrayLike) -> np.ndarray:
        """Return ``x`` as a float array of shape ``(n, len(variables))``."""
        arr = np.asarray(x, dtype=float)
        k = len(self.variables)
        if arr.ndim == 1 and k == 1:
            return arr[:, None]
        if arr.ndim == 2 and arr.shape[1] == k:
            return arr
        raise AnalysisError(
            f"law {self.name!r} takes {k} variable(s) {self.variables}; got an array of "
            f"shape {arr.shape}"
        )

    def theta(self, params: Mapping[str, float]) -> np.ndarray:
        """Parameter vector ``(p,)`` in ``param_names`` order."""
        return np.array([float(params[p]) for p in self.param_names])

    def params_dict(self, theta: ArrayLike) -> dict[str, float]:
        return {p: float(v) for p, v in zip(self.param_names, np.asarray(theta), strict=True)}

    def evaluate(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``L(x)`` for a design ``x (n, k)`` and a parameter vector ``theta (p,)``."""
        m = len(self.linear_params)
        return self.basis(x, theta[m:]) @ theta[:m]

    def evaluate_grad(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``dL/dtheta``, shape ``(n, p)``."""
        m = len(self.linear_params)
        lin, nonlin = theta[:m], theta[m:]
        d_lin = self.basis(x, nonlin)  # (n, m)
        d_nonlin = np.einsum("nmq,m->nq", self.basis_grad(x, nonlin), lin)  # (n, q)
        return np.concatenate([d_lin, d_nonlin], axis=1)

    def predict(self, x: ArrayLike, params: Mapping[str, float]) -> np.ndarray:
        """``L(x)`` for the parameters named in ``params``; shape ``(n,)``."""
        return self.evaluate(self.design(x), self.theta(params))


def power_law_d(D: ArrayLike, *, E: float, B: float, beta: float) -> np.ndarray:
    """Power law in training tokens, ``L(D) = E + B * (D / D_REF) ** -beta``.

    Parameters
    ----------
    D : array_like
        Training tokens of the anneal (tokens).
    E : float
        Irreducible loss, in the metric's units (bits per byte).
    B : float
        Reducible loss at ``D = D_REF`` (one million tokens), in the metric's units.
    beta : float
        Data exponent (dimensionless).

    Returns
    -------
    numpy.ndarray
        The metric predicted at each ``D``.

    Notes
    -----
    This is the data term of the Chinchilla law, ``E + B / D**beta``, with ``D``
    measured in units of ``D_REF``: ``B_here = B_chinchilla * D_REF**-beta``.

    References
    ----------
    .. [1] Kaplan et al. 2020, "Scaling Laws for Neural Language Models", eq. 1.5.
    .. [2] Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models",
       eq. 2 and appendix D.2 (Huber loss on log loss, L-BFGS from a grid of starts).
    """
    z = np.asarray(D, dtype=float) / D_REF
    return E + B * np.exp(-beta * np.log(z))


def _power_law_d_basis(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    log_z = np.log(x[:, 0] / D_REF)  # (n,)
    return np.stack([np.ones_like(log_z), np.exp(-nonlin[0] * log_z)], axis=1)  # (n, 2)


def _power_law_d_basis_grad(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    log_z = np.log(x[:, 0] / D_REF)  # (n,)
    d_term = -log_z * np.exp(-nonlin[0] * log_z)
    return np.stack([np.zeros_like(log_z), d_term], axis=1)[:, :, None]  # (n, 2, 1)


POWER_LAW_D = Law(
    name="power_law_D",
    formula="L(D) = E + B * (D / 1e6)**(-beta), D = training tokens",
    variables=("D",),
    columns=("train_tokens",),
    linear_params=("E", "B"),
    nonlinear_params=("beta",),
    # beta: Kaplan et al. report ~0.1 and Hoffmann et al. ~0.28 for pre-training;
    # anneals over a narrow token range can be steeper, hence the wide upper bound.
    bounds=MappingProxyType({"E": (1e-6, 1e3), "B": (1e-9, 1e6), "beta": (1e-3, 3.0)}),
    basis=_power_law_d_basis,
    basis_grad=_power_law_d_basis_grad,
    offset_param="E",
    references=(
        "Kaplan et al. 2020, Scaling Laws for Neural Language Models",
        "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models",
    ),
)

LAWS: Mapping[str, Law] = MappingProxyType({POWER_LAW_D.name: POWER_LAW_D})
"""Built-in laws by name. Pass a `Law` object to the fitter to use one not listed here."""


def get_law(law: str | Law) -> Law:
    """Resolve a law name (or pass a `Law` through)."""
    if isinstance(law, Law):
        return law
    try:
        return LAWS[law]
    except KeyError:
        raise AnalysisError(f"unknown law {law!r}; available: {', '.join(LAWS)}") from None
