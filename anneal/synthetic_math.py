"""A programmatic generator of math documents with worked solutions (the demo's synthetic
source). Document ``i`` depends only on ``(seed, i)``, so pools bought with more spend
extend pools bought with less. The text imitates the docstring style of the math domain
(definitions, worked steps, doctest-like examples) but draws on a few templates only:
cheap and on-topic, yet far less diverse than real curated text.
"""

from __future__ import annotations

import math
import random


def generate_math_document(seed: int, index: int) -> str:
    """The ``index``-th synthetic document of generator ``seed``."""
    rng = random.Random(f"math-{seed}-{index}")
    template = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
    return template(rng)


def _poly(rng: random.Random, degree: int) -> tuple[list[int], str]:
    coeffs = [rng.randint(-9, 9) for _ in range(degree)] + [rng.randint(1, 9)]
    return _poly_from(coeffs)


def _derivative(rng: random.Random) -> str:
    degree = rng.randint(2, 4)
    coeffs, text = _poly(rng, degree)
    d = [coeffs[p] * p for p in range(1, degree + 1)]
    _, dtext = _poly_from(d)
    return (
        f"Compute the derivative of a polynomial.\n\n"
        f"Let f(x) = {text}. By the power rule, d/dx x**n = n*x**(n - 1), and\n"
        f"differentiation is linear, so each term is differentiated separately.\n\n"
        f"Examples\n========\n\n>>> diff({text}, x)\n{dtext}\n\n"
        f"The degree drops from {degree} to {degree - 1}."
    )


def _poly_from(coeffs: list[int]) -> tuple[list[int], str]:
    terms = []
    for power in range(len(coeffs) - 1, -1, -1):
        c = coeffs[power]
        if c == 0:
            continue
        body = "" if power == 0 else ("x" if power == 1 else f"x**{power}")
        terms.append(f"{c}*{body}" if body else str(c))
    return coeffs, " + ".join(terms).replace("+ -", "- ") or "0"


def _linear(rng: random.Random) -> str:
    a, x, b = rng.randint(2, 12), rng.randint(-20, 20), rng.randint(-30, 30)
    c = a * x + b
    return (
        f"Solve the linear equation {a}*x + {b} = {c} for x.\n\n"
        f"Subtract {b} from both sides: {a}*x = {c - b}.\n"
        f"Divide both sides by {a}: x = {x}.\n\n"
        f">>> solve(Eq({a}*x + {b}, {c}), x)\n[{x}]"
    )


def _quadratic(rng: random.Random) -> str:
    r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
    b, c = -(r1 + r2), r1 * r2
    disc = b * b - 4 * c
    lo, hi = sorted((r1, r2))
    return (
        f"Find the roots of x**2 + {b}*x + {c}.\n\n".replace("+ -", "- ")
        + f"The discriminant is b**2 - 4*a*c = {disc}, which is a perfect square, "
        f"so the roots are rational: x = (-b +/- sqrt({disc}))/2.\n\n"
        f">>> roots(x**2 + {b}*x + {c})\n{{{lo}: 1, {hi}: 1}}".replace("+ -", "- ")
    )


def _gcd(rng: random.Random) -> str:
    g = rng.randint(2, 30)
    a, b = g * rng.randint(2, 40), g * rng.randint(2, 40)
    steps, x, y = [], a, b
    while y:
        steps.append(f"{x} = {x // y}*{y} + {x % y}")
        x, y = y, x % y
    return (
        f"Return the greatest common divisor of {a} and {b} by the Euclidean algorithm.\n\n"
        + "\n".join(steps)
        + f"\n\nThe last non-zero remainder is {x}.\n\n>>> gcd({a}, {b})\n{math.gcd(a, b)}"
    )


def _series(rng: random.Random) -> str:
    a, d, n = rng.randint(1, 20), rng.randint(1, 9), rng.randint(5, 60)
    total = n * (2 * a + (n - 1) * d) // 2
    return (
        f"Sum an arithmetic progression.\n\nThe first term is {a}, the common difference "
        f"{d}, and there are {n} terms. The sum is n*(2*a + (n - 1)*d)/2 = "
        f"{n}*(2*{a} + {n - 1}*{d})/2 = {total}.\n\n"
        f">>> summation({a} + {d}*k, (k, 0, {n - 1}))\n{total}"
    )


def _determinant(rng: random.Random) -> str:
    a, b, c, d = (rng.randint(-9, 9) for _ in range(4))
    det = a * d - b * c
    return (
        f"Compute the determinant of a 2 x 2 matrix.\n\nFor M = Matrix([[{a}, {b}], "
        f"[{c}, {d}]]), det(M) = a*d - b*c = ({a})*({d}) - ({b})*({c}) = {det}.\n"
        f"The matrix is {'singular' if det == 0 else 'invertible'}.\n\n"
        f">>> Matrix([[{a}, {b}], [{c}, {d}]]).det()\n{det}"
    )


_TEMPLATES = (_derivative, _linear, _quadratic, _gcd, _series, _determinant)
