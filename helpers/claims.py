"""Reading the report's claims (chapter 07.5): a verdict rule, seed intervals, contamination, and the scoreboard.

**The verdict rule.** A claim names a quantity and says where it should lie. Our evidence gives an interval
[low, high] for that quantity, and :func:`verdict` compares the two:

- *magnitude* (``target``): the report's number t, with a relative tolerance τ, gives the band
  [t − τ|t|, t + τ|t|] (or the band (a, b) the report states). Our interval inside the band → **reproduced**.
- *direction* (``null``, ``side``): the claim says the quantity is above (or below) the no-effect value ν.
  If the whole interval lies on the claimed side of ν: **reproduced** when the claim has no magnitude, else
  **not at this scale** (right direction, another size). If the whole interval lies on the other side:
  **contradicted**. If the interval contains ν: **not at this scale** (our measurement cannot decide).
- a magnitude without a ν (a number computed from the report's own configuration, where scale is no excuse):
  an interval wholly outside the band → **contradicted**; partly inside → **not at this scale**.

So "not at this scale" means: at our scale, with our seeds and items, the evidence does not decide.

**Intervals** (:class:`Evidence`): an exact computation is the point [x, x]; per-seed values give the Student-t
interval x̄ ± t_{(1+level)/2, n−1} · s/√n (:func:`seed_interval`); per-item scores give the percentile bootstrap
(``helpers.evaluate.bootstrap_ci``); a spread over settings (rounding modes, domains) gives [min, max].
To resolve a gap δ with a paired per-seed standard deviation s, the standard error s/√n must reach δ/z:
n = ⌈(z·s/δ)²⌉ seeds (:func:`seeds_needed`; z = 2, as in scripts/ablations.py).

**Contamination by n-gram overlap.** A text is split into words as ``helpers.dedup.shingles`` does (after
:func:`helpers.dedup.normalize`: a word is a run of letters/digits/underscore or one punctuation mark). For an
evaluation item with m words and n_eff = min(n, m), its overlap is

    o = |{word n_eff-grams of the item that occur in some training document}| / |{word n_eff-grams of the item}|

(an item shorter than n is one n_eff-gram: found only if the whole item occurs in a training document;
n-grams never cross a document boundary). The usual rule (GPT-3) flags an item with any 13-gram in the training
data: o > 0 at n = 13 (``threshold`` = 0). :class:`NgramIndex` reads the training texts once and answers for any n.
Short items (arithmetic questions) are better checked for exact overlap (:func:`exact_overlap`).

**The scoreboard.** :class:`Claim` holds one row: the claim, its report section and number, our evidence, the
rule, and the source (result file or helpers call). :func:`scoreboard` computes every verdict at a tolerance and
an interval level and shows the table. :func:`load_result` reads a file of ``data/results`` with a clear error
when it is missing or corrupted; :func:`optional_claim` turns a missing file into a "pending" row instead.
"""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .dedup import _texts as _dedup_texts, normalize
from .evaluate import bootstrap_ci
from .report import side_by_side
from .runtime import data_dir

__all__ = ["VERDICTS", "PENDING", "ResultFileError", "results_dir", "load_result", "t_quantile", "seed_interval",
           "seeds_needed", "verdict", "map_verdict", "Evidence", "Claim", "pending", "optional_claim", "scoreboard",
           "verdict_counts", "words", "NgramIndex", "ngram_overlap", "exact_overlap", "two_sample_bootstrap"]

VERDICTS = ("reproduced", "not at this scale", "contradicted")
PENDING = "pending"
_SIDES = ("above", "below")
_KINDS = ("exact", "range", "seeds", "items", "carried")
_WORD = re.compile(r"\w+|[^\w\s]")          # the word of helpers.dedup.shingles(unit="word")


def _real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _level(level, where: str) -> None:
    if not (_real(level) and 0 < level < 1):
        raise ValueError(f"{where}: level must be in (0, 1), e.g. 0.9 for a 90% interval, got {level!r}")


# -- result files -------------------------------------------------------------------------------------------
class ResultFileError(ValueError):
    """A result file that exists but cannot be read as a JSON object."""


def results_dir() -> Path:
    """``<data>/results``: where scripts and notebooks write their result files."""
    return data_dir() / "results"


