"""Law forms: parametric curves of a metric against a cell's variables.

Most laws here are *separable*: linear in some parameters (the offset ``E`` and
the amplitudes) once the remaining, nonlinear parameters (exponents, the
repetition half-life ``R_star``) are fixed,

    L(x) = sum_k lin_k * basis_k(x; nonlin),

which lets the fitter screen the nonlinear parameters on a dense grid and solve
the linear ones by non-negative least squares (variable projection) before
refining all of them together. A user-defined law is a plain function of the
variables and named parameters plus bounds (`user_law`); it is fitted from
quasi-random starts instead.

The fitter works on coordinates ``u`` (`Law.to_u`, `Law.to_theta`): the logarithm of
a parameter whose bounds are positive (every built-in one, so relative changes count
the same at every scale), and for a user parameter whose range reaches zero or below
the parameter affinely mapped onto ``[-1, 1]`` over its bounds. Every basis and
`Law.evaluate` accept a batch of parameter vectors, shape ``(..., p)``, so the
bootstrap fits a thousand resamples at once; a user law's finite-difference gradient
evaluates all its ``2p`` perturbed vectors in one such batched call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from annealscale.analysis.errors import AnalysisError

D_REF: float = 1e6
"""Reference token count (tokens). Laws in tokens are written in ``D / D_REF`` so that
amplitudes are excess losses at one million tokens and stay O(1), which keeps the fit
well conditioned whatever the token range."""
N_REF: float = 1e6
"""Reference model size (non-embedding parameters), for the same reason."""

BasisFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(x (n, k), nonlinear (..., q)) -> basis (..., n, m)``."""
BasisGradFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(x (n, k), nonlinear (..., q)) -> d basis / d nonlinear (..., n, m, q)``."""

_FD_STEP = 1e-6  # relative step of the central differences for user laws
_FD_LINEAR_FLOOR = 1e-3  # ... of at least this fraction of a linear-scale parameter's range
_FD_CALL_ELEMENTS = 1 << 18  # cap on the values one batched call of a user law returns: a
# bootstrap's (2p + 1, 1000, n) stack would leave the cache and run slower than p calls


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping that pickles (unlike `types.MappingProxyType`).

    Used for a law's bounds and a fit's parameters, so that fitted estimators pickle.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("FrozenMap is read-only")

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._data,))


@dataclass(frozen=True, kw_only=True)
class Law:
    """A parametric law of a metric.

    Either separable, ``L(x) = basis(x; nonlinear) @ linear`` (``basis`` and
    ``basis_grad`` given), or a plain ``function(*variables, **params)`` (see
    `user_law`). Parameters are ordered ``linear_params + nonlinear_params``
    everywhere a vector of them appears.
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
    """Parameters the law is linear in, the offset first; empty for a user law."""
    nonlinear_params: tuple[str, ...]
    """Exponents and other parameters entering the basis (every parameter of a user law)."""
    bounds: Mapping[str, tuple[float, float]]
    """Finite ``(lower, upper)`` per parameter, in the parameter's own units. Positive
    bounds put the parameter on a log scale for the fitter, others on a linear one."""
    basis: BasisFn | None = None
    basis_grad: BasisGradFn | None = None
    function: Callable[..., ArrayLike] | None = None
    """``function(*variables, **params) -> metric`` for a user law."""
    offset_param: str | None = None
    """The linear parameter whose basis column is the constant 1 (the irreducible loss)."""
    references: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.variables) != len(self.columns):
            raise AnalysisError(f"law {self.name!r}: variables and columns differ in length")
        if set(self.bounds) != set(self.param_names) or len(set(self.param_names)) != len(
            self.param_names
        ):
            raise AnalysisError(
                f"law {self.name!r}: bounds must name each of {self.param_names} once"
            )
        for p, (lo, hi) in self.bounds.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise AnalysisError(
                    f"law {self.name!r}: bounds of {p!r} must be finite with lo < hi; "
                    f"got ({lo}, {hi})"
                )
        frozen = FrozenMap({p: (float(lo), float(hi)) for p, (lo, hi) in self.bounds.items()})
        object.__setattr__(self, "bounds", frozen)
        if (self.basis is None) == (self.function is None):
            raise AnalysisError(f"law {self.name!r}: give either basis or function, not both")
        if self.basis is not None:
            if self.basis_grad is None or not self.linear_params:
                raise AnalysisError(
                    f"law {self.name!r}: a separable law needs basis_grad and linear parameters"
                )
            if self.offset_param not in self.linear_params:
                raise AnalysisError(f"law {self.name!r}: offset_param must be a linear parameter")
        elif self.linear_params:
            raise AnalysisError(f"law {self.name!r}: a function law has no linear parameters")

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A built-in law pickles by name, so that it unpickles as the registry's object.
        if LAWS.get(self.name) is self:
            return (get_law, (self.name,))
        return super().__reduce_ex__(protocol)

    @property
    def separable(self) -> bool:
        return self.basis is not None

    @property
    def log_scale(self) -> np.ndarray:
        """``(p,)`` bool: which parameters the fitter moves on a log scale (positive bounds)."""
        return np.array([self.bounds[p][0] > 0.0 for p in self.param_names])

    def u_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds ``(lower (p,), upper (p,))`` of the fitting coordinates ``u``."""
        lo = np.array([self.bounds[p][0] for p in self.param_names])
        hi = np.array([self.bounds[p][1] for p in self.param_names])
        log = self.log_scale
        return np.where(log, np.log(np.where(log, lo, 1.0)), -1.0), np.where(
            log, np.log(np.where(log, hi, 1.0)), 1.0
        )

    def to_theta(self, u: ArrayLike) -> np.ndarray:
        """Parameters ``(..., p)`` from fitting coordinates ``u (..., p)``."""
        u = np.asarray(u, dtype=float)
        theta = np.exp(u)
        log = self.log_scale
        if not log.all():
            mid, half = self._linear_map()
            theta = np.where(log, theta, mid + half * u)
        return theta

    def to_u(self, theta: ArrayLike) -> np.ndarray:
        """Fitting coordinates ``u (..., p)`` of parameters ``theta (..., p)``."""
        theta = np.asarray(theta, dtype=float)
        u = np.log(np.maximum(theta, np.finfo(float).tiny))
        log = self.log_scale
        if not log.all():
            mid, half = self._linear_map()
            u = np.where(log, u, (theta - mid) / half)
        return u

    def dtheta_du(self, theta: ArrayLike) -> np.ndarray:
        """``d theta / d u``, shape ``(..., p)``: ``theta`` on a log scale, else half the range."""
        theta = np.asarray(theta, dtype=float)
        log = self.log_scale
        if log.all():
            return theta
        _, half = self._linear_map()
        return np.where(log, theta, half)

    def _linear_map(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.bounds[p][0] for p in self.param_names])
        hi = np.array([self.bounds[p][1] for p in self.param_names])
        return 0.5 * (lo + hi), 0.5 * (hi - lo)

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
        """``L(x)`` for a design ``x (n, k)`` and parameters ``theta (..., p)``: ``(..., n)``."""
        theta = np.asarray(theta, dtype=float)
        if self.basis is None:
            return self._call(x, theta)
        m = len(self.linear_params)
        a = self.basis(x, theta[..., m:])  # (..., n, m)
        return np.einsum("...nm,...m->...n", a, theta[..., :m])

    def evaluate_grad(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``dL/dtheta``, shape ``(..., n, p)``."""
        theta = np.asarray(theta, dtype=float)
        if self.basis is None or self.basis_grad is None:
            return self._finite_difference(x, theta, with_value=False)[1]
        m = len(self.linear_params)
        lin, nonlin = theta[..., :m], theta[..., m:]
        d_lin = self.basis(x, nonlin)  # (..., n, m)
        d_nonlin = np.einsum("...nmq,...m->...nq", self.basis_grad(x, nonlin), lin)  # (..., n, q)
        return np.concatenate([d_lin, d_nonlin], axis=-1)

    def evaluate_with_grad(self, x: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``L(x)`` ``(..., n)`` and ``dL/dtheta`` ``(..., n, p)``, sharing the basis."""
        theta = np.asarray(theta, dtype=float)
        if self.basis is None or self.basis_grad is None:
            return self._finite_difference(x, theta, with_value=True)
        m = len(self.linear_params)
        lin, nonlin = theta[..., :m], theta[..., m:]
        a = self.basis(x, nonlin)  # (..., n, m)
        d_nonlin = np.einsum("...nmq,...m->...nq", self.basis_grad(x, nonlin), lin)
        pred = np.einsum("...nm,...m->...n", a, lin)
        return pred, np.concatenate([a, d_nonlin], axis=-1)

    def predict(self, x: ArrayLike, params: Mapping[str, float]) -> np.ndarray:
        """``L(x)`` for the parameters named in ``params``; shape ``(n,)``."""
        return self.evaluate(self.design(x), self.theta(params))

    def describe(self) -> dict[str, object]:
        """JSON-ready description."""
        return {
            "name": self.name,
            "formula": self.formula,
            "params": list(self.param_names),
            "variables": dict(zip(self.variables, self.columns, strict=True)),
            "bounds": {p: list(b) for p, b in self.bounds.items()},
            "references": list(self.references),
        }

    def _call(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        assert self.function is not None
        batch = theta.shape[:-1]
        n = x.shape[0]
        cols = [x[:, j] for j in range(x.shape[1])]
        params = {p: theta[..., j, None] for j, p in enumerate(self.param_names)}  # (..., 1)
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(self.function(*cols, **params), dtype=float)
            return np.broadcast_to(out, (*batch, n)).copy()
        except (ValueError, TypeError):
            pass  # not written for broadcasting: one call per parameter vector
        flat = theta.reshape(-1, theta.shape[-1])
        rows = []
        for t in flat:
            with np.errstate(all="ignore"):
                out = self.function(*cols, **self.params_dict(t))
            rows.append(np.broadcast_to(np.asarray(out, dtype=float), (n,)))
        return np.stack(rows).reshape(*batch, n)

    def _finite_difference(
        self, x: np.ndarray, theta: np.ndarray, *, with_value: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Central differences in every parameter from ONE batched evaluation.

        The ``2p`` perturbed vectors (and ``theta`` itself when ``with_value``) are
        stacked on a leading axis, so a broadcasting function is called once, not
        ``2p`` times (in a few calls for a large batch, see ``_FD_CALL_ELEMENTS``).
        Returns ``(L(x) (..., n) or empty, dL/dtheta (..., n, p))``.
        """
        p = theta.shape[-1]
        h = self._fd_steps(theta)  # (..., p)
        eye = np.eye(p).reshape(p, *([1] * (theta.ndim - 1)), p)  # (p, ..., p)
        shift = eye * h  # (p, ..., p): row j moves parameter j by h_j
        parts = [theta + shift, theta - shift]
        if with_value:
            parts.append(theta[None])
        stacked = np.concatenate(parts)  # (2p [+1], ..., p)
        per_set = max(1, math.prod(theta.shape[:-1]) * x.shape[0])
        step = max(1, _FD_CALL_ELEMENTS // per_set)
        values = np.concatenate(
            [self.evaluate(x, stacked[i : i + step]) for i in range(0, len(stacked), step)]
        )  # (2p [+1], ..., n)
        h_j = np.moveaxis(h, -1, 0)[..., None]  # (p, ..., 1)
        diff = (values[:p] - values[p : 2 * p]) / (2.0 * h_j)  # (p, ..., n)
        grad = np.ascontiguousarray(np.moveaxis(diff, 0, -1))  # (..., n, p), as callers matmul it
        value = values[2 * p] if with_value else np.empty(0)
        return value, grad

    def _fd_steps(self, theta: np.ndarray) -> np.ndarray:
        """Step per parameter ``(..., p)``: relative, floored on a linear-scale parameter's range."""
        floor = np.full(theta.shape[-1], 1e-12)
        log = self.log_scale
        if not log.all():
            _, half = self._linear_map()
            floor = np.where(log, floor, _FD_LINEAR_FLOOR * 2.0 * half)
        return _FD_STEP * np.maximum(np.abs(theta), floor)


def user_law(
    function: Callable[..., ArrayLike],
    *,
    name: str,
    variables: tuple[str, ...],
    columns: tuple[str, ...],
    bounds: Mapping[str, tuple[float, float]],
    formula: str | None = None,
    references: tuple[str, ...] = (),
) -> Law:
    """A law from a plain function and parameter bounds.

    Parameters
    ----------
    function : callable
        ``function(*variables, **params) -> metric``, e.g. `power_law_d`. Written
        with numpy broadcasting it is evaluated for many parameter vectors at once
        (parameters arrive with shape ``(..., 1)``, variables with shape ``(n,)``);
        otherwise it is called once per vector.
    name : str
    variables : tuple of str
        Symbols of the positional arguments, e.g. ``("D",)``.
    columns : tuple of str
        Results-table column of each variable, e.g. ``("train_tokens",)``.
    bounds : mapping of str to (float, float)
        Finite ``(lower, upper)``, ``lower < upper``, for every keyword parameter; the
        order of the mapping is the parameter order. A parameter with positive bounds
        is fitted on a log scale, any other (e.g. ``(-5, 5)``) on a linear scale.
    formula : str, optional
        Shown in reports; defaults to the function's name.
    """
    return Law(
        name=name,
        formula=formula or f"{getattr(function, '__name__', 'f')}({', '.join(variables)})",
        variables=tuple(variables),
        columns=tuple(columns),
        linear_params=(),
        nonlinear_params=tuple(bounds),
        bounds=dict(bounds),
        function=function,
        references=tuple(references),
    )


# --- power law in training tokens --------------------------------------------------------


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


def _power(log_z: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``exp(-exponent * log_z)`` for ``log_z (n,)`` and ``exponent (..., 1)``: ``(..., n)``."""
    return np.exp(-exponent * log_z)


def _power_law_d_basis(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    log_z = np.log(x[:, 0] / D_REF)  # (n,)
    term = _power(log_z, nonlin[..., 0:1])  # (..., n)
    return np.stack([np.ones_like(term), term], axis=-1)  # (..., n, 2)


def _power_law_d_basis_grad(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    log_z = np.log(x[:, 0] / D_REF)  # (n,)
    d_term = -log_z * _power(log_z, nonlin[..., 0:1])  # (..., n)
    return np.stack([np.zeros_like(d_term), d_term], axis=-1)[..., None]  # (..., n, 2, 1)


POWER_LAW_D = Law(
    name="power_law_D",
    formula="L(D) = E + B * (D / 1e6)**(-beta), D = training tokens",
    variables=("D",),
    columns=("train_tokens",),
    linear_params=("E", "B"),
    nonlinear_params=("beta",),
    # beta: Kaplan et al. report ~0.1 and Hoffmann et al. ~0.28 for pre-training;
    # anneals over a narrow token range can be steeper, hence the wide upper bound.
    bounds=FrozenMap({"E": (1e-6, 1e3), "B": (1e-9, 1e6), "beta": (1e-3, 3.0)}),
    basis=_power_law_d_basis,
    basis_grad=_power_law_d_basis_grad,
    offset_param="E",
    references=(
        "Kaplan et al. 2020, Scaling Laws for Neural Language Models",
        "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models",
    ),
)


# --- effective data under repetition (Muennighoff et al. 2023) ----------------------------


def effective_tokens(
    domain_tokens: ArrayLike, unique_tokens: ArrayLike, r_star: ArrayLike
) -> np.ndarray:
    """Effective domain data under repetition, ``D' = U_D + U_D * R* * (1 - exp(-R / R*))``.

    Parameters
    ----------
    domain_tokens : array_like
        Domain tokens the anneal consumed, ``r * D`` (tokens).
    unique_tokens : array_like
        Tokens in the curated pool, ``U(c)`` (tokens).
    r_star : array_like
        Repetitions after which repeated data is worth ``1 - 1/e`` of its
        value (dimensionless); Muennighoff et al. fit 15.4.

    Returns
    -------
    numpy.ndarray
        ``D'`` (tokens). ``U_D = min(r D, U)`` tokens are seen once and
        ``R = max(r D / U - 1, 0)`` are the repeats beyond the first epoch, so
        ``D' = r D`` while the pool is not exhausted.

    References
    ----------
    .. [1] Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", eq. 5.
    """
    dd = np.asarray(domain_tokens, dtype=float)
    u = np.asarray(unique_tokens, dtype=float)
    rs = np.asarray(r_star, dtype=float)
    repeats = np.maximum(dd / u - 1.0, 0.0)
    return np.minimum(dd, u) + u * rs * -np.expm1(-repeats / rs)


def _effective_and_grad(x: np.ndarray, r_star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``D'`` and ``dD'/dR*`` for ``x = (domain tokens, unique tokens)`` and ``r_star (..., 1)``."""
    dd, u = x[:, 0], x[:, 1]  # (n,)
    repeats = np.maximum(dd / u - 1.0, 0.0)  # (n,)
    e = np.exp(-repeats / r_star)  # (..., n)
    d_eff = np.minimum(dd, u) + u * r_star * (1.0 - e)
    d_d_eff = u * ((1.0 - e) - (repeats / r_star) * e)
    return d_eff, d_d_eff


def effective_data_law(
    domain_tokens: ArrayLike,
    unique_tokens: ArrayLike,
    *,
    E: float,
    B: float,
    beta: float,
    R_star: float,
    kappa: float = 0.0,
) -> np.ndarray:
    """Curation-aware law, ``L = E + B * (D' / D_REF)**-beta * (U / D_REF)**kappa``.

    ``D'`` is `effective_tokens` of the domain tokens ``r D`` over the pool of
    ``U(c)`` unique tokens bought with curation spend ``c``. ``kappa`` is the
    optional quality term: with ``kappa > 0`` a larger pool of the same source is
    worth less per token (a looser filter threshold, a generator repeating itself).
    ``kappa = 0`` drops it.
    """
    d_eff = effective_tokens(domain_tokens, unique_tokens, R_star)
    u = np.asarray(unique_tokens, dtype=float)
    return E + B * (d_eff / D_REF) ** (-beta) * (u / D_REF) ** kappa


def _effective_basis(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    beta, r_star = nonlin[..., 0:1], nonlin[..., 1:2]
    d_eff, _ = _effective_and_grad(x, r_star)
    term = np.exp(-beta * np.log(d_eff / D_REF))  # (..., n)
    if nonlin.shape[-1] > 2:
        term = term * np.exp(nonlin[..., 2:3] * np.log(x[:, 1] / D_REF))
    return np.stack([np.ones_like(term), term], axis=-1)  # (..., n, 2)


def _effective_basis_grad(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    beta, r_star = nonlin[..., 0:1], nonlin[..., 1:2]
    d_eff, d_d_eff = _effective_and_grad(x, r_star)
    term = np.exp(-beta * np.log(d_eff / D_REF))  # (..., n)
    log_u = np.log(x[:, 1] / D_REF)  # (n,)
    if nonlin.shape[-1] > 2:
        term = term * np.exp(nonlin[..., 2:3] * log_u)
    grads = [-np.log(d_eff / D_REF) * term, -beta * term / d_eff * d_d_eff]
    if nonlin.shape[-1] > 2:
        grads.append(log_u * term)
    d_term = np.stack(grads, axis=-1)  # (..., n, q)
    return np.stack([np.zeros_like(d_term), d_term], axis=-2)  # (..., n, 2, q)


_EFFECTIVE_REFS = (
    "Muennighoff et al. 2023, Scaling Data-Constrained Language Models",
    "Ostapenko et al. 2025, Using Scaling Laws for Data Source Utility Estimation in "
    "Domain-Specific Pre-Training",
)
_R_STAR_BOUNDS = (0.1, 1e3)  # Muennighoff et al. fit 15.4 for pre-training

EFFECTIVE_DATA = Law(
    name="effective_data",
    formula="L = E + B * (D'/1e6)**(-beta), D' = U_D + U_D*R_star*(1 - exp(-R/R_star)); "
    "U_D = min(rD, U), R = max(rD/U - 1, 0); rD = domain tokens, U = unique tokens of the "
    "pool bought with curation spend c",
    variables=("rD", "U"),
    columns=("domain_tokens", "unique_tokens"),
    linear_params=("E", "B"),
    nonlinear_params=("beta", "R_star"),
    bounds=FrozenMap(
        {"E": (1e-6, 1e3), "B": (1e-9, 1e6), "beta": (1e-3, 3.0), "R_star": _R_STAR_BOUNDS}
    ),
    basis=_effective_basis,
    basis_grad=_effective_basis_grad,
    offset_param="E",
    references=_EFFECTIVE_REFS,
)

EFFECTIVE_DATA_QUALITY = Law(
    name="effective_data_quality",
    formula="L = E + B * (D'/1e6)**(-beta) * (U/1e6)**kappa, D' as in effective_data; "
    "kappa > 0: a larger pool of the source is worth less per token",
    variables=("rD", "U"),
    columns=("domain_tokens", "unique_tokens"),
    linear_params=("E", "B"),
    nonlinear_params=("beta", "R_star", "kappa"),
    bounds=FrozenMap(
        {
            "E": (1e-6, 1e3),
            "B": (1e-9, 1e6),
            "beta": (1e-3, 3.0),
            "R_star": _R_STAR_BOUNDS,
            "kappa": (1e-4, 2.0),
        }
    ),
    basis=_effective_basis,
    basis_grad=_effective_basis_grad,
    offset_param="E",
    references=_EFFECTIVE_REFS,
)


# --- model size and data ------------------------------------------------------------------


def chinchilla_law(
    N: ArrayLike, D: ArrayLike, *, E: float, A: float, B: float, alpha: float, beta: float
) -> np.ndarray:
    """Two-variable law ``L(N, D) = E + A (N / N_REF)**-alpha + B (D / D_REF)**-beta``.

    References
    ----------
    .. [1] Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", eq. 2.
    """
    n = np.asarray(N, dtype=float) / N_REF
    d = np.asarray(D, dtype=float) / D_REF
    return E + A * n ** (-alpha) + B * d ** (-beta)


def _two_variable_basis(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    n_term = _power(np.log(x[:, 0] / N_REF), nonlin[..., 0:1])  # (..., n)
    d_term = _power(np.log(x[:, 1] / D_REF), nonlin[..., 1:2])
    return np.stack([np.ones_like(n_term), n_term, d_term], axis=-1)  # (..., n, 3)


def _two_variable_basis_grad(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    log_n, log_d = np.log(x[:, 0] / N_REF), np.log(x[:, 1] / D_REF)
    dn = -log_n * _power(log_n, nonlin[..., 0:1])  # (..., n)
    dd = -log_d * _power(log_d, nonlin[..., 1:2])
    zero = np.zeros_like(dn)
    rows = [np.stack([zero, zero], -1), np.stack([dn, zero], -1), np.stack([zero, dd], -1)]
    return np.stack(rows, axis=-2)  # (..., n, 3, 2)


TWO_VARIABLE = Law(
    name="two_variable",
    formula="L(N, D) = E + A*(N/1e6)**(-alpha) + B*(D/1e6)**(-beta); N = non-embedding "
    "parameters, D = training tokens",
    variables=("N", "D"),
    columns=("model_params", "train_tokens"),
    linear_params=("E", "A", "B"),
    nonlinear_params=("alpha", "beta"),
    bounds=FrozenMap(
        {
            "E": (1e-6, 1e3),
            "A": (1e-9, 1e6),
            "B": (1e-9, 1e6),
            "alpha": (1e-3, 3.0),
            "beta": (1e-3, 3.0),
        }
    ),
    basis=_two_variable_basis,
    basis_grad=_two_variable_basis_grad,
    offset_param="E",
    references=("Hoffmann et al. 2022, Training Compute-Optimal Large Language Models",),
)


def _data_constrained_basis(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    n_term = _power(np.log(x[:, 0] / N_REF), nonlin[..., 0:1])
    d_eff, _ = _effective_and_grad(x[:, 1:3], nonlin[..., 2:3])
    d_term = np.exp(-nonlin[..., 1:2] * np.log(d_eff / D_REF))
    return np.stack([np.ones_like(n_term), n_term, d_term], axis=-1)  # (..., n, 3)


def _data_constrained_basis_grad(x: np.ndarray, nonlin: np.ndarray) -> np.ndarray:
    alpha, beta, r_star = nonlin[..., 0:1], nonlin[..., 1:2], nonlin[..., 2:3]
    log_n = np.log(x[:, 0] / N_REF)
    n_term = _power(log_n, alpha)
    d_eff, d_d_eff = _effective_and_grad(x[:, 1:3], r_star)
    d_term = np.exp(-beta * np.log(d_eff / D_REF))
    zero = np.zeros_like(n_term)
    rows = [
        np.stack([zero, zero, zero], -1),
        np.stack([-log_n * n_term, zero, zero], -1),
        np.stack([zero, -np.log(d_eff / D_REF) * d_term, -beta * d_term / d_eff * d_d_eff], -1),
    ]
    return np.stack(rows, axis=-2)  # (..., n, 3, 3)


DATA_CONSTRAINED = Law(
    name="data_constrained",
    formula="L(N, D') = E + A*(N/1e6)**(-alpha) + B*(D'/1e6)**(-beta), D' the effective "
    "domain data of effective_data; N = non-embedding parameters (R_N = 0: the model is "
    "not larger than compute-optimal for the pool)",
    variables=("N", "rD", "U"),
    columns=("model_params", "domain_tokens", "unique_tokens"),
    linear_params=("E", "A", "B"),
    nonlinear_params=("alpha", "beta", "R_star"),
    bounds=FrozenMap(
        {
            "E": (1e-6, 1e3),
            "A": (1e-9, 1e6),
            "B": (1e-9, 1e6),
            "alpha": (1e-3, 3.0),
            "beta": (1e-3, 3.0),
            "R_star": _R_STAR_BOUNDS,
        }
    ),
    basis=_data_constrained_basis,
    basis_grad=_data_constrained_basis_grad,
    offset_param="E",
    references=("Muennighoff et al. 2023, Scaling Data-Constrained Language Models",),
)

LAWS: Mapping[str, Law] = MappingProxyType(
    {
        law.name: law
        for law in (
            POWER_LAW_D,
            EFFECTIVE_DATA,
            EFFECTIVE_DATA_QUALITY,
            TWO_VARIABLE,
            DATA_CONSTRAINED,
        )
    }
)
"""Built-in laws by name. Pass a `Law` (e.g. from `user_law`) to use one not listed here."""

DEFAULT_CANDIDATES: tuple[str, ...] = tuple(LAWS)
"""Laws `analyze` compares by held-out error, simplest first; those whose columns the
table lacks (or whose variables do not vary) are skipped with a note."""


def get_law(law: str | Law) -> Law:
    """Resolve a law name (or pass a `Law` through)."""
    if isinstance(law, Law):
        return law
    try:
        return LAWS[law]
    except KeyError:
        raise AnalysisError(f"unknown law {law!r}; available: {', '.join(LAWS)}") from None