def load_result(name: str, folder: Path | str | None = None) -> dict:
    """The JSON object in ``folder``/``name`` (default folder :func:`results_dir`; ``.json`` may be left out).

    Raises ``FileNotFoundError`` naming the file and what writes it, or :class:`ResultFileError` when the file
    is not valid JSON (cut short, edited by hand) or not a JSON object."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"load_result: name must be a file name such as 'ch04_ablations.json', got {name!r}")
    folder = Path(folder) if folder is not None else results_dir()
    path = folder / (name if name.endswith(".json") else name + ".json")
    if not path.is_file():
        raise FileNotFoundError(f"result file {path} is missing: it is written by the script or notebook that "
                                "measures it (its 'command' field says which; see data/README.md); run that, or "
                                "restore the shipped file with `git checkout -- data/results`")
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultFileError(f"result file {path} is not valid JSON ({e}); it was cut short or edited: re-run the "
                              "script that writes it, or restore it with `git checkout -- data/results`") from e
    if not isinstance(out, dict):
        raise ResultFileError(f"result file {path} holds a JSON {type(out).__name__}, not an object with named "
                              "fields; re-run the script that writes it")
    return out


# -- intervals over seeds ---------------------------------------------------------------------------------
def _t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom: Simpson's rule on the density from 0 to |t|."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    x = abs(t)
    if x == 0:
        return 0.5
    k = 2000                                                   # even number of Simpson panels
    h = x / k
    s = sum((1 if i in (0, k) else 4 if i % 2 else 2) * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2)
            for i in range(k + 1))
    half = c * s * h / 3
    return 0.5 + half if t > 0 else 0.5 - half


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF; |error| < 1e-6)."""
    if not (_real(p) and 0 < p < 1):
        raise ValueError(f"t_quantile: p must be a probability in (0, 1), got {p!r}")
    if not (isinstance(df, int) and not isinstance(df, bool) and df >= 1):
        raise ValueError(f"t_quantile: df must be an int ≥ 1 (n − 1 for n seeds), got {df!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-7:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def _values(values, where: str, least: int = 1) -> list[float]:
    try:
        v = [float(x) for x in values]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: values must be a list of numbers, got {values!r}") from None
    if len(v) < least or not all(math.isfinite(x) for x in v):
        raise ValueError(f"{where}: need at least {least} finite values, got {v}")
    return v


def seed_interval(values, level: float = 0.9) -> tuple[float, float, float]:
    """(mean, low, high): x̄ ± t_{(1+level)/2, n−1} · s/√n over per-seed values (n ≥ 2)."""
    _level(level, "seed_interval")
    v = _values(values, "seed_interval", 2)
    n = len(v)
    m = sum(v) / n
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    half = t_quantile((1 + level) / 2, n - 1) * s / math.sqrt(n)
    return m, m - half, m + half


def seeds_needed(sd: float, delta: float, z: float = 2.0) -> int:
    """Seeds for the standard error sd/√n of a mean (paired) difference to reach δ/z: ⌈(z·sd/δ)²⌉, at least 2."""
    if not (_real(sd) and sd >= 0):
        raise ValueError(f"seeds_needed: sd must be a finite number ≥ 0 (the per-seed spread), got {sd!r}")
    if not (_real(delta) and delta > 0 and _real(z) and z > 0):
        raise ValueError(f"seeds_needed: delta (the gap to resolve) and z must be > 0, got {delta!r}, {z!r}")
    return max(2, math.ceil((z * sd / delta) ** 2 - 1e-9))


# -- the verdict rule ---------------------------------------------------------------------------------------
def _band(target, tol: float) -> tuple[float, float]:
    if isinstance(target, (tuple, list)):
        if len(target) != 2 or not all(_real(x) for x in target) or target[0] > target[1]:
            raise ValueError(f"verdict: a target band must be (low, high) with low ≤ high, got {target!r}")
        return float(target[0]), float(target[1])
    if not (_real(target) and target != 0):
        raise ValueError(f"verdict: target must be the report's (nonzero) number or a (low, high) band, got "
                         f"{target!r}; for a claim that a quantity is about zero, use null= and side=")
    return target - tol * abs(target), target + tol * abs(target)


def verdict(low: float, high: float, *, target=None, tol: float = 0.05, null: float | None = None,
            side: str = "above") -> str:
    """The verdict of the module docstring for our interval [low, high].

    target: the report's number (band ± ``tol`` relative) or a (low, high) band; null: the no-effect value of a
    direction claim, ``side`` "above" or "below" it. At least one of target and null."""
    if not (_real(low) and _real(high) and low <= high):
        raise ValueError(f"verdict: need finite low ≤ high, got [{low!r}, {high!r}]")
    if not (_real(tol) and tol >= 0):
        raise ValueError(f"verdict: tol must be a relative tolerance ≥ 0 (e.g. 0.05 for 5%), got {tol!r}")
    if side not in _SIDES:
        raise ValueError(f"verdict: side must be 'above' or 'below' the null value, got {side!r}")
    if target is None and null is None:
        raise ValueError("verdict: give the report's number (target=) or the no-effect value of a direction claim "
                         "(null=), or both")
    if null is not None and not _real(null):
        raise ValueError(f"verdict: null must be a finite number, got {null!r}")
    if target is not None:
        a, b = _band(target, tol)
        if a <= low and high <= b:
            return "reproduced"
    if null is not None:
        beyond = low > null if side == "above" else high < null
        against = high < null if side == "above" else low > null
        if beyond:
            return "reproduced" if target is None else "not at this scale"
        return "contradicted" if against else "not at this scale"
    return "contradicted" if (high < a or low > b) else "not at this scale"


_MAP = {"reproduced": "reproduced", "not resolved": "not at this scale", "not at this scale": "not at this scale",
        "no measurable difference": "not at this scale", "contradicted": "contradicted"}


def map_verdict(text: str) -> str:
    """A result file's own verdict word in the scoreboard's vocabulary ("not resolved" → "not at this scale")."""
    key = str(text).strip().lower()
    if key not in _MAP:
        raise ValueError(f"map_verdict: unknown verdict {text!r}; known: {sorted(_MAP)}")
    return _MAP[key]


# -- evidence and claims --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """Our measurement of a claim's quantity.

    kind "exact" (one computed value), "range" (values over settings: [min, max]), "seeds" (one value per seed:
    t interval), "items" (per-item scores: bootstrap), "carried" (a verdict the result file states by its own
    rule, in ``carried``; ``values`` are shown only)."""
    kind: str
    values: tuple
    carried: str | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Evidence: kind must be one of {_KINDS}, got {self.kind!r}")
        v = tuple(_values(self.values, f"Evidence({self.kind})", 2 if self.kind in ("seeds", "items") else 1))
        object.__setattr__(self, "values", v)
        if self.kind == "exact" and len(v) != 1:
            raise ValueError(f"Evidence: an exact value is one number, got {len(v)}; use kind='range' for several")
        if self.kind == "carried":
            object.__setattr__(self, "carried", map_verdict(self.carried))

    def interval(self, level: float = 0.9) -> tuple[float, float, float]:
        """(centre, low, high) at ``level`` (see the class docstring)."""
        v = self.values
        if self.kind in ("exact", "carried"):
            return v[0], v[0], v[0]
        if self.kind == "range":
            return sum(v) / len(v), min(v), max(v)
        if self.kind == "seeds":
            return seed_interval(v, level)
        return bootstrap_ci(v, level=level)


@dataclass(frozen=True)
class Claim:
    """One scoreboard row. ``target``/``null``/``side``: the rule of :func:`verdict`; ``scale`` and ``fmt`` print
    our number (e.g. scale 100 and fmt ".1f" for a percentage); ``note`` is appended to it; ``reason`` marks a
    pending row (no evidence yet); ``basis``: what the number was computed on ("course model", "V3 config", …)."""
    claim: str
    section: str
    report: str
    evidence: Evidence | None
    source: str
    target: object = None
    null: float | None = None
    side: str = "above"
    scale: float = 1.0
    fmt: str = ".3g"
    note: str = ""
    reason: str | None = None
    basis: str = "course model"

    def __post_init__(self):
        if self.evidence is None and self.reason is None:
            raise ValueError(f"Claim {self.claim!r}: give evidence, or a reason why it is pending")
        if self.target is not None:
            _band(self.target, 0.0)                          # a clear error now for a target that is not a number
        if self.evidence is not None and self.evidence.kind != "carried":
            if self.target is None and self.null is None:
                raise ValueError(f"Claim {self.claim!r}: say what to test: the report's number (target=) or the "
                                 "no-effect value (null=) with side=")
            if self.side not in _SIDES:
                raise ValueError(f"Claim {self.claim!r}: side must be 'above' or 'below', got {self.side!r}")

    def verdict(self, tol: float = 0.05, level: float = 0.9) -> str:
        if self.evidence is None:
            return f"{PENDING} ({self.reason})"
        if self.evidence.kind == "carried":
            return self.evidence.carried
        _, lo, hi = self.evidence.interval(level)
        return verdict(lo, hi, target=self.target, tol=tol, null=self.null, side=self.side)

    def _num(self, x: float) -> str:
        return format(x * self.scale, self.fmt)

    def test(self, tol: float = 0.05) -> str:
        """The rule in words, e.g. "> 0", "within ±5% of 671", "in [85, 90]"."""
        if self.evidence is None:
            return "—"
        if self.evidence.kind == "carried":
            return "the file's own rule"
        parts = []
        if self.target is not None:
            if isinstance(self.target, (tuple, list)):
                parts.append(f"in [{self._num(self.target[0])}, {self._num(self.target[1])}]")
            else:
                parts.append(f"within ±{tol:.0%} of {self._num(self.target)}")
        if self.null is not None:
            parts.append(f"{'>' if self.side == 'above' else '<'} {self._num(self.null)}")
        return "; ".join(parts)

    def ours(self, level: float = 0.9) -> str:
        """Our number with its interval and how it was made."""
        if self.evidence is None:
            return "—"
        e = self.evidence
        c, lo, hi = e.interval(level)
        if e.kind in ("exact", "carried"):
            txt = self._num(c) if e.kind == "exact" else ", ".join(self._num(x) for x in e.values)
        elif e.kind == "range":
            txt = f"{self._num(lo)} … {self._num(hi)} (range over {len(e.values)})"
        else:
            what = f"{len(e.values)} seeds, t" if e.kind == "seeds" else f"{len(e.values)} items, bootstrap"
            txt = f"{self._num(c)} [{self._num(lo)}, {self._num(hi)}] ({level:.0%}, {what})"
        return f"{txt}; {self.note}" if self.note else txt


def pending(claim: str, section: str, report: str, source: str, reason: str = "file missing") -> Claim:
    """A row whose evidence does not exist yet: shown with the verdict "pending (reason)"."""
    return Claim(claim, section, report, None, source, reason=reason, basis="—")


def optional_claim(name: str, build: Callable[[dict], Claim], *, claim: str, section: str, report: str,
                   folder: Path | str | None = None) -> Claim:
    """``build(load_result(name))``, or a pending row when the file is missing ("file missing") or unreadable or
    not in the expected form ("file unreadable: …"): never raises for a file that is not there yet."""
    source = f"data/results/{name}"
    try:
        data = load_result(name, folder)
    except FileNotFoundError:
        return pending(claim, section, report, source, "file missing")
    except ResultFileError as e:
        return pending(claim, section, report, source, f"file unreadable: {str(e).split(' (')[0]}")
    try:
        return build(data)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        return pending(claim, section, report, source, f"file unreadable: {type(e).__name__} {e}")


def scoreboard(claims: Sequence[Claim], tol: float = 0.05, level: float = 0.9, display: bool = True) -> list[dict]:
    """Every claim's verdict at relative tolerance ``tol`` and interval ``level``; shows the table when
    ``display``. Returns one dict per row (claim, section, report, basis, test, ours, verdict, source)."""
    if not (_real(tol) and tol >= 0):
        raise ValueError(f"scoreboard: tol must be a relative tolerance ≥ 0, got {tol!r}")
    _level(level, "scoreboard")
    rows = [{"claim": c.claim, "section": c.section, "report": c.report, "basis": c.basis, "test": c.test(tol),
             "ours": c.ours(level), "verdict": c.verdict(tol, level), "source": c.source} for c in claims]
    if display:
        side_by_side([tuple(r.values()) for r in rows],
                     columns=("claim", "§", "report", "basis", "test", "ours", "verdict", "source"))
    return rows


def verdict_counts(rows: Sequence[dict]) -> dict:
    """How many rows have each verdict (pending rows counted together as "pending")."""
    out = {v: 0 for v in (*VERDICTS, PENDING)}
    for r in rows:
        out[PENDING if r["verdict"].startswith(PENDING) else r["verdict"]] += 1
    return out


# -- contamination ----------------------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """The words of ``text`` after :func:`helpers.dedup.normalize`, as ``helpers.dedup.shingles(unit="word")``
    splits them."""
    return _WORD.findall(normalize(text))


def _texts(texts, name: str, where: str) -> list[str]:
    texts = _dedup_texts(texts, where, name)
    if not texts:
        raise ValueError(f"{where}: {name} is empty")
    return texts


_B = np.uint64(1_000_003)
_UNSEEN = 2 ** 40


def _window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Hashes of every length-n window of ``ids`` (int64, −1 = document boundary) that holds no boundary."""
    if ids.size < n:
        return np.zeros(0, dtype=np.uint64)
    m = ids.size - n + 1
    sep = np.concatenate([[0], np.cumsum(ids < 0)])
    ok = (sep[n:n + m] - sep[:m]) == 0
    u = (ids + 2).astype(np.uint64)
    h = np.full(m, np.uint64(n), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):                                   # h = ((n·B + u_0)·B + u_1)·B + … (mod 2^64)
            h *= _B
            h += u[j:j + m]
    return h[ok]


class NgramIndex:
    """The word n-grams of a training corpus, for the overlap of evaluation items (module docstring).

    The texts are split into words once; the n-gram set for each n is built on first use and kept."""

    def __init__(self, train_texts):
        texts = _texts(train_texts, "train_texts", "NgramIndex")
        self.vocab: dict[str, int] = {}
        ids: list[int] = []
        for t in texts:
            ids.extend(self.vocab.setdefault(w, len(self.vocab)) for w in words(t))
            ids.append(-1)
        self.ids = np.array(ids, dtype=np.int64)
        self.n_docs, self.n_words = len(texts), len(ids) - len(texts)
        self._sets: dict[int, np.ndarray] = {}

    def _set(self, n: int) -> np.ndarray:
        if n not in self._sets:
            h = _window_hashes(self.ids, n)
            h.sort()                                         # sorted (repeats kept): searchsorted finds members
            self._sets[n] = h
        return self._sets[n]

    def _item_ids(self, item: str) -> np.ndarray:
        # a word the training texts never use gets an id no training n-gram holds
        return np.array([self.vocab.get(w, _UNSEEN) for w in words(item)], dtype=np.int64)

    def overlap(self, items, n: int = 13) -> np.ndarray:
        """Per item, the share of its word n_eff-grams (n_eff = min(n, its length)) found in the training texts."""
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"overlap: n must be an int ≥ 1 (13 is the usual rule), got {n!r}")
        items = _texts(items, "items", "overlap")
        out = np.zeros(len(items))
        for i, item in enumerate(items):
            ids = self._item_ids(item)
            if ids.size == 0:
                raise ValueError(f"overlap: items[{i}] has no words ({item!r}); drop empty items first")
            k = min(n, ids.size)
            h = np.unique(_window_hashes(ids, k))            # distinct grams, as helpers.dedup.shingles
            known = self._set(k)
            pos = np.searchsorted(known, h).clip(max=max(known.size - 1, 0))
            out[i] = (known[pos] == h).mean() if known.size else 0.0
        return out

    def shared(self, item: str, n: int = 13) -> list[str]:
        """The distinct word n_eff-grams of ``item`` (n_eff = min(n, its length)) that occur in the training texts,
        in order of first appearance, each as its words joined by spaces."""
        w = words(item)
        if not w:
            raise ValueError(f"shared: the item has no words ({item!r})")
        k = min(n, len(w))
        grams = list(dict.fromkeys(" ".join(w[i:i + k]) for i in range(len(w) - k + 1)))
        return [g for g in grams if self.overlap([g], k)[0] == 1.0]

    def flagged(self, items, n: int = 13, threshold: float = 0.0) -> np.ndarray:
        """Items whose overlap exceeds ``threshold`` (0: any shared n-gram, the 13-gram rule)."""
        if not (_real(threshold) and 0 <= threshold < 1):
            raise ValueError(f"flagged: threshold must be in [0, 1) (0 flags any overlap), got {threshold!r}")
        return self.overlap(items, n) > threshold


def ngram_overlap(items, train_texts, n: int = 13) -> np.ndarray:
    """``NgramIndex(train_texts).overlap(items, n)`` for a one-off question."""
    return NgramIndex(train_texts).overlap(items, n)


def exact_overlap(items, train_items) -> list[bool]:
    """Per item: does its normalised text (:func:`helpers.dedup.normalize`) equal a training item's?"""
    seen = {normalize(t) for t in _texts(train_items, "train_items", "exact_overlap")}
    return [normalize(t) in seen for t in _texts(items, "items", "exact_overlap")]


def two_sample_bootstrap(a, b, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(a) − mean(b) for two *independent* groups of item scores, with a percentile-bootstrap interval that
    resamples each group separately. Returns ``{"diff", "low", "high", "real"}`` (real: the interval excludes 0)."""
    _level(level, "two_sample_bootstrap")
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"two_sample_bootstrap: n_boot must be an int ≥ 100, got {n_boot!r}")
    x = torch.tensor(_values(a, "two_sample_bootstrap (a)"), dtype=torch.float64)
    y = torch.tensor(_values(b, "two_sample_bootstrap (b)"), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    mx = x[torch.randint(len(x), (n_boot, len(x)), generator=g)].mean(1)
    my = y[torch.randint(len(y), (n_boot, len(y)), generator=g)].mean(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(mx - my, q).tolist()
    return {"diff": float(x.mean() - y.mean()), "low": lo, "high": hi, "real": bool(lo > 0 or hi < 0)}
